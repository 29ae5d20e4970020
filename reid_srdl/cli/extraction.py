"""The extraction options of a tool's command line, read one way by every tool.

Each tool declares its own ``--height``/``--flip``/``--precision``/... flags (their defaults
differ: ``reid-eval`` decodes with 2 workers in batches of 128); this module turns whichever
of them the tool has into :class:`~reid_srdl.inference.options.ExtractionOptions` or, where a
gallery's recorded settings are the defaults, into the keywords given on the command line.
"""

import argparse
from typing import Any, Dict

from reid_srdl.inference.options import ExtractionOptions


def given_options(args: argparse.Namespace, **fixed) -> Dict[str, Any]:
    """The extraction options on the command line that were given (flags left at None are
    not), with ``fixed`` on top."""
    given = {name: getattr(args, name) for name in ExtractionOptions.names() if getattr(args, name, None) is not None}
    return {**given, **fixed}


def extraction_options(args: argparse.Namespace, **fixed) -> ExtractionOptions:
    """The command line's extraction options (the dataclass's defaults for those not given)."""
    return ExtractionOptions(**given_options(args, **fixed))
