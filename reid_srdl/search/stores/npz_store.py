"""The in-memory gallery of the first releases: arrays, or an ``.npz`` gallery file.

Item ids here are positions (0, 1, 2, ... in the order items were added), as in the
releases before the stores: ``ReIDSearcher(features, pids, camids)`` and galleries read from
an ``.npz`` keep returning the indices they always did.  Cameras are 0-based camids in
the arrays and the file, and names ``c1``, ``c2``... in the items (camid 0 is ``c1``; -1 is
the unknown camera ""); a camera named otherwise is saved as camid -1.

The file (loaded without pickles) is a feature file ``tools/eval_reid.py`` reads --
``features``, ``pids``, ``camids``, ``paths`` -- plus ``meta`` (JSON: format tag, model
fingerprint, extraction settings, calibration) and ``calibration_impostor``.  It is written
whole, atomically (temporary file, fsync, rename): an add costs O(gallery), which is why
lasting galleries live in a store folder or Milvus; ``tools/search.py convert`` moves one
there.  Opened by :func:`~reid_srdl.search.stores.open_store` it is read-only.
"""

import json
import logging
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from reid_srdl.core.arrays import check_features, check_ids
from reid_srdl.search.stores import records
from reid_srdl.search.stores.base import DeleteRequest, GalleryItem, GalleryStore, StoreError, StoreHits
from reid_srdl.search.stores.npyfiles import read_npz, remove_stale_temps, write_durable
from reid_srdl.search.stores.table import ItemTable

log = logging.getLogger(__name__)

GALLERY_FORMAT = "reid_srdl.gallery/1"
MAX_IMPOSTOR_BYTES = 1 << 30
_CAMERA = re.compile(r"^c([1-9][0-9]{0,8})$")


def camera_name(camid: int) -> Optional[str]:
    """0-based camid -> the file-name camera ``c1``, ``c2``, ... (None when unknown)."""
    return None if camid < 0 else f"c{int(camid) + 1}"


def camid_of(camera: str) -> int:
    """``"c1"`` -> 0; any other name (or "") -> -1."""
    m = _CAMERA.match(camera or "")
    return int(m.group(1)) - 1 if m else -1


class NpzStore(GalleryStore):
    """A gallery held in memory, with positional ids; saved to and loaded from an ``.npz``."""

    engine = "npz"

    def __init__(self, dim: int, has_paths: bool = True, location: str = "(in memory)", read_only: bool = False):
        self._table = ItemTable(records.check_dim(dim, "dim"))
        self.has_paths = has_paths
        self.location = location
        self.read_only = read_only
        self._keys: Dict[int, int] = {}  # item id (source|frame|box) -> row: duplicate adds
        self._meta: Dict[str, Any] = {}

    @property
    def dim(self) -> int:
        return self._table.dim

    @classmethod
    def from_arrays(cls, features, pids, camids, paths: Optional[Sequence] = None, location: str = "(in memory)"):
        """Items from arrays, every one kept (even two of one path), ids 0..n-1."""
        feats = check_features(features, "gallery features")
        store = cls(feats.shape[1], has_paths=paths is not None, location=location)
        store._append(feats, items_from_arrays(feats, pids, camids, paths, 0, "gallery"), check_duplicates=False)
        return store

    def _append(self, vectors: np.ndarray, items: List[GalleryItem], check_duplicates: bool) -> int:
        with self._table.lock:
            fresh = []
            for i, it in enumerate(items):
                if check_duplicates and it.id in self._keys:
                    continue
                self._keys.setdefault(it.id, self._table.rows + len(fresh))
                fresh.append(i)
            if fresh:
                start = self._table.rows
                ids = list(range(start, start + len(fresh)))
                self._table.append(vectors[fresh], [items[i] for i in fresh], ids)
            return len(fresh)

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(
                f"{self.location} is an .npz gallery, opened read-only: convert it to a store "
                f"(tools/search.py convert {self.location} --store NEW) to add or delete"
            )

    # ------------------------------------------------------------------ the interface
    def add(self, vectors: np.ndarray, items: Sequence[GalleryItem]) -> int:
        self._writable()
        vectors = records.check_vectors(vectors, self.dim, "vectors to add")
        return self._append(vectors, records.check_items(items, len(vectors), "items to add"), check_duplicates=True)

    def search(self, queries: np.ndarray, k: int, filters=None) -> StoreHits:
        q = records.check_vectors(queries, self.dim, "queries")
        return self._table.search(q, records.check_k(k), records.check_filters(filters, len(q)))

    def delete(self, request: DeleteRequest) -> List[GalleryItem]:
        self._writable()
        request = records.check_delete(request)
        with self._table.lock:
            rows = self._table.delete_rows(request)
            removed = [self._table.item(int(r)) for r in rows]
            self._table.kill(self._table.ids.view()[rows].tolist())
            for it in removed:
                self._keys.pop(it.id, None)
        return removed

    def get(self, ids: Sequence[int]) -> List[Optional[GalleryItem]]:
        return self._table.get(records.check_ids(ids, "ids"))

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        return self._table.vectors(records.check_ids(ids, "ids"), self.location)

    def scan(self, batch_size: int = 65536) -> Iterator[Tuple[np.ndarray, List[GalleryItem]]]:
        rows = self._table.live_rows()
        for s in range(0, len(rows), batch_size):
            part = rows[s : s + batch_size]
            with self._table.lock:
                yield self._table.gather(part), [self._table.item(int(r)) for r in part]

    def ids(self) -> np.ndarray:
        """The live ids (positions), in order."""
        with self._table.lock:
            return self._table.ids.view()[self._table.live_rows()].copy()

    def __len__(self) -> int:
        return len(self._table)

    def get_meta(self) -> Dict[str, Any]:
        return dict(self._meta)

    def set_meta(self, meta: Dict[str, Any]) -> None:
        self._writable()
        self._meta = records.check_meta(meta, "meta to store")

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ the file
    def save(self, path) -> None:
        """Write the gallery file (see the module docstring) atomically and durably."""
        save_gallery(path, self)

    @classmethod
    def load(cls, path, read_only: bool = False) -> "NpzStore":
        """Read a gallery file (or any feature file: then there is no model, settings or
        calibration); every problem is one line naming the file and the field."""
        from reid_srdl.evaluation.io import load_features

        path = os.fspath(path)
        gone = remove_stale_temps(os.path.dirname(os.path.abspath(path)), os.path.basename(path))
        if gone:
            log.info("%s: removed %d temporary file(s) left by a save that was killed", path, gone)
        stored = load_features(path)
        store = cls.from_arrays(stored.features, stored.pids, stored.camids, stored.paths, location=path)
        extra = read_npz(
            path, {"meta": ("U", 0), "calibration_impostor": ("<f8", 1)}, exact=False, max_bytes=MAX_IMPOSTOR_BYTES
        )
        if "meta" in extra:
            meta = records.parse_json(str(extra["meta"]), f"{path} key 'meta'")
            if not isinstance(meta, dict) or meta.get("format") != GALLERY_FORMAT:
                raise StoreError(f"{path} key 'meta': not a {GALLERY_FORMAT} description")
            if "calibration_impostor" in extra:
                meta["calibration_impostor"] = extra["calibration_impostor"]
            store._meta = records.check_meta(meta, f"{path} key 'meta'")
        store.read_only = read_only
        return store


