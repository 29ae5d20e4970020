#!/usr/bin/env python
"""`python tools/serve.py ...` is `reid-serve ...`:
the command is reid_srdl/cli/serve.py.

Kept as a script for checkouts and torchrun; the package must be installed (pip install -e .).
"""

import sys

from reid_srdl.cli import serve as command

if __name__ == "__main__":
    sys.exit(command.main())
