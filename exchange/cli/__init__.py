"""The `medledger` command: the parser and exit codes (main.py, exits.py), one module per
command group, each thin over the packages."""
