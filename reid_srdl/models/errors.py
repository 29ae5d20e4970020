"""The models' error: a network cannot be built as asked (architecture, depth, head options).

It is a ``ValueError`` too, so callers that caught the plain ValueErrors these checks raised
before still catch it; the tools print it as one line with exit code 2 like every project error.
"""

from reid_srdl.core.errors import ReidSrdlError


class ModelConfigError(ReidSrdlError, ValueError):
    """The message names the architecture or option at fault and what it accepts."""
