"""Tests of ledger/, laid out as it is: one module a module, audit/ beside the rest."""
