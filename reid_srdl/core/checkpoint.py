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
started in the same second never share one, and locked (``flock``) for as long as their
training runs, so two runs given the same ``train.run_name`` (or two ``--resume`` of one
folder) never share one either (:func:`create_run_dir`, :func:`claim_existing_run_dir`).
"""

import contextlib
import fcntl
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.file_schemas import MODEL_FILE, train_state
from reid_srdl.core.files import atomic_path, describe_os_error, new_file_mode
from reid_srdl.core.schema import SchemaError, check
from reid_srdl.core.torch_files import load_torch_file, plain_data

MODEL_FORMAT = "reid_srdl.model/1"
TRAIN_STATE_FORMAT = "reid_srdl.train_state/1"
CONFIG_FILE = "config.yaml"
LAST_FILE = "last.pt"
FINAL_FILE = "final.pt"

log = logging.getLogger(__name__)


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
            writer = _WriteErrors(f)
            try:
                torch.save(obj, writer)
            except RuntimeError:
                if writer.error is not None:
                    # torch's zip writer reports a failed write as "unexpected pos ..."; the
                    # disk's own error (no space left) is what atomic_path turns into one line.
                    raise writer.error from None
                raise
            f.flush()
            os.fsync(f.fileno())


class _WriteErrors:
    """A file object for ``torch.save`` that remembers the first OSError of a write."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self._f.flush()


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


def load_train_state(run_dir: str, total_epochs: Optional[int] = None) -> Dict[str, Any]:
    """``last.pt`` of ``run_dir``, read safely and checked against its schema
    (``file_schemas.train_state``; ``total_epochs`` bounds the epoch): a field missing, of
    another type or out of range is a :class:`CheckpointError` naming it."""
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
    try:
        check(state, train_state(total_epochs), f"cannot resume {path}:")
    except SchemaError as e:
        raise CheckpointError(str(e)) from None
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


#: The lock file of a run folder in use (``flock``-ed by the training that owns the folder;
#: removed when it ends, left unlocked -- harmless -- by a run that was killed).
LOCK_FILE = ".lock"


def _lock_holder(fd: int) -> str:
    """`` (process N)`` from a lock file's contents, or ``""``.  The holder writes its pid
    right after locking: a moment's wait covers a look that came in between."""
    for _ in range(20):
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return ""
        if text:
            return f" (process {text})" if text.isascii() and text.isdigit() else ""
        time.sleep(0.01)
    return ""


def _lock_folder(folder: str, busy_hint: str) -> Optional[int]:
    """An exclusive ``flock`` on ``folder``'s lock file, held until the descriptor returned is
    closed (or the process ends, however it ends); a :class:`CheckpointError` naming the
    folder and ``busy_hint`` if another process holds it.

    The lock file is removed by its holder when a run ends, so the file locked here is
    checked to still be the one at its path (else another process could lock a new file
    while this one holds the removed one); None where the file system has no locks.
    """
    path = os.path.join(folder, LOCK_FILE)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, new_file_mode())
        except OSError as e:
            raise CheckpointError(f"cannot use the run folder {folder}: {describe_os_error(e)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise CheckpointError(f"{folder} is in use by another training run{holder}; {busy_hint}") from None
        except OSError as e:  # ENOLCK, EOPNOTSUPP: a file system without locks
            os.close(fd)
            with contextlib.suppress(OSError):
                os.remove(path)
            log.warning("cannot lock the run folder %s (%s): two runs could share it", folder, describe_os_error(e))
            return None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)  # locked a file its holder had just removed: try the one there now


class RunDirClaim:
    """A run folder this process holds (locked), with the folders it created for it.

    While a claim is held, no other training can claim or resume the folder.  :meth:`keep`
    ends the claim and leaves the folder (a run that finished or wrote its state);
    :meth:`release` also removes the folders this claim created while they are still
    empty: a run that stops before writing anything leaves no folder behind.
    """

    def __init__(self, path: str, created: List[str], lock_fd: Optional[int] = None):
        self.path, self.created, self._lock_fd = path, created, lock_fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            # Removed while still locked: whoever opened it meanwhile sees it is gone.
            with contextlib.suppress(OSError):
                os.remove(os.path.join(self.path, LOCK_FILE))
            os.close(self._lock_fd)
            self._lock_fd = None

    def keep(self) -> None:
        self._unlock()

    def release(self) -> None:
        self._unlock()
        for folder in reversed(self.created):  # deepest first
            try:
                os.rmdir(folder)  # only succeeds when empty
            except OSError:
                return


def claim_existing_run_dir(run_dir: str) -> RunDirClaim:
    """Lock an existing run folder for ``--resume``: refused while another training holds it."""
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"cannot resume: {run_dir} does not exist")
    return RunDirClaim(run_dir, [], _lock_folder(run_dir, "wait for it to end, or stop it, before resuming"))


def create_run_dir(base: str, unique: bool = True) -> RunDirClaim:
    """Create and lock the run folder ``base`` (``os.mkdir``: atomic), or ``base_2``,
    ``base_3``... when it is taken and ``unique`` (the default, timestamped names).

    With ``unique=False`` (a name the user chose) an existing folder is reused, as long as it
    holds no training state yet (a run that stopped before its first epoch) and no other
    training holds it: two runs started together with one name get one folder and one
    error.  A folder that cannot be created is a :class:`CheckpointError` naming it.
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
            created = parents + [candidate]
        except FileExistsError:
            if unique:
                suffix += 1
                candidate = f"{base}_{suffix}"
                continue
            if not os.path.isdir(candidate):
                raise CheckpointError(f"cannot create the run folder {candidate}: a file of that name exists") from None
            created = parents
        except OSError as e:
            RunDirClaim(base, parents).release()
            raise CheckpointError(
                f"cannot create the run folder {candidate} (train.output_dir): {describe_os_error(e)}"
            ) from None
        try:
            claim = RunDirClaim(candidate, created, _lock_folder(candidate, "pick another train.run_name"))
        except CheckpointError:
            RunDirClaim(candidate, created).release()  # our own empty folders only, never its lock
            raise
        # Checked once the folder is ours: a run holding it until a moment ago may have
        # written its state.
        if os.path.isfile(os.path.join(candidate, LAST_FILE)):
            claim.release()
            raise CheckpointError(
                f"{candidate} already holds a run; continue it with --resume {candidate} or pick another train.run_name"
            )
        return claim
