#!/usr/bin/env python
"""`python tools/make_synthetic_reid.py ...` is `reid-make-synthetic-reid ...`:
the command is reid_srdl/cli/make_synthetic_reid.py.

Kept as a script for checkouts and torchrun; the package must be installed (pip install -e .).
"""

import sys

from reid_srdl.cli import make_synthetic_reid as command

if __name__ == "__main__":
    sys.exit(command.main())
