#!/usr/bin/env python
"""`python tools/train.py ...` = `reid-train ...`: the command lives in reid_srdl/cli/train.py (--help)."""

import sys

from reid_srdl.cli import train as command
from reid_srdl.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
else:  # imported (tools/ on sys.path, as the tests do): be the command's module itself
    sys.modules[__name__] = command
