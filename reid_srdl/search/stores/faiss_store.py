"""The embedded gallery store: a folder on disk, searched with faiss (exact by default).

Layout::

    STORE/
      manifest.json        format, dim, index, generation, number of events, meta version
      LOCK                 writers hold an exclusive flock on it (fcntl)
      meta-000003.json     fingerprint, settings, calibration (+ impostor distances)
      gen-000001/          the event log of this generation, numbered 1, 2, ...
        000001.vec.npy     an add: the vectors (n, dim) float32 ...
        000001.items.npz   ... and their items (ids, camera, time, frame, box, track, pid,
                           source, crop; strings as UTF-8 JSON)
        000002.del.npy     a delete: the ids it removed (tombstones)
        trained.npz        IVF indexes: the trained centroids (plain arrays, never a faiss file)
      crops/               crops the store owns: a delete removes them with their items

An add writes its event files (temporary name, fsync, rename), then the manifest the same
way: its cost is O(batch), whatever the gallery's size.  A kill -9 before the manifest's
rename leaves an event file nothing refers to; the next opening removes it, with any
temporary file, so every acknowledged add is there and nothing else.  Deletes append a
tombstone event; :meth:`FaissStore.compact` rewrites the live items into a new generation
(O(live)) and removes the old one, which erases deleted items from disk.

Several processes: writers are serialised by the lock and catch up on the events written by
others before they write; readers take no lock and, before every operation, compare the
manifest's stat with the one they loaded, then read only the new events (or everything
again after a compaction).  Files are read as data, bounded by their size
(:mod:`.npyfiles`), and every field is checked (:mod:`.records`).
"""

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from reid_srdl.search.stores import records
from reid_srdl.search.stores.base import (
    DeleteRequest,
    GalleryItem,
    GalleryStore,
    StoreError,
    StoreHits,
    StoreMissingError,
)
from reid_srdl.search.stores.npyfiles import fsync_dir, is_temp, read_npy, read_npz, write_durable, write_npy, write_npz
from reid_srdl.search.stores.table import ItemTable, check_index, columns_of, index_spec

log = logging.getLogger(__name__)

FORMAT = "reid_srdl.faiss_store/1"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
ITEM_COLUMNS = {
    "ids": ("<i8", 1),
    "timestamps": ("<f8", 1),
    "frames": ("<i8", 1),
    "tracks": ("<i8", 1),
    "pids": ("<i8", 1),
    "boxes": ("<i8", 2),
    "has_box": ("|b1", 1),
    "cameras": ("|u1", 1),
    "sources": ("|u1", 1),
    "crops": ("|u1", 1),
}
TEXT_COLUMNS = {"cameras": records.MAX_CAMERA, "sources": records.MAX_TEXT, "crops": records.MAX_TEXT}
COMPACT_SEGMENT = 1 << 18  # items per segment written by compact()


def is_store_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST))


