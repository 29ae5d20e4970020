"""The configuration of a training run, with the built-in methods.

:func:`reid_srdl.config.load_config` sits below the methods and receives the method registry
from its caller; this module, above both, passes ``reid_srdl.methods.METHODS``, so that users
and tools call one function (also ``reid_srdl.load_config``).
"""

from typing import Optional, Sequence

from reid_srdl import config
from reid_srdl.methods import METHODS


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> config.Config:
    """Defaults < the YAML file (if any) < ``section.key=value`` overrides; the ``method``
    section's keys are those of the registered methods."""
    return config.load_config(path, overrides, methods=METHODS)
