#!/usr/bin/env python
"""`python tools/export.py ...` is `reid-export ...`:
the command is reid_srdl/cli/export.py.

Kept as a script for checkouts and torchrun; the package must be installed (pip install -e .).
"""

import sys

from reid_srdl.cli import export as command

if __name__ == "__main__":
    sys.exit(command.main())
# Imported (the tests put tools/ on sys.path): the command's names are this module's, and
# `import export` gives the command's module itself, so that patching a name reaches its main.
globals().update({name: value for name, value in vars(command).items() if not name.startswith("__")})
sys.modules[__name__] = command