def _json_bytes(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def check_columns(cols: Dict[str, np.ndarray], n: int, where: str) -> Dict[str, Any]:
    """Segment columns read from disk, every value checked (vectorised); strings decoded."""
    out: Dict[str, Any] = {}
    for name in ("ids", "timestamps", "frames", "tracks", "pids", "has_box"):
        if cols[name].shape != (n,):
            raise StoreError(f"{where} {name}: {cols[name].shape[0]} values for {n} vectors")
        out[name] = cols[name]
    if cols["boxes"].shape != (n, 4):
        raise StoreError(f"{where} boxes: expected ({n}, 4), got {cols['boxes'].shape}")
    out["boxes"] = cols["boxes"]
    ids = out["ids"]
    if n and (ids.min() < 0 or len(np.unique(ids)) != n):
        raise StoreError(f"{where} ids: expected {n} distinct ids >= 0")
    t = out["timestamps"]
    with np.errstate(invalid="ignore"):
        bad_t = ~np.isnan(t) & ~((t >= records.MIN_TIME) & (t <= records.MAX_TIME))
    if bad_t.any():
        raise StoreError(f"{where} timestamps: {t[bad_t][0]!r} is not UTC seconds of the years 1..9999")
    for name in ("frames", "tracks", "pids"):
        col = out[name]
        if n and (col.min() < -1 or col.max() > records.MAX_INT):
            raise StoreError(f"{where} {name}: values must be in -1..{records.MAX_INT}")
    b = out["boxes"][out["has_box"]]
    if len(b) and ((np.abs(b) >= 1 << 31).any() or (b[:, 2:] < 0).any()):
        raise StoreError(f"{where} boxes: coordinates must be 32-bit integers with width, height >= 0")
    for name, limit in TEXT_COLUMNS.items():
        values = records.parse_json(cols[name].tobytes(), f"{where} {name}")
        if not isinstance(values, list) or len(values) != n or not all(isinstance(v, str) for v in values):
            raise StoreError(f"{where} {name}: expected a list of {n} strings")
        if values and max(map(len, values)) > limit:
            raise StoreError(f"{where} {name}: a value is longer than {limit} characters")
        if records.CONTROL.search("".join(values)):
            raise StoreError(f"{where} {name}: a value contains a control character")
        if name == "sources" and not all(values):
            raise StoreError(f"{where} sources: a value is empty")
        out[name] = values
    return out


class FaissStore(GalleryStore):
    """A gallery folder (see the module docstring).  Open it with :func:`open_store` or
    ``FaissStore(path, dim=512, create=True, index={"kind": "ivf_pq", "nlist": 4096})``."""

    engine = "faiss"

    def __init__(self, path: str, dim: Optional[int] = None, create: bool = False, index: Optional[dict] = None):
        self.path = os.path.abspath(os.fspath(path))
        self.location = self.path
        self.crop_dir = os.path.join(self.path, "crops")
        self._mutex = threading.RLock()  # this process's writers and refreshes
        self._stat = None
        self._manifest: Dict[str, Any] = {}
        self._meta_cache: Tuple[int, Dict[str, Any]] = (-1, {})
        self._closed = False
        self._table: Optional[ItemTable] = None
        self._events_read = 0
        self._loaded = None
        if not is_store_folder(self.path):
            if not create:
                raise StoreMissingError(
                    f"{self.path}: no gallery store here (no {MANIFEST}); create one with "
                    f"tools/search.py build --store {path} (or open_store(path, dim=..., create=True))"
                )
            self._create(dim, index)
        with self._try_writer() as got:
            if got:
                self._clean_leftovers()
        self._refresh(force=True)
        if dim is not None and int(dim) != self.dim:
            raise StoreError(f"{self.path} holds {self.dim}-dimensional vectors, not {dim}")
        if index is not None and index_spec(**index) != self._manifest["index"]:
            raise StoreError(f"{self.path} was created with the index {self._manifest['index']}, not {index}")

    # ------------------------------------------------------------------ files
    def _gen_dir(self, generation: Optional[int] = None) -> str:
        return os.path.join(self.path, f"gen-{generation or self._manifest['generation']:06d}")

    def _event(self, e: int, kind: str, generation: Optional[int] = None) -> str:
        return os.path.join(self._gen_dir(generation), f"{e:06d}.{kind}")

    def _meta_file(self, n: int) -> str:
        return os.path.join(self.path, f"meta-{n:06d}.json")

    def _create(self, dim, index) -> None:
        if dim is None:
            raise StoreError(f"{self.path}: creating a gallery store needs the vector dimension (dim=...)")
        dim = records.check_dim(dim, "dim")
        if os.path.exists(self.path) and (not os.path.isdir(self.path) or os.listdir(self.path)):
            raise StoreError(f"{self.path} exists and is not an empty folder nor a gallery store")
        os.makedirs(self.path, exist_ok=True)
        with self._writer():
            if is_store_folder(self.path):  # another process created it meanwhile
                return
            from reid_srdl import __version__

            spec = index_spec(**(index or {}))
            check_index(spec, dim, self.path)
            os.makedirs(self._gen_dir(1), exist_ok=True)
            self._write_manifest(
                {
                    "format": FORMAT,
                    "written_by": f"reid_srdl {__version__}",
                    "dim": dim,
                    "index": spec,
                    "generation": 1,
                    "events": 0,
                    "meta": 0,
                    "trained": False,
                }
            )

    def _write_manifest(self, manifest: Dict[str, Any]) -> None:
        data = (json.dumps(manifest, indent=1) + "\n").encode("utf-8")
        write_durable(os.path.join(self.path, MANIFEST), lambda f: f.write(data))
        self._manifest = manifest

    def _read_manifest(self) -> Dict[str, Any]:
        path = os.path.join(self.path, MANIFEST)
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise StoreError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; not a manifest of this store")
        m = records.parse_json(data, path)
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise StoreError(f"{path}: not a {FORMAT} manifest")
        out = dict(m)
        out["dim"] = records.check_dim(m.get("dim"), f"{path} dim")
        for key, low in (("generation", 1), ("events", 0), ("meta", 0)):
            out[key] = records.check_int(m.get(key), f"{path} {key}", low, 10**12)
        if not isinstance(m.get("trained"), bool):
            raise StoreError(f"{path} trained: expected true or false")
        index = m.get("index")
        if not isinstance(index, dict):
            raise StoreError(f"{path} index: expected an object")
        try:
            out["index"] = index_spec(**index)
        except (StoreError, TypeError) as e:
            raise StoreError(f"{path} index: {e}") from None
        check_index(out["index"], out["dim"], f"{path} index")
        return out

    # ------------------------------------------------------------------ locking
    @contextlib.contextmanager
    def _writer(self):
        """This process's mutex, then the folder's exclusive flock (other processes)."""
        with self._mutex:
            fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    @contextlib.contextmanager
    def _try_writer(self):
        with self._mutex:
            fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    got = True
                except BlockingIOError:
                    got = False
                yield got
            finally:
                os.close(fd)

    def _clean_leftovers(self) -> None:
        """Under the lock (every write of the store holds it, so a temporary file here is a
        killed write's): temporary files, events past the manifest's count
        (an add killed before its manifest was renamed), old generations and meta files."""
        m = self._read_manifest()
        gen = f"gen-{m['generation']:06d}"
        removed = 0
        for name in os.listdir(self.path):
            full = os.path.join(self.path, name)
            if is_temp(name) or (name.startswith("gen-") and name != gen and os.path.isdir(full)):
                shutil.rmtree(full) if os.path.isdir(full) else os.remove(full)
                removed += 1
            elif name.startswith("meta-") and name != os.path.basename(self._meta_file(m["meta"])):
                os.remove(full)
                removed += 1
        # Crops are written by their producer (ingest), outside the store's lock: not touched here.
        folder = os.path.join(self.path, gen)
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            number = name.split(".", 1)[0]
            if is_temp(name) or (number.isascii() and number.isdigit() and int(number) > m["events"]):
                os.remove(os.path.join(folder, name))
                removed += 1
        if removed:
            log.info("%s: removed %d file(s) left by an interrupted write", self.path, removed)

    # ------------------------------------------------------------------ reading
    def _refresh(self, force: bool = False) -> None:
        """Catch up with the manifest on disk (new events only, or all after a compaction)."""
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")
        try:
            st = os.stat(os.path.join(self.path, MANIFEST))
        except FileNotFoundError:
            raise StoreError(f"{self.path}: the gallery store was removed ({MANIFEST} is gone)") from None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._stat and not force:
            return
        with self._mutex:
            for attempt in range(5):
                try:
                    self._load(self._read_manifest())
                    self._stat = key
                    return
                except FileNotFoundError as e:  # a compaction removed the generation being read
                    if attempt == 4:
                        raise StoreError(f"{e.filename} is missing, although {self.path}/{MANIFEST} lists it") from None
                    st = os.stat(os.path.join(self.path, MANIFEST))
                    key = (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, m: Dict[str, Any]) -> None:
        old = self._table
        same = old is not None and self._loaded == (m["generation"], m["dim"], m["index"])
        table = old if same else ItemTable(m["dim"], m["index"])
        first = self._events_read + 1 if same else 1
        if same and m["events"] < self._events_read:
            raise StoreError(f"{self.path}/{MANIFEST}: events went back from {self._events_read} to {m['events']}")
        for e in range(first, m["events"] + 1):
            tomb = self._event(e, "del.npy", m["generation"])
            if os.path.exists(tomb):
                ids = np.array(read_npy(tomb, "<i8", 1))
                table.kill(ids)
            else:
                vectors, cols = self._read_segment(e, m)
                live = [i for i in cols["ids"].tolist() if i in table.row_of]
                if live:
                    raise StoreError(f"{self._event(e, 'items.npz', m['generation'])}: id {live[0]} is already stored")
                table.append_columns(vectors, cols)
        if m["trained"] and not table.trained:
            self._load_trained(table, m)
        self._table, self._manifest, self._events_read = table, m, m["events"]
        self._loaded = (m["generation"], m["dim"], m["index"])

    def _read_segment(self, e: int, m: Dict[str, Any]) -> Tuple[np.ndarray, Dict[str, Any]]:
        vec_path = self._event(e, "vec.npy", m["generation"])
        vectors = read_npy(vec_path, "<f4", 2)
        n = vectors.shape[0]
        if vectors.shape[1] != m["dim"] or n > records.MAX_SEGMENT:
            raise StoreError(f"{vec_path}: shape {vectors.shape}; expected (<= {records.MAX_SEGMENT}, {m['dim']})")
        if not np.isfinite(vectors).all():
            raise StoreError(f"{vec_path}: vectors contain NaN or inf")
        if m["index"]["kind"] == "flat":
            vectors = np.array(vectors)  # faiss copies them anyway; drop the mapping
        items_path = self._event(e, "items.npz", m["generation"])
        cols = check_columns(read_npz(items_path, ITEM_COLUMNS), n, items_path)
        return vectors, cols

    def _load_trained(self, table: ItemTable, m: Dict[str, Any]) -> None:
        path = os.path.join(self._gen_dir(m["generation"]), "trained.npz")
        expected = {"centroids": ("<f4", 2)}
        if m["index"]["kind"] == "ivf_pq":
            expected["pq_centroids"] = ("<f4", 1)
        from reid_srdl.index.checks import SearchIndexError

        try:
            table.load_trained(read_npz(path, expected))
        except SearchIndexError as e:
            raise StoreError(f"{path}: {e}") from None

    # ------------------------------------------------------------------ the interface
    @property
    def dim(self) -> int:
        return self._manifest["dim"]

    @property
    def index(self) -> Dict[str, Any]:
        return dict(self._manifest["index"])

    def __len__(self) -> int:
        self._refresh()
        return len(self._table)

    def add(self, vectors: np.ndarray, items: Sequence[GalleryItem]) -> int:
        vectors = records.check_vectors(vectors, self.dim, "vectors to add")
        items = records.check_items(items, len(vectors), "items to add")
        with self._writer():
            self._refresh()
            table = self._table
            fresh, seen = [], set()
            for i, it in enumerate(items):
                if it.id not in table.row_of and it.id not in seen:
                    seen.add(it.id)
                    fresh.append(i)
            if len(fresh) < len(items):
                log.info("%s: %d of %d items already stored, skipped", self.path, len(items) - len(fresh), len(items))
            if not fresh:
                return 0
            m = dict(self._manifest)
            e = m["events"]
            batches = []
            for s in range(0, len(fresh), records.MAX_SEGMENT):
                rows = fresh[s : s + records.MAX_SEGMENT]
                vecs = vectors[rows]
                cols = columns_of([items[r] for r in rows], [items[r].id for r in rows])
                e += 1
                self._write_segment(e, vecs, cols)
                batches.append((vecs, cols))
            m["events"] = e
            self._write_manifest(m)  # the commit point
            self._events_read = e
            for vecs, cols in batches:
                table.append_columns(vecs, cols)
            if table.needs_training():
                self._train(table, m)
            self._stat = self._manifest_stat()
        return len(fresh)

    def _manifest_stat(self):
        st = os.stat(os.path.join(self.path, MANIFEST))
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _write_segment(self, e: int, vectors: np.ndarray, cols: Dict[str, Any]) -> None:
        arrays = {k: v for k, v in cols.items() if k not in TEXT_COLUMNS}
        arrays.update({k: _json_bytes(cols[k]) for k in TEXT_COLUMNS})
        write_npy(self._event(e, "vec.npy"), vectors)
        write_npz(self._event(e, "items.npz"), arrays)

    def _train(self, table: ItemTable, m: Dict[str, Any]) -> None:
        log.info("%s: training the %s index on %d items", self.path, m["index"]["kind"], m["index"]["train_size"])
        state = table.train()
        write_npz(os.path.join(self._gen_dir(), "trained.npz"), state)
        self._write_manifest(dict(m, trained=True))

    def search(self, queries: np.ndarray, k: int, filters=None) -> StoreHits:
        self._refresh()
        q = records.check_vectors(queries, self.dim, "queries")
        return self._table.search(q, records.check_k(k), records.check_filters(filters, len(q)))

    def get(self, ids: Sequence[int]) -> List[Optional[GalleryItem]]:
        self._refresh()
        return self._table.get(records.check_ids(ids, "ids"))

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        self._refresh()
        return self._table.vectors(records.check_ids(ids, "ids"), self.path)

    def scan(self, batch_size: int = 65536) -> Iterator[Tuple[np.ndarray, List[GalleryItem]]]:
        self._refresh()
        table = self._table
        rows = table.live_rows()
        for s in range(0, len(rows), batch_size):
            part = rows[s : s + batch_size]
            with table.lock:
                yield table.gather(part), [table.item(int(r)) for r in part]

    def delete(self, request: DeleteRequest) -> List[GalleryItem]:
        request = records.check_delete(request)
        with self._writer():
            self._refresh()
            table = self._table
            rows = table.delete_rows(request)
            if not len(rows):
                return []
            removed = [table.item(int(r)) for r in rows]
            ids = table.ids.view()[rows].copy()
            m = dict(self._manifest)
            m["events"] += 1
            write_npy(self._event(m["events"], "del.npy"), ids)
            self._write_manifest(m)
            self._events_read = m["events"]
            table.kill(ids)
            self._stat = self._manifest_stat()
        remove_crops(removed, self.crop_dir)
        return removed

    def compact(self) -> int:
        """Rewrite the live items into a new generation and remove the old one (O(live)):
        deleted items leave the disk.  Returns the number of deleted rows erased."""
        with self._writer():
            self._refresh()
            table, m = self._table, dict(self._manifest)
            erased = table.rows - len(table)
            if erased == 0 and m["events"] <= 1:
                return 0
            old_gen = self._gen_dir()
            new = dict(m, generation=m["generation"] + 1, events=0, trained=False)
            os.makedirs(self._gen_dir(new["generation"]), exist_ok=True)
            rows = table.live_rows()
            self._manifest = new  # _event() names files in the new generation
            try:
                for s in range(0, len(rows), COMPACT_SEGMENT):
                    part = rows[s : s + COMPACT_SEGMENT]
                    items = [table.item(int(r)) for r in part]
                    new["events"] += 1
                    self._write_segment(new["events"], table.gather(part), columns_of(items, table.ids.view()[part]))
                if table.trained:
                    write_npz(os.path.join(self._gen_dir(), "trained.npz"), table._trained.trained_state())
                    new["trained"] = True
                self._write_manifest(new)
            except BaseException:
                self._manifest = m
                shutil.rmtree(self._gen_dir(new["generation"]), ignore_errors=True)
                raise
            shutil.rmtree(old_gen, ignore_errors=True)
            fsync_dir(self.path)
            self._refresh(force=True)
        return erased

    def get_meta(self) -> Dict[str, Any]:
        self._refresh()
        n = self._manifest["meta"]
        if n == 0:
            return {}
        if self._meta_cache[0] != n:
            path = self._meta_file(n)
            try:
                with open(path, "rb") as f:
                    data = f.read(records.MAX_META_BYTES + 1)
            except FileNotFoundError:
                self._refresh(force=True)  # replaced meanwhile
                return self.get_meta()
            self._meta_cache = (n, records.check_meta(records.parse_json(data, path), path))
        return dict(self._meta_cache[1])

    def set_meta(self, meta: Dict[str, Any]) -> None:
        meta = records.check_meta(meta, "meta to store")
        data = json.dumps(meta).encode("utf-8")
        with self._writer():
            self._refresh()
            m = dict(self._manifest)
            old = m["meta"]
            m["meta"] = old + 1
            write_durable(self._meta_file(m["meta"]), lambda f: f.write(data))
            self._write_manifest(m)
            self._stat = self._manifest_stat()
            if old:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self._meta_file(old))

    def close(self) -> None:
        self._closed = True
        self._table = None


def remove_crops(items: Sequence[GalleryItem], crop_dir: Optional[str]) -> int:
    """Delete the crop files of ``items`` that lie inside ``crop_dir`` (symlinks resolved; a
    relative crop path is relative to the folder holding ``crop_dir``, e.g. ``crops/a.jpg``);
    a crop path elsewhere is left alone (a gallery never makes us delete outside its folder)."""
    if not crop_dir:
        return 0
    root = os.path.realpath(crop_dir)
    base = os.path.dirname(os.path.abspath(crop_dir))
    removed = 0
    for it in items:
        if not it.crop:
            continue
        path = os.path.realpath(it.crop if os.path.isabs(it.crop) else os.path.join(base, it.crop))
        if os.path.commonpath([path, root]) != root or path == root:
            log.warning("crop %s of a deleted item is outside %s: left in place", it.crop, crop_dir)
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            removed += 1
    return removed
