"""The server's files: which folders it may serve images from, the lock that keeps a second
writer off an ``.npz`` gallery, and the partial uploads a killed server left behind.

Image folders come from the operator (``--image-root``), never from the gallery: a gallery
file is data that anyone may have written, and a gallery that lists ``/etc/passwd`` must not
turn ``GET /image/{id}`` into a file read.  Without ``--image-root`` the server serves the
gallery's own folder, the crops folder its store owns and its upload folder.  Within those
folders only image files (:data:`~reid_srdl.search.labels.IMAGE_EXTENSIONS`; videos for
``/frame``) are served, symlinks resolved first.

A server that adds to an ``.npz`` gallery holds an exclusive lock (``fcntl.flock`` on a
hidden ``.NAME.lock`` beside it) for its lifetime: the file is rewritten whole from memory
after each add, so a second writing server would overwrite the first one's adds.  (Stores
need no such lock: their adds are durable and several processes may make them.)

Uploads are written as the stores write their files (a hidden temporary file, locked by its
writer until the rename: :func:`~reid_srdl.search.stores.npyfiles.write_durable`), so at
start-up the temporary files of the upload folder that nobody holds are the leftovers of a
killed server, and are removed; a live writer's are not.  (The full-size temporary file of an
``.npz`` save killed midway is removed the same way when the gallery is loaded.)
"""

import fcntl
import logging
import os
from typing import Iterable, List, Optional, Sequence

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.search.labels import IMAGE_EXTENSIONS
from reid_srdl.search.stores.npyfiles import remove_stale_temps

log = logging.getLogger(__name__)


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


def default_image_roots(store, gallery_path: Optional[str], upload_dir: Optional[str]) -> List[str]:
    """The gallery's own folder (an ``.npz`` file's folder, a store folder), the folder of
    the crops the store owns, and the upload folder -- those that exist for this gallery."""
    roots = []
    if gallery_path:
        roots.append(os.path.dirname(os.path.abspath(gallery_path)))
    elif store is not None and getattr(store, "engine", "") == "faiss":
        roots.append(store.location)
    if store is not None and store.crop_dir:
        roots.append(store.crop_dir)
    if upload_dir:
        roots.append(upload_dir)
    return roots


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
    """Remove the partial uploads an earlier, killed server left behind, and take the lock a
    server adding to an ``.npz`` gallery keeps (returned; None otherwise).

    A writer that cannot take the lock stops with :class:`GalleryInUseError`.
    """
    lock = None
    if gallery_path and writer:
        lock = GalleryLock(gallery_path)
        try:
            held = lock.acquire()
        except OSError as e:
            raise GalleryInUseError(f"cannot lock {gallery_path} for writing ({lock.path}: {e.strerror})") from None
        if not held:
            raise GalleryInUseError(
                f"another server is adding images to {gallery_path} (it holds {lock.path}); a second writer would "
                "overwrite its adds: stop it, or start this one without --allow-add"
            )
    if upload_dir:
        removed = remove_stale_temps(upload_dir)
        if removed:
            log.warning("removed %d partial upload(s) from %s, left by a server stopped mid-write", removed, upload_dir)
    return lock
