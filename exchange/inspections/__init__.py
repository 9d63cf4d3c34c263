"""Inspections: "double random, one open" draws bound to a seed logged first."""
