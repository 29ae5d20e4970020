"""Arrays on disk for the folder store: durable writes, and reads bounded by the file's size.

Reads never trust a header: an ``.npy`` is memory-mapped (the mapping fails when the header
declares more data than the file holds), an ``.npz`` member must be stored uncompressed (so
no member can unpack to more bytes than the file has) and its declared size is compared with
the member's size before anything is allocated.  Object arrays (pickles) are refused.

Writes go to a hidden temporary file beside the target (``.NAME.XXXX.tmp``), are fsynced,
renamed into place, and the folder is fsynced: after :func:`write_npy` returns, a kill -9 or a
power cut leaves either no file or the whole one.  :func:`remove_stale_temps` removes what a
killed write left (a temporary file its writer no longer holds locked).
"""

import contextlib
import fcntl
import os
import re
import zipfile
import zlib
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from reid_srdl.core.files import temp_file_beside
from reid_srdl.search.stores.base import StoreError

_TEMP = re.compile(r"^\..+\.tmp(\..*)?$")  # core.files.temp_file_beside's names


def is_temp(name: str) -> bool:
    return bool(_TEMP.match(name))


def fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: str, write: Callable[[object], None]) -> None:
    """``write(file)`` into a temporary file, fsync, rename over ``path``, fsync the folder.

    The writer holds an flock on its temporary file until the rename: :func:`remove_stale_temps`
    can tell the leftover of a killed write (nobody holds it) from a write in progress."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = temp_file_beside(path)
    try:
        with open(tmp, "wb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # still locked: a cleaner never takes a finished file for a leftover
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(path))


def remove_stale_temps(folder: str, name: Optional[str] = None) -> int:
    """Remove the temporary files in ``folder`` (of the file ``name`` only, if given) that no
    live writer holds: what a write killed midway left.  Returns how many were removed."""
    removed = 0
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    for entry in names:
        if not is_temp(entry) or (name is not None and not entry.startswith(f".{name}.")):
            continue
        full = os.path.join(folder, entry)
        try:
            fd = os.open(full, os.O_RDONLY)
        except (FileNotFoundError, IsADirectoryError):
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a write in progress
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.remove(full)
            removed += 1
    return removed


def write_npy(path: str, array: np.ndarray) -> None:
    write_durable(path, lambda f: np.save(f, array, allow_pickle=False))


def write_npz(path: str, arrays: Dict[str, np.ndarray]) -> None:
    write_durable(path, lambda f: np.savez(f, **arrays))  # np.savez stores members uncompressed


def read_npy(path: str, dtype: str, ndim: int) -> np.ndarray:
    """A read-only memory map of an ``.npy`` of this dtype and number of dimensions."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: not a readable .npy array ({e})") from None
    if arr.dtype != np.dtype(dtype) or arr.ndim != ndim:
        raise StoreError(f"{path}: expected a {ndim}-D {np.dtype(dtype)} array, got {arr.ndim}-D {arr.dtype}")
    return arr


def _header(f, path: str, name: str) -> Tuple[tuple, bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            return fmt.read_array_header_1_0(f)
        if version == (2, 0):
            return fmt.read_array_header_2_0(f)
    except ValueError as e:
        raise StoreError(f"{path} member {name}: not an .npy array ({e})") from None
    raise StoreError(f"{path} member {name}: unsupported .npy version {version}")


def read_npz(
    path: str, expected: Dict[str, Tuple[str, int]], exact: bool = True, max_bytes: Optional[int] = None
) -> Dict[str, np.ndarray]:
    """The members ``expected`` (name -> (dtype, ndim); dtype ``"U"`` is any unicode width)
    of an ``.npz``, each read only after its header was checked against its size.

    ``exact`` (the folder store's own files): every expected member and no other, stored
    uncompressed, so no member can unpack to more bytes than the file holds.  Otherwise
    (``.npz`` galleries from elsewhere): absent members are left out, compressed ones are
    read when their declared size is at most ``max_bytes`` (zipfile never returns more than
    a member's declared size).  Object arrays are refused; a failure is one line naming the
    file and the member.
    """
    try:
        z = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (OSError, zipfile.BadZipFile) as e:
        raise StoreError(f"{path}: not a readable .npz file ({e})") from None
    out = {}
    with z:
        names = {info.filename: info for info in z.infolist()}
        wanted = {f"{n}.npy" for n in expected}
        if exact and set(names) != wanted:
            odd = sorted(set(names) - wanted) or sorted(wanted - set(names))
            raise StoreError(f"{path}: expected the members {', '.join(sorted(expected))}; found or missing {odd[0]}")
        for name, (dtype, ndim) in expected.items():
            info = names.get(f"{name}.npy")
            if info is None:
                continue
            if exact and info.compress_type != zipfile.ZIP_STORED:
                raise StoreError(f"{path} member {name}: compressed; the store writes members uncompressed")
            if max_bytes is not None and info.file_size > max_bytes:
                raise StoreError(f"{path} member {name}: {info.file_size} bytes, more than the limit of {max_bytes}")
            out[name] = _read_member(z, info, path, name, dtype, ndim)
    return out


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, name: str, dtype: str, ndim: int):
    try:
        with z.open(info) as f:
            shape, fortran, dt = _header(f, path, name)
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            kind_ok = dt.kind == "U" if dtype == "U" else dt == np.dtype(dtype)
            if dt.hasobject or not kind_ok or len(shape) != ndim:
                raise StoreError(f"{path} member {name}: expected {ndim}-D {dtype}, got {dt} {shape}")
            if count * dt.itemsize > info.file_size:
                raise StoreError(f"{path} member {name}: declares {shape} but holds {info.file_size} bytes")
            data = f.read()  # to the end: zipfile checks the member's CRC there
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as e:  # a CRC mismatch included
        raise StoreError(f"{path} member {name}: unreadable ({e})") from None
    if len(data) != count * dt.itemsize:
        raise StoreError(f"{path} member {name}: {len(data)} bytes of data for the declared {shape}")
    arr = np.frombuffer(data, dtype=dt, count=count).reshape(shape, order="F" if fortran else "C")
    return arr.copy()
