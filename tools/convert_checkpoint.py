#!/usr/bin/env python
"""`python tools/convert_checkpoint.py ...` is `reid-convert-checkpoint ...`:
the command is reid_srdl/cli/convert_checkpoint.py.

Kept as a script for checkouts and torchrun; the package must be installed (pip install -e .).
"""

import sys

from reid_srdl.cli import convert_checkpoint as command

if __name__ == "__main__":
    sys.exit(command.main())
