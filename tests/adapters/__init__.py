"""Tests of adapters/ (the traceability adapters and what intake, recall and reports read)."""