def arrays_of(store: GalleryStore) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[List[str]]]:
    """Any store's live items, in its order, as the first releases' arrays: features,
    pids, camids (``c1`` -> 0, other names -1) and paths (the sources; None for a gallery
    built without paths).  The whole gallery in memory: for calibration, export, the API's
    ``features``/``pids``/``camids``/``paths``."""
    vecs, items = [np.zeros((0, store.dim), np.float32)], []
    for v, it in store.scan():
        vecs.append(v)
        items.extend(it)
    return (
        np.concatenate(vecs),
        np.asarray([it.pid for it in items], dtype=np.int64),
        np.asarray([camid_of(it.camera) for it in items], dtype=np.int64),
        [it.source for it in items] if getattr(store, "has_paths", True) else None,
    )


def save_gallery(path, store: GalleryStore) -> None:
    """Write any store as a gallery file (see the module docstring and :func:`arrays_of`),
    with its metadata; atomically and durably."""
    from reid_srdl import __version__

    feats, pids, camids, paths = arrays_of(store)
    meta = store.get_meta()
    impostor = meta.get("calibration_impostor")
    head = {"format": GALLERY_FORMAT, "written_by": f"reid_srdl {__version__}"}
    arrays = {
        "features": feats,
        "pids": pids,
        "camids": camids,
        "meta": np.array(json.dumps({**head, **{k: meta.get(k) for k in ("model", "settings", "calibration")}})),
    }
    if paths is not None:
        arrays["paths"] = np.asarray(paths, dtype=str) if paths else np.zeros(0, "<U1")
    if impostor is not None:
        arrays["calibration_impostor"] = np.asarray(impostor, dtype=np.float64)
    write_durable(os.fspath(path), lambda f: np.savez(f, **arrays))


def items_from_arrays(feats, pids, camids, paths, start: int = 0, what: str = "items") -> List[GalleryItem]:
    """Items from the legacy arrays: pid, camid (-> camera ``c1``...) and path (the source;
    ``#<position>`` when there are no paths)."""
    n = len(feats)
    pids = check_ids(pids, n, f"{what} pids")
    camids = check_ids(camids, n, f"{what} camids")
    if paths is not None:
        paths = [os.fspath(p) for p in paths]
        if len(paths) != n:
            raise StoreError(f"{what} paths: {len(paths)} paths for {n} features")
    items = []
    for i in range(n):
        item = GalleryItem(
            source=paths[i] if paths is not None else f"#{start + i}",
            camera=camera_name(int(camids[i])) or "",
            pid=int(pids[i]),
        )
        items.append(records.check_item(item, f"{what} item {i}"))
    return items
