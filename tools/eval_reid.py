#!/usr/bin/env python
"""`python tools/eval_reid.py ...` is `reid-eval ...`:
the command is reid_srdl/cli/eval_reid.py.

Kept as a script for checkouts and torchrun; the package must be installed (pip install -e .).
"""

import sys

from reid_srdl.cli import eval_reid as command

if __name__ == "__main__":
    sys.exit(command.main())
# Imported (the tests put tools/ on sys.path): the command's names are this module's, and
# `import eval_reid` gives the command's module itself, so that patching a name reaches its main.
globals().update({name: value for name, value in vars(command).items() if not name.startswith("__")})
sys.modules[__name__] = command
