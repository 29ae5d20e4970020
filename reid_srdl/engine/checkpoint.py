"""Run directories and checkpoints, written atomically (temp file, then rename).

A run directory holds::

    config.yaml       the resolved config
    last.pt           full training state after the last complete epoch (for --resume)
    final.pt          the deployed network (spec + weights): what KD teachers, the search
                      API and tools/eval_reid.py load
    stage1.pt, stage1_logits.pt   SRDL: the stage-1 network and its per-sample logits
    metrics.jsonl     one JSON line per epoch;  metrics.json: final results
"""
import os
from typing import Any, Dict, Tuple

import torch
import torch.nn as nn

from reid_srdl.errors import ReidSrdlError

MODEL_FORMAT = "reid_srdl.model/1"
TRAIN_STATE_FORMAT = "reid_srdl.train_state/1"
CONFIG_FILE = "config.yaml"
LAST_FILE = "last.pt"
FINAL_FILE = "final.pt"


class CheckpointError(ReidSrdlError, ValueError):
    """A checkpoint or run directory is missing, of another kind, or does not fit."""


def atomic_save(obj: Any, path: str) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over `path`.

    A run killed at any moment leaves either the old file or the new one, never half of one.
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load(path: str, what: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: say which one
        raise CheckpointError(f"cannot read {what} {path}: {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a reid_srdl {what} (not a dict)")
    return obj


def save_model_file(model: nn.Module, path: str, **meta: Any) -> None:
    """Save a deployable network: its build spec, its weights and descriptive metadata."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise CheckpointError(f"{type(model).__name__} has no .spec; cannot save it as a model file")
    atomic_save({"format": MODEL_FORMAT, "spec": dict(spec), "state_dict": model.state_dict(), "meta": meta}, path)


def resolve_model_file(path: str) -> str:
    """Accept a model file or a run directory (then its final.pt)."""
    if os.path.isdir(path):
        candidate = os.path.join(path, FINAL_FILE)
        if not os.path.isfile(candidate):
            raise CheckpointError(
                f"{path} is a folder without {FINAL_FILE}; expected a finished run directory "
                f"or a model file written by tools/train.py"
            )
        return candidate
    return path


def load_model_file(path: str) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild a network saved by :func:`save_model_file`; returns (model in eval mode, meta)."""
    from reid_srdl.models import build_model

    path = resolve_model_file(path)
    obj = _load(path, "model file")
    if obj.get("format") != MODEL_FORMAT:
        hint = " (this is a training state; use the run's final.pt)" if obj.get("format") == TRAIN_STATE_FORMAT else ""
        raise CheckpointError(f"{path} is not a reid_srdl model file{hint}")
    model = build_model(**obj["spec"])
    load_state_dict_checked(model, obj["state_dict"], path)
    model.eval()
    return model, dict(obj.get("meta", {}), spec=obj["spec"])


def load_state_dict_checked(module: nn.Module, state: Dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with an error that names the first mismatching keys and shapes."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:3]))
        if missing:
            parts.append(f"missing keys {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:3]}")
        raise CheckpointError(f"weights in {source} do not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state)


def is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


def load_train_state(run_dir: str) -> Dict[str, Any]:
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"cannot resume: {run_dir} does not exist")
    if not is_run_dir(run_dir):
        raise CheckpointError(
            f"cannot resume: {run_dir} is not a run directory (no {CONFIG_FILE}; "
            f"expected a folder written by tools/train.py)"
        )
    path = os.path.join(run_dir, LAST_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"cannot resume: {run_dir} has no {LAST_FILE} yet (the run stopped before its first epoch ended); "
            f"start it again instead"
        )
    state = _load(path, "training state")
    if state.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} is not a reid_srdl training state")
    return state
