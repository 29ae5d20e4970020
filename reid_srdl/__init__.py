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
    "load_config": "reid_srdl.engine.run_config",
    "Config": "reid_srdl.config",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reid_srdl' has no attribute '{name}'")
