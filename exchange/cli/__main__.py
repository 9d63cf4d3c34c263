"""`python -m exchange.cli`: the `medledger` command."""

import sys

from exchange.cli.main import main

sys.exit(main())
