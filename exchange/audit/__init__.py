"""Where `medledger audit` reads a log from: a database or an HTTP API (sources.py)."""
