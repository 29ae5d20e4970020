"""The one gallery-store interface every engine implements, and what a gallery item is.

A gallery item is a vector plus where and when the crop was seen: camera, UTC time, the
source (a video or an image file), the frame index and the box in that frame, an optional
track and an optional person id.  Its id is a function of (source, frame, box) alone
(:func:`item_id`), so adding the same crop twice -- a re-run ingest, a repeated upload --
adds nothing the second time, in every store and from every process.

Distances are Euclidean (L2, not squared) in every store, nearest first; an engine whose
metric is the squared distance (FAISS' flat L2, Milvus' ``L2``) takes the square root.

Engines: ``faiss`` (an embedded folder) and ``milvus`` (a Milvus Lite ``*.db`` file, or any
server that speaks the Milvus protocol at ``http(s)://host:port``); :func:`open_store` in
``reid_srdl.search.stores`` picks one from the path or URI.

Refinements made while the engines were built (nothing pinned before was removed or renamed):

* ``SearchFilter.exclude_cameras`` -- "look only in the other cameras" (the CLI's
  ``--exclude-camera`` and the API's ``exclude_camid``) cannot be written with ``cameras``
  without first listing every camera of the gallery;
* ``GalleryStore.scan`` -- every live item with its vector, in batches: calibration, ``info``,
  conversion and export need the whole gallery, and no engine may be asked for it at once;
* ``GalleryStore.vectors`` -- the vectors of given ids: a query picked from the gallery (the
  page's "search with this crop") is searched with the item's own vector;
* ``GalleryStore.location``, ``engine``, ``crop_dir``, ``read_only`` -- what messages name,
  and the one folder whose files a delete may remove (never a path read from an item alone:
  a stranger's gallery must not make us delete files elsewhere);
* ``GalleryStore.compact`` -- physically drop deleted items (privacy: a tombstone hides an
  item, compaction erases it); a no-op where the engine does it by itself;
* ``StoreError`` -- the one error class of the stores (bad input or an unreadable gallery),
  a ``ReidSrdlError``: the tools print it as one line.
"""

import abc
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from reid_srdl.search.errors import SearchError

# A box is (x, y, w, h) in the pixels of the frame it was cut from.
Box = Tuple[int, int, int, int]
# The most neighbours one search returns (Milvus' own top-k limit; the same in every engine).
MAX_K = 16384


class StoreError(SearchError):
    """A gallery store refused an input, or its files or rows are not a valid gallery (the
    message names the field and the file or collection)."""


class StoreMissingError(StoreError):
    """No gallery at the path or URI (yet): create it (``create=True`` and ``dim``)."""


# Ids are signed 64-bit integers (Milvus' INT64 primary key); the top bit stays clear.
ID_BITS = 63


def item_id(source: str, frame: int, box: Optional[Box]) -> int:
    """The item's id: the first 63 bits of sha256("source|frame|x,y,w,h").

    Deterministic across processes and machines (unlike ``hash()``), so a second ingest of
    the same footage, or a second add of the same image file, finds the items it would add.

    >>> item_id("cam1.mp4", 12, (10, 20, 30, 60)) == item_id("cam1.mp4", 12, (10, 20, 30, 60))
    True
    >>> item_id("cam1.mp4", 12, (10, 20, 30, 60)) != item_id("cam1.mp4", 13, (10, 20, 30, 60))
    True
    """
    box_text = "" if box is None else ",".join(str(int(v)) for v in box)
    digest = hashlib.sha256(f"{source}|{int(frame)}|{box_text}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - ID_BITS)


@dataclass(frozen=True)
class GalleryItem:
    """What the gallery knows of one crop besides its vector.

    ``camera`` is a name ("c1", "lobby"); "" when unknown.  ``timestamp`` is UTC seconds since
    the epoch (None when unknown).  ``frame`` is the 0-based frame index in the video, -1 for
    a still image.  ``pid`` and ``track`` are -1 when unknown.  ``crop`` is the path of a crop
    file the gallery wrote itself (deleted with the item); None when the crop is the caller's.
    """

    source: str
    camera: str = ""
    timestamp: Optional[float] = None
    frame: int = -1
    box: Optional[Box] = None
    track: int = -1
    pid: int = -1
    crop: Optional[str] = None

    @property
    def id(self) -> int:
        return item_id(self.source, self.frame, self.box)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "camera": self.camera,
            "timestamp": self.timestamp,
            "frame": self.frame,
            "box": None if self.box is None else list(self.box),
            "track": self.track,
            "pid": self.pid,
            "crop": self.crop,
        }


@dataclass
class StoreHits:
    """Results of a search of ``m`` queries for ``k`` neighbours.

    ``distances`` (m, k) float64, L2 (not squared), nearest first, ``inf`` where fewer than k
    items passed the filters; ``ids`` (m, k) int64, -1 there; ``items`` one list per query of
    the items found (only the real hits, so ``len(items[q])`` <= k).
    """

    distances: np.ndarray
    ids: np.ndarray
    items: List[List[GalleryItem]]


