"""reid_srdl: person re-identification and image classification with self-distillation.

The public API is imported lazily so that ``import reid_srdl`` stays cheap (no torch,
faiss or torchreid until a name that needs them is used).
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "evaluate_reid": "reid_srdl.evaluation.metrics",
    "ReIDResult": "reid_srdl.evaluation.metrics",
    "ReIDSearcher": "reid_srdl.api",
    "build_model": "reid_srdl.models",
    "build_data": "reid_srdl.data",
    "Config": "reid_srdl.config",
}

__all__ = sorted(_EXPORTS) + ["__version__", "load_config"]


def load_config(path=None, overrides=()):
    """The run configuration (defaults < YAML file < ``section.key=value`` overrides), its
    ``method`` section read from the built-in method registry: one call for users and tools.

    :func:`reid_srdl.config.load_config` is the same with the registry passed explicitly
    (the config layer sits below the methods and never imports them).
    """
    from reid_srdl.config import load_config as load
    from reid_srdl.methods import METHODS

    return load(path, overrides, methods=METHODS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reid_srdl' has no attribute '{name}'")
