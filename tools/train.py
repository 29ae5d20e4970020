#!/usr/bin/env python
"""`python tools/train.py ...` is `reid-train ...`:
the command is reid_srdl/cli/train.py.

Kept as a script for checkouts and torchrun; the package must be installed (pip install -e .).
"""

import sys

from reid_srdl.cli import train as command

if __name__ == "__main__":
    sys.exit(command.main())
