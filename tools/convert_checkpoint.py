#!/usr/bin/env python
"""`python tools/convert_checkpoint.py ...` is `reid-convert-checkpoint ...`:
the command is reid_srdl/cli/convert_checkpoint.py.

Kept as a script for checkouts and torchrun; the package must be installed (pip install -e .).
"""

import sys

from reid_srdl.cli import convert_checkpoint as command
from reid_srdl.cli.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
else:  # imported (tools/ on sys.path, as the tests do): be the command's module itself
    sys.modules[__name__] = command
