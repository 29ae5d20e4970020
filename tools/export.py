#!/usr/bin/env python
"""`python tools/export.py ...` = `reid-export ...`: the command lives in reid_srdl/cli/export.py (--help)."""

import sys

from reid_srdl.cli import export as command
from reid_srdl.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
else:  # imported (tools/ on sys.path, as the tests do): be the command's module itself
    sys.modules[__name__] = command
