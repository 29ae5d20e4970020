"""Feature files (``.npz``).

A feature file holds ``features`` (N x D float32), ``pids`` (N ints), ``camids`` (N ints)
and optionally ``paths`` (N strings, the images the features came from).  It is what
``tools/eval_reid.py`` reads for query, gallery and multi-query sets, and what
``ReIDSearcher.save`` writes.  Strings are stored as a unicode array, so files load with
``allow_pickle=False`` (a feature file can never run code), after :func:`check_npz_file` has
bounded what each member declares (a zip bomb never reaches memory).

Files are written through reid_srdl.core.files (atomic, with the umask's mode).
"""

import os
import zipfile
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from reid_srdl.core.archives import check_member_sizes
from reid_srdl.core.arrays import EvaluationInputError, check_features, check_ids
from reid_srdl.core.files import atomic_path
from reid_srdl.core.limits import human_bytes

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
    with atomic_path(path) as tmp:
        # A file object, not a name: np.savez would append ".npz" to the temporary name.
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def check_npz_file(path: str, what: str = "feature file") -> None:
    """Refuse, before NumPy reads it, an ``.npz`` file that is not a zip of plain ``.npy``
    arrays or whose members would take more memory than the file justifies.

    From the zip directory and each member's ``.npy`` header (a few hundred bytes read):
    the members' declared sizes against ``limits.MAX_ARCHIVE_EXPANSION`` (a 1 MB zip bomb
    declaring gigabytes is refused before a byte is inflated), each array's declared shape x
    item size against the bytes its member holds (NumPy allocates the declared array before
    reading it), and object arrays (pickled Python objects, which are never loaded).  Raises
    :class:`EvaluationInputError` or :class:`~reid_srdl.core.limits.LimitExceededError`
    naming ``what`` and ``path``.  CRC-32 checksums are verified by zipfile as members are read.
    """
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(6)
        kind = "a single .npy array" if head == b"\x93NUMPY" else "not a zip archive"
        raise EvaluationInputError(
            f"{path}: not a readable .npz {what} (it is {kind}; an .npz file is a zip archive of .npy arrays)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            check_member_sizes(archive, path, what)
            for info in archive.infolist():
                problem = _npy_member_problem(archive, info)
                if problem:
                    raise EvaluationInputError(f"{path}: not a readable .npz {what} (member {info.filename} {problem})")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as e:
        raise EvaluationInputError(f"{path}: not a readable .npz {what} ({e})") from None


def _npy_member_problem(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """What is wrong with one member as an ``.npy`` array ('' when nothing)."""
    if not info.filename.endswith(".npy"):
        return "is not an .npy array"
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                return f"is an .npy array of format version {version}, which np.save writes only for unusual types"
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(member)
        except (ValueError, EOFError, SyntaxError, TypeError) as e:
            return f"has no valid .npy header ({(str(e).splitlines() or [''])[0][:100]})"
        header_bytes = member.tell()
    if dtype.hasobject:
        return "holds Python objects (pickled data), which are never loaded from a file"
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = info.file_size - header_bytes
    if declared != held:
        return (
            f"declares a {tuple(shape)} {dtype} array of {human_bytes(declared)} but holds "
            f"{human_bytes(max(held, 0))} of data"
        )
    return ""


def load_features(path: str) -> FeatureSet:
    """Read and check a feature file; any problem is an EvaluationInputError naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EvaluationInputError(f"feature file not found: {path}")
    check_npz_file(path)
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
