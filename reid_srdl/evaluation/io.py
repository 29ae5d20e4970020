"""Feature files (``.npz``) and atomic output files.

A feature file holds ``features`` (N x D float32), ``pids`` (N ints), ``camids`` (N ints)
and optionally ``paths`` (N strings, the images the features came from).  It is what
``tools/eval_reid.py`` reads for query, gallery and multi-query sets, and what
``ReIDSearcher.save`` writes.  Strings are stored as a unicode array, so files load with
``allow_pickle=False`` (a feature file can never run code).

Every writer here goes through :func:`atomic_output` (reid_srdl.atomic.atomic_path): the
data is written to a temporary file beside the target and renamed over it only when
complete, so a crash or an error never leaves half a file behind; the file gets the mode
the umask gives a new file (0644 under umask 022), not mkstemp's 0600.
"""
import contextlib
import json
import os
import zipfile
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

from reid_srdl.atomic import atomic_path, temp_file_beside
from reid_srdl.atomic import write_bytes_atomic  # noqa: F401  (re-exported: plots write through it)
from reid_srdl.evaluation.metrics import EvaluationInputError, check_features, check_ids

FEATURE_KEYS = ("features", "pids", "camids")
OPTIONAL_KEYS = ("paths",)


@dataclass(frozen=True)
class FeatureSet:
    """Features with their identities, cameras and (optionally) image paths."""

    features: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    paths: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.features)


def atomic_output(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it over ``path`` if the block succeeds.

    On an exception the temporary file is removed and ``path`` is left as it was.
    ``suffix`` keeps an extension on the temporary name for writers that look at it.
    """
    return atomic_path(path, suffix)


class OutputBatch:
    """Several output files that appear together or not at all.

    :meth:`path` hands out a temporary name beside each final file; leaving the ``with``
    block normally renames them all into place, an exception removes them (and the folders
    this batch created).  Renames are per file, each atomic; they only start once every
    file has been written, so a failed run leaves none behind.
    """

    def __init__(self):
        self._pending = []  # (temporary, final)
        self._created_dirs = []

    def path(self, final: str) -> str:
        final = os.path.abspath(os.fspath(final))
        folder = os.path.dirname(final)
        missing = []
        probe = folder
        while not os.path.exists(probe):
            missing.append(probe)
            probe = os.path.dirname(probe)
        os.makedirs(folder, exist_ok=True)
        self._created_dirs.extend(reversed(missing))
        tmp = temp_file_beside(final)
        self._pending.append((tmp, final))
        return tmp

    def commit(self) -> None:
        # Every target is checked before the first rename, so that a folder standing where
        # a file goes cannot leave half the batch renamed.
        for _tmp, final in self._pending:
            if os.path.isdir(final):
                raise IsADirectoryError(f"cannot write {final}: it is a folder")
        for tmp, final in self._pending:
            os.replace(tmp, final)
        self._pending = []

    def discard(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        self._pending = []
        for folder in reversed(self._created_dirs):  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only succeeds when empty
        self._created_dirs = []

    def __enter__(self) -> "OutputBatch":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()  # no temporary file outlives a failed commit
                raise
        else:
            self.discard()


def write_json_atomic(path: str, obj) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def _as_paths(paths: Sequence, n: int, what: str) -> np.ndarray:
    arr = np.asarray([os.fspath(p) for p in paths], dtype=str)
    if arr.ndim != 1 or len(arr) != n:
        raise EvaluationInputError(f"{what}: has {len(arr)} paths but there are {n} features")
    return arr


def save_features(path: str, features, pids, camids, paths: Optional[Sequence] = None) -> None:
    """Write a feature file (see the module docstring); atomic, validated first."""
    feats = check_features(features, f"features to save in {path}")
    pids = check_ids(pids, len(feats), f"pids to save in {path}")
    camids = check_ids(camids, len(feats), f"camids to save in {path}")
    arrays = {"features": feats, "pids": pids, "camids": camids}
    if paths is not None:
        arrays["paths"] = _as_paths(paths, len(feats), f"paths to save in {path}")
    with atomic_output(path) as tmp:
        # A file object, not a name: np.savez would append ".npz" to the temporary name.
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_features(path: str) -> FeatureSet:
    """Read and check a feature file; any problem is an EvaluationInputError naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EvaluationInputError(f"feature file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in FEATURE_KEYS if k not in npz.files]
            if missing:
                raise EvaluationInputError(
                    f"{path}: missing key(s) {', '.join(missing)}; a feature file holds "
                    f"features (N x D), pids (N), camids (N) and optionally paths (N); "
                    f"found: {', '.join(npz.files) or 'nothing'}"
                )
            raw = {k: npz[k] for k in FEATURE_KEYS + OPTIONAL_KEYS if k in npz.files}
    except EvaluationInputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise EvaluationInputError(f"{path}: not a readable .npz feature file ({e})") from None
    feats = check_features(raw["features"], f"{path} key 'features'")
    pids = check_ids(raw["pids"], len(feats), f"{path} key 'pids'")
    camids = check_ids(raw["camids"], len(feats), f"{path} key 'camids'")
    paths = None
    if "paths" in raw:
        if raw["paths"].dtype.kind != "U":
            raise EvaluationInputError(f"{path} key 'paths': expected strings, got dtype {raw['paths'].dtype}")
        paths = _as_paths(raw["paths"], len(feats), f"{path} key 'paths'")
    return FeatureSet(feats, pids, camids, paths)