@dataclass(frozen=True)
class SearchFilter:
    """Which items a query may return.  None means no restriction.

    ``cameras``: only these cameras.  ``time_from`` / ``time_to``: UTC seconds, inclusive
    bounds.  ``exclude_pid_camera``: leave out the items of this person in this camera (the
    re-id protocol's rule; an unknown pid, -1, excludes nothing).  ``exclude_ids``: leave out
    these item ids (a query picked from the gallery does not find itself).
    ``exclude_cameras``: leave out every item of these cameras.
    """

    cameras: Optional[Tuple[str, ...]] = None
    time_from: Optional[float] = None
    time_to: Optional[float] = None
    exclude_pid_camera: Optional[Tuple[int, str]] = None
    exclude_ids: Optional[Tuple[int, ...]] = None
    exclude_cameras: Optional[Tuple[str, ...]] = None

    def admits(self, item: GalleryItem) -> bool:
        """The filter as a plain predicate: the reference every engine's filter must match."""
        if self.cameras is not None and item.camera not in self.cameras:
            return False
        if self.exclude_cameras is not None and item.camera in self.exclude_cameras:
            return False
        if self.time_from is not None or self.time_to is not None:
            if item.timestamp is None or (isinstance(item.timestamp, float) and math.isnan(item.timestamp)):
                return False
            if self.time_from is not None and item.timestamp < self.time_from:
                return False
            if self.time_to is not None and item.timestamp > self.time_to:
                return False
        if self.exclude_pid_camera is not None:
            pid, camera = self.exclude_pid_camera
            if pid >= 0 and item.pid == pid and item.camera == camera:
                return False
        return not (self.exclude_ids is not None and item.id in self.exclude_ids)


@dataclass(frozen=True)
class DeleteRequest:
    """Which items to delete: every given criterion must hold (at least one is required).

    ``before``: UTC seconds; items whose timestamp is earlier (items without a timestamp are
    never matched by time).
    """

    ids: Optional[Tuple[int, ...]] = None
    pid: Optional[int] = None
    track: Optional[int] = None
    camera: Optional[str] = None
    before: Optional[float] = None


class GalleryStore(abc.ABC):
    """A gallery of vectors with item metadata, in one engine.

    Contract (one test suite runs it against every engine):

    * ``add`` is all-or-nothing and durable when it returns: every acknowledged item is found
      by a later search from any process, also after a kill -9.  Items whose id is already in
      the store are skipped, not duplicated; the return value is the number added.
    * ``search`` is exact (unless the store was created with an approximate index) and equal
      across engines on the same data: same ids, distances within 1e-5.
    * ``delete`` removes the matching items from every later search, deletes the crops the
      store wrote itself, and returns the items it removed.
    * ``meta``: the model fingerprint, the extraction settings and the open-set calibration
      travel with the gallery (``get_meta`` / ``set_meta``, a JSON-able dict).
    """

    dim: int
    engine: str = ""  # "faiss", "milvus", "npz"
    location: str = ""  # the folder, file or URI, for messages
    crop_dir: Optional[str] = None  # the only folder whose files a delete removes
    read_only: bool = False

    @abc.abstractmethod
    def add(self, vectors: np.ndarray, items: Sequence[GalleryItem]) -> int:
        """Store ``vectors`` (n, dim) float32 with their ``items``; returns how many were new."""

    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int, filters: Optional[Sequence[SearchFilter]] = None) -> StoreHits:
        """The ``k`` nearest items of each query; ``filters``: None, or one per query."""

    @abc.abstractmethod
    def delete(self, request: DeleteRequest) -> List[GalleryItem]:
        """Remove the matching items (and their stored crops); returns them."""

    @abc.abstractmethod
    def get(self, ids: Sequence[int]) -> List[Optional[GalleryItem]]:
        """The items with these ids (None for an id not in the store)."""

    @abc.abstractmethod
    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors ``(len(ids), dim)`` float32 of these ids (a StoreError for an id
        not in the store)."""

    @abc.abstractmethod
    def scan(self, batch_size: int = 65536) -> Iterator[Tuple[np.ndarray, List[GalleryItem]]]:
        """Every item now in the store with its vector, in batches ``(vectors, items)``."""

    def compact(self) -> int:
        """Erase deleted items from disk (tombstones hide them until then); returns how many
        were erased.  Engines that erase by themselves do nothing here."""
        return 0

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of items now in the store."""

    @abc.abstractmethod
    def get_meta(self) -> Dict[str, Any]:
        """The gallery's metadata: model fingerprint, extraction settings, calibration."""

    @abc.abstractmethod
    def set_meta(self, meta: Dict[str, Any]) -> None:
        """Replace the gallery's metadata (durably, atomically)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release files and connections; the store is not used afterwards."""

    def __enter__(self) -> "GalleryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
