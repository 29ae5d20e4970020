#!/usr/bin/env python
"""`python tools/eval_reid.py ...` is `reid-eval ...`:
the command is reid_srdl/cli/eval_reid.py.

Kept as a script for checkouts and torchrun; the package must be installed (pip install -e .).
"""

import sys

from reid_srdl.cli import eval_reid as command
from reid_srdl.cli.eval_reid import main

if __name__ == "__main__":
    sys.exit(main())
else:  # imported (tools/ on sys.path, as the tests do): be the command's module itself
    sys.modules[__name__] = command
