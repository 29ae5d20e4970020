"""Run directories and checkpoints, written atomically (temp file, then rename).

A run directory holds::

    config.yaml       the resolved config
    last.pt           full training state after the last complete epoch (for --resume)
    final.pt          the deployed network (spec + weights): what KD teachers, the search
                      API and tools/eval_reid.py load (reid_srdl.models.load_model_file)
    stage1.pt, stage1_logits.pt   SRDL: the stage-1 network and its per-sample logits
    metrics.jsonl     one JSON line per epoch;  metrics.json: final results

Every file here holds plain data only (tensors, dicts, lists, str, numbers, None), checked
when it is saved, and is read with PyTorch's safe unpickler: a checkpoint cannot run code
(see reid_srdl.core.torch_files; tools/convert_checkpoint.py converts a legacy file without running it).
Run folders are claimed with ``os.mkdir``, which fails if the folder exists, so two runs
started in the same second never share one (:func:`create_run_dir`).
"""

import os
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.file_schemas import MODEL_FILE
from reid_srdl.core.files import atomic_path, describe_os_error
from reid_srdl.core.schema import check
from reid_srdl.core.torch_files import load_torch_file, plain_data

MODEL_FORMAT = "reid_srdl.model/1"
TRAIN_STATE_FORMAT = "reid_srdl.train_state/1"
CONFIG_FILE = "config.yaml"
LAST_FILE = "last.pt"
FINAL_FILE = "final.pt"


class CheckpointError(ReidSrdlError, ValueError):
    """A checkpoint or run directory is missing, of another kind, or does not fit."""


def atomic_save(obj: Any, path: str) -> None:
    """torch.save plain data to a temp file in the same folder, fsync, then rename over `path`.

    A run killed at any moment leaves either the old file or the new one, never half of one.
    ``obj`` is checked (NumPy scalars made Python numbers) so that the file loads with the
    safe unpickler; anything else is a TypeError before a byte is written.
    """
    obj = plain_data(obj, os.path.basename(path))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())


def load_plain_file(path: str, what: str) -> Any:
    """A file written by :func:`atomic_save`, read with the safe unpickler (one-line errors)."""
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise CheckpointError(f"{what} {path} is a folder, not a file")
        raise CheckpointError(f"{what} not found: {path}")
    return load_torch_file(path, what)


def _load(path: str, what: str) -> Dict[str, Any]:
    obj = load_plain_file(path, what)
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


def read_model_file(path: str) -> Dict[str, Any]:
    """The plain contents of a file written by :func:`save_model_file` (or the final.pt of a run
    directory): ``{"spec", "state_dict", "meta", ...}``, read with the safe unpickler.
    Building the network from its spec is the models layer's job (reid_srdl.models.load_model_file)."""
    path = resolve_model_file(path)
    obj = _load(path, "model file")
    if obj.get("format") != MODEL_FORMAT:
        hint = " (this is a training state; use the run's final.pt)" if obj.get("format") == TRAIN_STATE_FORMAT else ""
        raise CheckpointError(f"{path} is not a reid_srdl model file{hint}")
    # Every field typed and bounded before anything is built from it.
    checked = check(obj, MODEL_FILE, f"model file {path}:")
    # The state dict as saved (an OrderedDict with the version _metadata load_state_dict reads).
    return dict(checked, state_dict=obj["state_dict"], meta=checked.get("meta", {}), path=path)


def state_dict_problems(own: Dict[str, Tuple[int, ...]], state: Dict[str, torch.Tensor]) -> str:
    """What keeps ``state`` from filling a network whose state dict has the shapes ``own``:
    the first mismatching shapes, missing and unexpected keys ('' when it fits)."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k])}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k])
    ]
    parts = []
    if shapes:
        parts.append("shape mismatch " + "; ".join(shapes[:3]))
    if missing:
        parts.append(f"missing keys {missing[:3]}")
    if unexpected:
        parts.append(f"unexpected keys {unexpected[:3]}")
    return "; ".join(parts)


def load_state_dict_checked(module: nn.Module, state: Dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with an error that names the first mismatching keys and shapes."""
    problems = state_dict_problems({k: tuple(v.shape) for k, v in module.state_dict().items()}, state)
    if problems:
        raise CheckpointError(f"weights in {source} do not fit {type(module).__name__}: {problems}")
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
    missing = [k for k in ("epoch", "trainable", "method") if k not in state]
    if missing:
        raise CheckpointError(f"{path} is an incomplete training state (no {', '.join(missing)})")
    return state


def verify_run_files(run_dir: str) -> None:
    """Read every ``.pt`` file of a run folder with the safe loader, before a resume trains.

    A file that would need the unsafe unpickler (or that is corrupt) stops the resume with
    one line now, not after hours of training when e.g. SRDL's ensemble loads stage1.pt.
    """
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name)
        if name.endswith(".pt") and os.path.isfile(path):
            load_plain_file(path, f"run file {name} of")


def _missing_parents(path: str) -> List[str]:
    """The folders above ``path`` that do not exist yet, top first."""
    missing, probe = [], os.path.dirname(os.path.abspath(path))
    while probe and not os.path.exists(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return missing[::-1]


class RunDirClaim:
    """A run folder this process created (and the parents it created for it).

    :meth:`release` removes them again while they are still empty: a run that stops before
    writing anything leaves no folder behind.
    """

    def __init__(self, path: str, created: List[str]):
        self.path, self.created = path, created

    def release(self) -> None:
        for folder in reversed(self.created):  # deepest first
            try:
                os.rmdir(folder)  # only succeeds when empty
            except OSError:
                return


def create_run_dir(base: str, unique: bool = True) -> RunDirClaim:
    """Create the run folder ``base`` atomically (``os.mkdir``), or ``base_2``, ``base_3``...
    when it is taken and ``unique`` (the default, timestamped names).

    With ``unique=False`` (a name the user chose) an existing folder is reused, as long as it
    holds no training state yet (a run that stopped before its first epoch).  A folder that
    cannot be created is a :class:`CheckpointError` naming it.
    """
    base = os.path.normpath(base)
    parents = _missing_parents(base)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
    except OSError as e:
        RunDirClaim(base, parents).release()
        raise CheckpointError(
            f"cannot create the run folder {base} (train.output_dir): {describe_os_error(e)}"
        ) from None
    candidate: Optional[str] = base
    suffix = 1
    while True:
        try:
            os.mkdir(candidate)
            return RunDirClaim(candidate, parents + [candidate])
        except FileExistsError:
            if not unique:
                if os.path.isfile(os.path.join(candidate, LAST_FILE)):
                    raise CheckpointError(
                        f"{candidate} already holds a run; continue it with --resume {candidate} "
                        f"or pick another train.run_name"
                    ) from None
                if not os.path.isdir(candidate):
                    raise CheckpointError(
                        f"cannot create the run folder {candidate}: a file of that name exists"
                    ) from None
                return RunDirClaim(candidate, parents)
            suffix += 1
            candidate = f"{base}_{suffix}"
        except OSError as e:
            RunDirClaim(base, parents).release()
            raise CheckpointError(
                f"cannot create the run folder {candidate} (train.output_dir): {describe_os_error(e)}"
            ) from None
