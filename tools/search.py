#!/usr/bin/env python
"""`python tools/search.py ...` is `reid-search ...`:
the command is reid_srdl/cli/search.py.

Kept as a script for checkouts and torchrun; the package must be installed (pip install -e .).
"""

import sys

from reid_srdl.cli import search as command

if __name__ == "__main__":
    sys.exit(command.main())
