"""Atomic output files with the user's permissions, and output paths checked before any work.

Every file the project writes (checkpoints, config.yaml, metrics, JSON, plots, feature and
gallery files) goes through :func:`atomic_path`: the data is written to a temporary file
beside the target and renamed over it only when complete, so a crash or an error never
leaves half a file behind.  ``tempfile.mkstemp`` creates its file with mode 0600 whatever
the umask; the temporary file is given the mode a plain ``open()`` would have created
(``0o666 & ~umask``: 0644 under the usual umask 022) before it is renamed into place.

:func:`check_output_file` and :func:`check_output_dir` find an output that cannot be
written (a folder where a file is expected, a parent that is a file or not writable) before
the expensive part, so a tool stops with one line instead of after the computation.
"""

import contextlib
import errno
import json
import os
import shutil
import tempfile
from typing import Callable, Iterator, Optional

from reid_srdl.core.errors import ReidSrdlError


class OutputPathError(ReidSrdlError, OSError):
    """An output file or folder cannot be created or written where the user asked for it."""


#: What a write gets when the disk, the quota or the process's file size limit is exhausted.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def disk_full_error(path: str, e: OSError) -> OutputPathError:
    """One line for a write that ran out of space: the file, the reason, and that the file
    that was there before is untouched (writes go to a temporary file first)."""
    name = os.path.basename(path)
    kept = f"the previous {name} is intact" if os.path.exists(path) else f"no {name} was written"
    return OutputPathError(f"cannot write {path}: {describe_os_error(e)}; {kept}")


def current_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (the only portable way to read it)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def temp_file_beside(path: str, suffix: str = ".tmp") -> str:
    """A new empty temporary file in ``path``'s folder (which must exist), hidden, with the
    mode a plain new file would get; the caller writes it and renames it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=folder)
    try:
        os.fchmod(fd, new_file_mode())
    finally:
        os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it over ``path`` if the block succeeds.

    The folder is created if needed.  On an exception the temporary file is removed and
    ``path`` is left as it was.  ``suffix`` keeps an extension on the temporary name for
    writers that look at it.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_file_beside(path, suffix=f".tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            raise disk_full_error(path, e) from None
        raise


def write_bytes_atomic(path, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; ``fsync`` also forces it to disk first."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def _first_existing(path: str) -> str:
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return probe


def _check_writable_folder(folder: str, path: str, what: str) -> None:
    """Create and remove a probe file in ``folder``: unlike ``os.access`` this also sees
    read-only file systems, /proc and /sys, and is right for root."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".reid_srdl_write_probe.", dir=folder)
    except OSError as e:
        raise OutputPathError(f"cannot write {what} {path}: folder {folder}: {describe_os_error(e)}") from None
    os.close(fd)
    os.remove(probe)


def _check_creatable_under(path: str, what: str) -> None:
    """The first existing ancestor of ``path`` must be a folder that files can be written in."""
    ancestor = _first_existing(os.path.dirname(path))
    if not os.path.isdir(ancestor):
        raise OutputPathError(f"cannot write {what} {path}: {ancestor} is a file, not a folder")
    _check_writable_folder(ancestor, path, what)


def check_output_file(path, what: str = "output file") -> str:
    """Raise :class:`OutputPathError` unless a file can be written (created or replaced) at
    ``path``; returns the absolute path.  Nothing is created."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise OutputPathError(f"cannot write {what} {path}: it is a folder; give a file name")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise OutputPathError(f"cannot write {what} {path}: it exists and is not a regular file")
    _check_creatable_under(path, what)
    return path


def check_output_dir(path, what: str = "output folder") -> str:
    """Raise :class:`OutputPathError` unless files can be written in folder ``path`` (an
    existing writable folder, or one that can be created); returns the absolute path."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise OutputPathError(f"cannot write {what} {path}: it is a file, not a folder")
        _check_writable_folder(path, path, what)
        return path
    _check_creatable_under(path, what)
    return path


def describe_os_error(e: OSError) -> str:
    """``[Errno 13] Permission denied: 'x'`` -> ``permission denied``: the reason alone,
    for messages that name the path themselves."""
    reason: Optional[str] = e.strerror
    return (reason or str(e)).lower()


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


def write_folder_atomically(target: str, write: Callable[[str], None], overwrite: bool = False) -> str:
    """``write(tmp)`` fills a temporary sibling of the folder ``target``, which is then renamed
    into place: nothing is ever half-written.  Returns ``target``.

    An existing ``target`` is a FileExistsError unless ``overwrite`` (then the old folder is
    swapped out and deleted); so is one that another process finished first.
    """
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"'{target}' already exists; pass overwrite=True (--overwrite) to replace it")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(target)
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a written folder is meant to be shared
        if os.path.exists(target):  # overwrite: swap, then delete the old one
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.rename(target, os.path.join(old, "data"))
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, target)
            except OSError:
                if os.path.exists(target):  # another process finished first
                    raise FileExistsError(f"'{target}' appeared while writing it") from None
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
