#!/usr/bin/env python
"""`python tools/export.py ...` is `reid-export ...`:
the command is reid_srdl/cli/export.py.

Kept as a script for checkouts and torchrun; the package must be installed (pip install -e .).
"""

import sys

from reid_srdl.cli import export as command

if __name__ == "__main__":
    sys.exit(command.main())
