#!/usr/bin/env python
"""`python tools/serve.py ...` = `reid-serve ...`: the command lives in reid_srdl/cli/serve.py (--help)."""

import sys

from reid_srdl.cli import serve as command
from reid_srdl.cli.serve import main

if __name__ == "__main__":
    sys.exit(main())
else:  # imported (tools/ on sys.path, as the tests do): be the command's module itself
    sys.modules[__name__] = command
