"""The configuration of a training run, with the built-in methods, and its comparison on resume.

:func:`reid_srdl.config.load_config` sits below the methods and receives the method registry
from its caller; this module, above both, passes ``reid_srdl.methods.METHODS``, so that users
and tools call one function (also ``reid_srdl.load_config``).  A resumed run's config must be
the one its training state was written with (:func:`check_saved_config`).
"""

from typing import Any, Dict, List, Optional, Sequence

from reid_srdl import config
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.core.registry import Registry
from reid_srdl.methods import METHODS


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> config.Config:
    """Defaults < the YAML file (if any) < ``section.key=value`` overrides; the ``method``
    section's keys are those of the registered methods."""
    return config.load_config(path, overrides, methods=METHODS)


def completed_saved(saved: Dict[str, Any], methods: Registry = METHODS) -> Dict[str, Any]:
    """A config dict saved with a run, with the keys added to the schema since at their
    defaults (the dict as it is when it no longer fits the schema)."""
    try:
        return config.to_dict(config.config_from_dict(saved, methods))
    except (config.ConfigError, TypeError):
        return saved


def matches_saved(cfg: config.Config, saved: Dict[str, Any], methods: Registry = METHODS) -> bool:
    """Whether a config dict saved with a run (``to_dict`` of its config) describes ``cfg``.

    Keys added to the schema since the run was written take their defaults, so a run from an
    older version resumes as long as it set nothing differently.
    """
    try:
        return config.to_dict(config.config_from_dict(saved, methods)) == config.to_dict(cfg)
    except (config.ConfigError, TypeError):  # a key the schema no longer has, or not a mapping
        return False


def config_differences(saved: dict, current: dict) -> List[str]:
    """``key: old -> new`` for every dotted key whose value differs (or exists on one side)."""
    old, new = config.flat_dict(saved), config.flat_dict(current)
    missing = object()
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            show = lambda v: "(absent)" if v is missing else repr(v)
            diffs.append(f"{key}: {show(a)} -> {show(b)}")
    return diffs


def check_saved_config(cfg: config.Config, saved: dict, run_dir: str) -> None:
    """The config a training state was written with (if it kept one) must describe ``cfg``
    (keys added to the schema since take their defaults)."""
    saved_config = saved.get("config")
    if saved_config is not None and not matches_saved(cfg, saved_config):
        diffs = config_differences(completed_saved(saved_config), config.to_dict(cfg))
        shown = "; ".join(diffs[:5]) + (f"; ... ({len(diffs)} keys in all)" if len(diffs) > 5 else "")
        raise ckpt.CheckpointError(
            f"cannot resume {run_dir}: its {ckpt.CONFIG_FILE} differs from the config the training state "
            f"was written with (saved -> now): {shown}; restore those values or start a new run"
        )
