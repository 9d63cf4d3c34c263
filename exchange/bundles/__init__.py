"""Bundles in and out: submitting one (one entry and its sealed row), reading one back,
admission of submissions in flight."""
