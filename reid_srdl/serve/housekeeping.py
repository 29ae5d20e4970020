"""The server's files: which folders it may serve images from, the lock that keeps a second
writer off its gallery, and the partial files a killed server left behind.

Image folders come from the operator (``--image-root``), never from the gallery: a gallery
file is data that anyone may have written, and a gallery that lists ``/etc/passwd`` must not
turn ``GET /image/{i}`` into a file read.  Without ``--image-root`` the server serves the
gallery's own folder and its upload folder.  Within those folders only image files
(:data:`~reid_srdl.search.labels.IMAGE_EXTENSIONS`) are served, symlinks resolved first.

A writing server holds an exclusive lock (``fcntl.flock`` on a hidden ``.NAME.lock`` beside
the gallery) for its lifetime: a second server adding to the same gallery file would
overwrite the first one's adds with its own copy.  Holding that lock, it removes the partial
files of an earlier server that was killed mid-write: the full-size temporary gallery
(``.NAME.XXXXXXXX.tmp``, written by :func:`reid_srdl.core.files.atomic_path` before the
rename) and half-written uploads (``.HASH.png.XXXXXXXX.tmp.png``).  Only names of exactly
those shapes are touched.
"""

import contextlib
import fcntl
import logging
import os
import re
from typing import Iterable, List, Optional, Sequence

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.search.labels import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

# mkstemp's random part: 8 characters of [a-z0-9_] (tempfile's alphabet).
_RANDOM = r"[a-z0-9_]{8}"
_UPLOAD_PARTIAL = re.compile(r"\.[0-9a-f]{32,64}\.png\." + _RANDOM + r"\.tmp\.png")


class GalleryInUseError(ReidSrdlError):
    """Another server already writes to this gallery."""


class ImageRoots:
    """The folders images may be served from (each resolved once, at start-up)."""

    def __init__(self, folders: Iterable[str]):
        roots = []
        for folder in folders:
            real = os.path.realpath(os.path.abspath(os.fspath(folder)))
            if real not in roots:
                roots.append(real)
        self.folders: List[str] = roots

    def servable(self, path: Optional[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> Optional[str]:
        """The resolved path of ``path`` if it is a file with one of ``extensions`` (images by
        default) inside one of the folders, else None."""
        if not path:
            return None
        real = os.path.realpath(path)
        if not real.lower().endswith(tuple(extensions)) or not os.path.isfile(real):
            return None
        if not any(os.path.commonpath([real, root]) == root for root in self.folders):
            return None
        return real

    def count_outside(self, paths: Sequence[str]) -> int:
        """How many of ``paths`` could not be served (outside the folders, or not image files)."""
        return sum(self.servable(p) is None for p in paths)


def default_image_roots(gallery_path: Optional[str], upload_dir: Optional[str]) -> List[str]:
    """The gallery file's own folder and the upload folder (those that are given)."""
    roots = []
    if gallery_path:
        roots.append(os.path.dirname(os.path.abspath(gallery_path)))
    if upload_dir:
        roots.append(upload_dir)
    return roots


def _partial_pattern(gallery_path: str) -> "re.Pattern[str]":
    name = re.escape(os.path.basename(gallery_path))
    return re.compile(r"\." + name + r"\." + _RANDOM + r"\.tmp")


def stale_partials(gallery_path: Optional[str], upload_dir: Optional[str]) -> List[str]:
    """The leftover partial files of this gallery and upload folder (see the module docstring)."""
    found = []
    if gallery_path:
        folder = os.path.dirname(os.path.abspath(gallery_path))
        pattern = _partial_pattern(gallery_path)
        with contextlib.suppress(FileNotFoundError):
            found += [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if pattern.fullmatch(f)]
    if upload_dir:
        with contextlib.suppress(FileNotFoundError):
            names = sorted(os.listdir(upload_dir))
            found += [os.path.join(upload_dir, f) for f in names if _UPLOAD_PARTIAL.fullmatch(f)]
    return [p for p in found if os.path.isfile(p) and not os.path.islink(p)]


class GalleryLock:
    """An exclusive, non-blocking lock on a gallery file, held until :meth:`release`."""

    def __init__(self, gallery_path: str):
        folder, name = os.path.split(os.path.abspath(gallery_path))
        self.path = os.path.join(folder, f".{name}.lock")
        self._fd: Optional[int] = None

    def acquire(self) -> bool:
        """True if this process now holds the lock; False if another process does."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def clean_up_after_a_killed_server(
    gallery_path: Optional[str], upload_dir: Optional[str], writer: bool
) -> Optional[GalleryLock]:
    """Remove the partial files an earlier, killed server left behind; returns the lock a
    writing server keeps (None for a read-only one, or without a gallery file).

    A writer that cannot take the lock stops with :class:`GalleryInUseError`; a reader that
    cannot take it leaves the files alone (they belong to the live writer).
    """
    if not gallery_path:
        return None
    lock = GalleryLock(gallery_path)
    try:
        held = lock.acquire()
    except OSError as e:
        if writer:
            raise GalleryInUseError(f"cannot lock {gallery_path} for writing ({lock.path}: {e.strerror})") from None
        return None  # a read-only folder: nothing of ours can be in it
    if not held:
        if writer:
            raise GalleryInUseError(
                f"another server is adding images to {gallery_path} (it holds {lock.path}); a second writer would "
                "overwrite its adds: stop it, or start this one without --allow-add"
            )
        return None
    for path in stale_partials(gallery_path, upload_dir):
        try:
            size = os.path.getsize(path)
            os.remove(path)
            log.warning("removed %s (%d bytes), a partial file left by a server that was stopped mid-write", path, size)
        except OSError as e:
            log.warning("could not remove the partial file %s: %s", path, e.strerror)
    if writer:
        return lock
    lock.release()
    return None
