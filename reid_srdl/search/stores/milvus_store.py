"""A gallery in Milvus, through pymilvus' ``MilvusClient`` (the optional ``milvus`` extra).

The same calls serve every deployment:

* a local ``*.db`` path: Milvus Lite in this process (PyPI ``milvus-lite`` 3.x, a Python
  implementation of the Milvus API whose ``.db`` is a folder; one process per path);
* ``http(s)://host:port``: any server that speaks the Milvus protocol -- Milvus standalone or
  distributed, or ``milvus-lite server --data-dir D --port P``, which lets several processes
  share one gallery.

One collection holds the items (``id`` INT64 primary key = :func:`~.base.item_id`, ``vector``
FLOAT_VECTOR, ``source``/``camera``/``crop`` VARCHAR, ``timestamp`` DOUBLE nullable,
``frame``/``track``/``pid`` INT64, ``box`` ARRAY<INT64>[4], ``[-1]*4`` for none); a second,
``<name>_meta``, holds the gallery metadata (fingerprint, settings, calibration) as versioned
JSON chunks, so a reader never sees half of a new version.  Consistency is Strong: an add
or a delete acknowledged by one process is seen by the next search of any other.

Distances: Milvus' L2 metric is the squared distance; the store fetches ``k`` plus a margin
(``rescore * k`` for IVF/HNSW) with their vectors and re-ranks them with float64 distances
from the stored float32 vectors, as the folder store does, so both stores return the same
ids and distances (within 1e-5).  Index: ``FLAT`` (exact, the default), ``IVF_FLAT``
(``nlist``, ``nprobe``) or ``HNSW`` (``M``, ``efConstruction``, ``ef``).

Filters become Milvus expressions; strings (camera names are a stranger's text) are quoted
with every backslash and quote escaped after :mod:`.records` refused control characters, so
a camera called ``c1" or camera != "`` is just a camera name.  Rows read back are checked
field by field (:func:`~.records.item_from_dict`).

An add of more than 2048 items is sent in requests of 2048 rows: if one fails, the earlier
ones stay, and running the same add again completes it (ids are deterministic, items already
there are skipped).  Writers: Milvus serialises them itself; ``milvus-lite server`` does not (its documentation
says writes must be serialised), so adds and deletes to a server on this machine's loopback
take a file lock in the temporary folder, shared by every process of this machine.
"""

import contextlib
import fcntl
import math
import os
import re
import secrets
import tempfile
import threading
import urllib.parse
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from reid_srdl.search.stores import records
from reid_srdl.search.stores.base import (
    MAX_K,
    DeleteRequest,
    GalleryItem,
    GalleryStore,
    SearchFilter,
    StoreError,
    StoreHits,
    StoreMissingError,
)
from reid_srdl.search.stores.faiss_store import remove_crops
from reid_srdl.search.stores.table import GATHER_FLOATS, RERANK_MARGIN

_IMPORT_ERROR = None
try:
    import pymilvus
    from pymilvus import DataType, MilvusClient
    from pymilvus.exceptions import MilvusException
except ImportError as _e:  # the optional extra
    pymilvus = None
    _IMPORT_ERROR = _e

FORMAT = "reid_srdl.milvus_store/1"
DEFAULT_COLLECTION = "reid_gallery"
INDEX_KINDS = ("FLAT", "IVF_FLAT", "HNSW")
# Milvus counts VARCHAR lengths in bytes: a character of UTF-8 takes at most 4.
SOURCE_BYTES = 4 * records.MAX_TEXT
CAMERA_BYTES = 4 * records.MAX_CAMERA
CHUNK_CHARS = 16000  # meta JSON per row: 4 bytes each fits Milvus' 65535-byte VARCHAR
QUERY_LIMIT = 16384  # Milvus' limit on offset + limit of one query
WRITE_ROWS = 2048  # rows per insert request
ITEM_FIELDS = ["source", "camera", "timestamp", "frame", "box", "track", "pid", "crop"]
NO_BOX = [-1, -1, -1, -1]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")

_lite_users: Dict[str, int] = {}  # Milvus Lite paths opened by this process -> open stores
_lite_mutex = threading.Lock()


def require_pymilvus() -> None:
    if pymilvus is None:
        raise StoreError(
            f"a Milvus gallery needs the milvus extra ({getattr(_IMPORT_ERROR, 'name', 'pymilvus')} is missing): "
            f'pip install -e ".[milvus]"'
        )


def index_spec(kind: str = "FLAT", **options) -> Dict[str, Any]:
    """A checked Milvus index description (see the module docstring)."""
    kind = str(kind).upper()
    if kind not in INDEX_KINDS:
        raise StoreError(f"Milvus index kind must be one of {', '.join(INDEX_KINDS)}; got {kind!r}")
    defaults = {
        "FLAT": {},
        "IVF_FLAT": {"nlist": 1024, "nprobe": 16, "rescore": 4},
        "HNSW": {"M": 16, "efConstruction": 200, "ef": 64, "rescore": 4},
    }[kind]
    unknown = set(options) - set(defaults)
    if unknown:
        raise StoreError(
            f"unknown {kind} option(s) {', '.join(sorted(unknown))}; known: {', '.join(defaults) or 'none'}"
        )
    spec = {"kind": kind, **defaults, **options}
    for key in defaults:
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65536:
            raise StoreError(f"{kind} option {key}: expected an integer in 1..65536, got {value!r}")
    return spec


def quote(text: str) -> str:
    """A Milvus string literal of ``text`` (checked: no control characters)."""
    text = records.check_text(text, "a string in a filter", records.MAX_TEXT)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise StoreError(f"a number in a filter must be finite, got {value!r}")
    return repr(float(value))


def filter_expr(f: Optional[SearchFilter]) -> str:
    """The Milvus expression of a (checked) SearchFilter; "" admits everything."""
    if f is None:
        return ""
    parts = []
    if f.cameras is not None:
        parts.append(f"camera in [{', '.join(quote(c) for c in f.cameras)}]" if f.cameras else "id < 0")
    if f.exclude_cameras:
        parts.append(f"camera not in [{', '.join(quote(c) for c in f.exclude_cameras)}]")
    if f.time_from is not None or f.time_to is not None:
        parts.append("timestamp is not null")  # a comparison with null is false anyway; said plainly
        if f.time_from is not None:
            parts.append(f"timestamp >= {_number(f.time_from)}")
        if f.time_to is not None:
            parts.append(f"timestamp <= {_number(f.time_to)}")
    if f.exclude_pid_camera is not None and f.exclude_pid_camera[0] >= 0:
        pid, camera = f.exclude_pid_camera
        parts.append(f"not (pid == {int(pid)} and camera == {quote(camera)})")
    if f.exclude_ids:
        parts.append(f"id not in [{', '.join(str(int(i)) for i in f.exclude_ids)}]")
    return " and ".join(f"({p})" for p in parts)


def delete_expr(r: DeleteRequest) -> str:
    parts = []
    if r.ids is not None:
        parts.append(f"id in [{', '.join(str(int(i)) for i in r.ids)}]" if r.ids else "id < 0")
    if r.pid is not None:
        parts.append(f"pid == {int(r.pid)}")
    if r.track is not None:
        parts.append(f"track == {int(r.track)}")
    if r.camera is not None:
        parts.append(f"camera == {quote(r.camera)}")
    if r.before is not None:
        parts.append(f"(timestamp is not null and timestamp < {_number(r.before)})")
    return " and ".join(f"({p})" for p in parts)


def _is_loopback(uri: str) -> bool:
    host = urllib.parse.urlparse(uri).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


class MilvusStore(GalleryStore):
    """A gallery in a Milvus collection (see the module docstring)."""

    engine = "milvus"

    def __init__(
        self,
        uri: str,
        dim: Optional[int] = None,
        create: bool = False,
        index: Optional[dict] = None,
        collection: str = DEFAULT_COLLECTION,
        crop_dir: Optional[str] = None,
        token: str = "",
        timeout: float = 30.0,
    ):
        require_pymilvus()
        if not _NAME.match(collection):
            raise StoreError(f"Milvus collection name must be letters, digits and _; got {collection!r}")
        self.uri = uri
        self.lite = not uri.startswith(("http://", "https://"))
        self.location = os.path.abspath(uri) if self.lite else uri
        self.collection, self.meta_collection = collection, f"{collection}_meta"
        if crop_dir is None and self.lite:
            crop_dir = os.path.splitext(self.location)[0] + ".crops"
        self.crop_dir = crop_dir
        self._timeout = timeout
        self._mutex = threading.RLock()
        if self.lite and not create and not os.path.exists(self.location):
            # Milvus Lite would create an empty database there: say it is missing instead.
            raise StoreMissingError(
                f"{self.location}: no gallery here; create one with tools/search.py build --store {uri} "
                f"(or open_store(path, dim=..., create=True))"
            )
        if self.lite and create:
            os.makedirs(os.path.dirname(self.location), exist_ok=True)
        self._client = self._connect(token)
        try:
            self._open(dim, create, index)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ connection
    def _connect(self, token: str):
        from pymilvus.exceptions import ConnectionConfigException

        if self.lite:
            parent = os.path.dirname(self.location)
            if not os.path.isdir(parent):
                raise StoreError(f"{self.location}: folder {parent} does not exist")
            if os.path.exists(self.location) and not os.path.isdir(self.location):
                raise StoreError(
                    f"{self.location} is a file; Milvus Lite 3.x keeps a .db as a folder (a file from the "
                    f"old milvus-lite 2.x cannot be read: export it with that version, then import)"
                )
        try:
            # dedicated: a channel of this store's own; pymilvus' shared channels are health-checked
            # after 30 s idle with a short timeout, and a busy server then looks dead.
            client = MilvusClient(
                uri=self.location if self.lite else self.uri, token=token, timeout=self._timeout, dedicated=True
            )
        except ConnectionConfigException as e:
            if self.lite and "Open local milvus failed" in str(e):
                raise StoreError(
                    f"{self.location} is open in another process (Milvus Lite serves one process per .db): run "
                    f"`milvus-lite server --data-dir {self.location} --port 19530` and pass "
                    f"--store http://127.0.0.1:19530 to every process"
                ) from None
            raise StoreError(f"{self.uri}: cannot open Milvus ({_message(e)})") from None
        except MilvusException as e:
            raise StoreError(f"{self.uri}: cannot reach Milvus ({_message(e)})") from None
        if self.lite:
            with _lite_mutex:
                _lite_users[self.location] = _lite_users.get(self.location, 0) + 1
        return client

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MilvusException as e:
            raise StoreError(f"{self.location} collection {self.collection}: {what} failed ({_message(e)})") from None

    @contextlib.contextmanager
    def _writing(self):
        """This process's writers one at a time; with a server on this machine's loopback,
        every process's (``milvus-lite server`` does not serialise writers itself)."""
        with self._mutex:
            if self.lite or not _is_loopback(self.uri):
                yield
                return
            u = urllib.parse.urlparse(self.uri)
            path = os.path.join(tempfile.gettempdir(), f"reid_srdl-milvus-{u.hostname}-{u.port}.lock")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    # ------------------------------------------------------------------ schema
    def _open(self, dim, create: bool, index) -> None:
        c = self._client
        exists = self._call("has_collection", c.has_collection, self.collection)
        if not exists:
            if not create:
                raise StoreMissingError(
                    f"{self.location}: no gallery collection {self.collection!r}; create one with "
                    f"tools/search.py build --store {self.uri} (or open_store(uri, dim=..., create=True))"
                )
            if dim is None:
                raise StoreError(f"{self.location}: creating a gallery needs the vector dimension (dim=...)")
            self._create(records.check_dim(dim, "dim"), index_spec(**(index or {})))
        self._check_schema()
        for name in (self.collection, self.meta_collection):
            self._call("load", c.load_collection, name)
        head = self._head()
        if head.get("format") != FORMAT:
            raise StoreError(f"{self.location} collection {self.meta_collection}: not a {FORMAT} gallery")
        try:
            self.index = index_spec(**head.get("index", {}))
        except (StoreError, TypeError) as e:
            raise StoreError(f"{self.location} collection {self.meta_collection} index: {e}") from None
        if dim is not None and int(dim) != self.dim:
            raise StoreError(f"{self.location} holds {self.dim}-dimensional vectors, not {dim}")
        if index is not None and index_spec(**index) != self.index:
            raise StoreError(f"{self.location} was created with the index {self.index}, not {index}")

    def _create(self, dim: int, spec: Dict[str, Any]) -> None:
        c = self._client
        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("id", DataType.INT64, is_primary=True)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        s.add_field("source", DataType.VARCHAR, max_length=SOURCE_BYTES)
        s.add_field("camera", DataType.VARCHAR, max_length=CAMERA_BYTES)
        s.add_field("timestamp", DataType.DOUBLE, nullable=True)
        s.add_field("frame", DataType.INT64)
        s.add_field("box", DataType.ARRAY, element_type=DataType.INT64, max_capacity=4)
        s.add_field("track", DataType.INT64)
        s.add_field("pid", DataType.INT64)
        s.add_field("crop", DataType.VARCHAR, max_length=SOURCE_BYTES)
        params = {k: spec[k] for k in ("nlist", "M", "efConstruction") if k in spec}
        ip = c.prepare_index_params()
        ip.add_index(field_name="vector", index_type=spec["kind"], metric_type="L2", params=params)
        m = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        m.add_field("key", DataType.INT64, is_primary=True)
        m.add_field("text", DataType.VARCHAR, max_length=4 * CHUNK_CHARS)
        m.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
        mp = c.prepare_index_params()
        mp.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
        with self._writing():
            self._call("create", c.create_collection, self.meta_collection, schema=m, index_params=mp,
                       consistency_level="Strong")  # fmt: skip
            self._write_head({"format": FORMAT, "index": spec, "version": 0, "chunks": 0})
            self._call("create", c.create_collection, self.collection, schema=s, index_params=ip,
                       consistency_level="Strong")  # fmt: skip

    def _check_schema(self) -> None:
        d = self._call("describe", self._client.describe_collection, self.collection)
        fields = {f["name"]: f for f in d.get("fields", [])}
        expected = {"id": DataType.INT64, "vector": DataType.FLOAT_VECTOR, "source": DataType.VARCHAR,
                    "camera": DataType.VARCHAR, "timestamp": DataType.DOUBLE, "frame": DataType.INT64,
                    "box": DataType.ARRAY, "track": DataType.INT64, "pid": DataType.INT64,
                    "crop": DataType.VARCHAR}  # fmt: skip
        for name, dtype in expected.items():
            if name not in fields or fields[name].get("type") != dtype:
                raise StoreError(
                    f"{self.location} collection {self.collection} is not a reid_srdl gallery "
                    f"(field {name!r} missing or not {dtype.name})"
                )
        self.dim = records.check_dim(fields["vector"].get("params", {}).get("dim"), f"{self.location} vector dim")
        if not self._call("has_collection", self._client.has_collection, self.meta_collection):
            raise StoreError(f"{self.location}: collection {self.meta_collection} (the gallery's metadata) is missing")

    # ------------------------------------------------------------------ metadata rows
    def _rows(self, collection: str, ids: Sequence[int], fields: List[str]) -> List[dict]:
        out = []
        for s in range(0, len(ids), 1000):
            part = list(ids[s : s + 1000])
            out.extend(
                self._call(
                    "get", self._client.get, collection, ids=part, output_fields=fields, consistency_level="Strong"
                )
            )
        return out

    def _head(self) -> Dict[str, Any]:
        rows = self._rows(self.meta_collection, [0], ["text"])
        if not rows:
            raise StoreError(f"{self.location} collection {self.meta_collection}: no head row; not a reid_srdl gallery")
        head = records.parse_json(rows[0].get("text"), f"{self.location} {self.meta_collection} head")
        if not isinstance(head, dict):
            raise StoreError(f"{self.location} {self.meta_collection} head: expected an object")
        for key, high in (("version", 1 << 40), ("chunks", (1 << 20) - 1)):  # keys (version << 20) + chunk
            head[key] = records.check_int(head.get(key), f"{self.location} {self.meta_collection} head {key}", 0, high)
        return head

    def _write_head(self, head: Dict[str, Any]) -> None:
        import json

        row = {"key": 0, "text": json.dumps(head), "vector": [0.0, 0.0]}
        self._call("write metadata", self._client.upsert, self.meta_collection, [row])

    # ------------------------------------------------------------------ the interface
    def __len__(self) -> int:
        res = self._call(
            "count", self._client.query, self.collection, filter="", output_fields=["count(*)"],
            consistency_level="Strong",
        )  # fmt: skip
        return int(res[0]["count(*)"])

    def add(self, vectors: np.ndarray, items: Sequence[GalleryItem]) -> int:
        vectors = records.check_vectors(vectors, self.dim, "vectors to add")
        items = records.check_items(items, len(vectors), "items to add")
        with self._writing():
            order, seen = [], set()
            for i, it in enumerate(items):
                if it.id not in seen:
                    seen.add(it.id)
                    order.append(i)
            stored = {int(r["id"]) for r in self._rows(self.collection, [items[i].id for i in order], ["id"])}
            fresh = [i for i in order if items[i].id not in stored]
            for s in range(0, len(fresh), WRITE_ROWS):
                rows = [_row(items[i], vectors[i]) for i in fresh[s : s + WRITE_ROWS]]
                # upsert, not insert: two writers racing on one id leave one row, not two
                self._call("add", self._client.upsert, self.collection, rows)
        return len(fresh)

    def search(self, queries: np.ndarray, k: int, filters=None) -> StoreHits:
        q = records.check_vectors(queries, self.dim, "queries")
        k = records.check_k(k)
        flist = records.check_filters(filters, len(q))
        m = len(q)
        dist = np.full((m, k), np.inf)
        ids = np.full((m, k), -1, dtype=np.int64)
        items: List[List[GalleryItem]] = [[] for _ in range(m)]
        fetch = min(MAX_K, k + RERANK_MARGIN if self.index["kind"] == "FLAT" else self.index["rescore"] * k)
        params = {k_: self.index[k_] for k_ in ("nprobe", "ef") if k_ in self.index}
        if "ef" in params:
            params["ef"] = max(params["ef"], fetch)
        groups: Dict[Optional[SearchFilter], List[int]] = {}
        for i, f in enumerate(flist):
            groups.setdefault(f, []).append(i)
        step = max(1, GATHER_FLOATS // max(1, fetch * self.dim))
        for f, rows in groups.items():
            expr = filter_expr(f)
            for s in range(0, len(rows), step):
                part = rows[s : s + step]
                res = self._call(
                    "search", self._client.search, self.collection, data=q[part].tolist(), limit=fetch, filter=expr,
                    output_fields=ITEM_FIELDS + ["vector"], search_params={"metric_type": "L2", "params": params},
                    consistency_level="Strong",
                )  # fmt: skip
                for qi, hits in zip(part, res):
                    self._rerank(q[qi], hits, k, dist[qi], ids[qi], items, qi)
        return StoreHits(distances=dist, ids=ids, items=items)

    def _rerank(self, query, hits, k, dist_row, id_row, items, qi) -> None:
        if not hits:
            return
        where = f"{self.location} collection {self.collection}"
        vecs = np.asarray([h["entity"]["vector"] for h in hits], dtype=np.float64)
        if vecs.shape != (len(hits), self.dim) or not np.isfinite(vecs).all():
            raise StoreError(f"{where}: a stored vector is not {self.dim} finite numbers")
        d = np.sqrt(((vecs - query.astype(np.float64)) ** 2).sum(axis=1))
        order = np.argsort(d, kind="stable")[:k]
        dist_row[: len(order)] = d[order]
        id_row[: len(order)] = [records.check_int(hits[j]["id"], f"{where} id", 0, records.MAX_ID) for j in order]
        items[qi] = [records.item_from_dict(hits[j]["entity"], f"{where} item {hits[j]['id']}") for j in order]

    def _query_all(self, expr: str, fields: List[str]) -> Iterator[List[dict]]:
        """Every row matching ``expr``, in batches: id ranges split until each fits one query
        (Milvus caps offset + limit at 16384; ids are uniform hashes, so ranges split evenly)."""
        total = len(self)
        if total == 0:
            return
        pieces = max(1, math.ceil(4 * total / QUERY_LIMIT))
        step = (1 << 63) // pieces + 1
        # Inclusive ranges [lo, hi]: 2**63 itself is not an INT64 literal.
        stack = [(lo, min(lo + step, 1 << 63) - 1) for lo in range(0, 1 << 63, step)][::-1]
        where = f"({expr}) and " if expr else ""
        while stack:
            lo, hi = stack.pop()
            rows = self._call(
                "query", self._client.query, self.collection, filter=f"{where}id >= {lo} and id <= {hi}",
                output_fields=["id"] + fields, limit=QUERY_LIMIT, consistency_level="Strong",
            )  # fmt: skip
            if len(rows) >= QUERY_LIMIT and hi > lo:
                mid = (lo + hi) // 2
                stack.extend([(mid + 1, hi), (lo, mid)])
                continue
            if rows:
                yield sorted(rows, key=lambda r: r["id"])

    def _item(self, row: dict) -> GalleryItem:
        return records.item_from_dict(row, f"{self.location} collection {self.collection} item {row.get('id')}")

    def delete(self, request: DeleteRequest) -> List[GalleryItem]:
        request = records.check_delete(request)
        with self._writing():
            removed, ids = [], []
            for rows in self._query_all(delete_expr(request), ITEM_FIELDS):
                removed.extend(self._item(r) for r in rows)
                ids.extend(int(r["id"]) for r in rows)
            for s in range(0, len(ids), 1000):
                self._call("delete", self._client.delete, self.collection, ids=ids[s : s + 1000])
        remove_crops(removed, self.crop_dir)
        return removed

    def get(self, ids: Sequence[int]) -> List[Optional[GalleryItem]]:
        ids = records.check_ids(ids, "ids")
        found = {int(r["id"]): self._item(r) for r in self._rows(self.collection, ids, ITEM_FIELDS)}
        return [found.get(i) for i in ids]

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        ids = records.check_ids(ids, "ids")
        found = {int(r["id"]): r["vector"] for r in self._rows(self.collection, ids, ["vector"])}
        missing = [i for i in ids if i not in found]
        if missing:
            raise StoreError(f"{self.location}: no item with id {missing[0]}")
        return records.check_vectors([found[i] for i in ids], self.dim, f"{self.location} stored vectors")

    def scan(self, batch_size: int = 65536) -> Iterator[Tuple[np.ndarray, List[GalleryItem]]]:
        for rows in self._query_all("", ITEM_FIELDS + ["vector"]):
            vecs = records.check_vectors([r["vector"] for r in rows], self.dim, f"{self.location} stored vectors")
            yield vecs, [self._item(r) for r in rows]

    def get_meta(self) -> Dict[str, Any]:
        where = f"{self.location} collection {self.meta_collection}"
        for _attempt in range(5):
            head = self._head()
            if head["version"] == 0:
                return {}
            keys = [(head["version"] << 20) + i + 1 for i in range(head["chunks"])]
            rows = {int(r["key"]): r["text"] for r in self._rows(self.meta_collection, keys, ["text"])}
            if len(rows) == len(keys):  # else a newer version replaced these chunks meanwhile
                text = "".join(rows[key] for key in keys)
                return records.check_meta(records.parse_json(text, where), where)
        raise StoreError(f"{where}: the metadata keeps changing while it is read")

    def set_meta(self, meta: Dict[str, Any]) -> None:
        import json

        text = json.dumps(records.check_meta(meta, "meta to store"))
        chunks = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
        with self._writing():
            head = self._head()
            old = [(head["version"] << 20) + i + 1 for i in range(head["chunks"])] if head["version"] else []
            # A random version, not head + 1: two writers on two machines never write the same keys.
            version = secrets.randbelow((1 << 40) - 1) + 1
            rows = [{"key": (version << 20) + i + 1, "text": t, "vector": [0.0, 0.0]} for i, t in enumerate(chunks)]
            self._call("write metadata", self._client.upsert, self.meta_collection, rows)
            self._write_head(dict(head, version=version, chunks=len(chunks)))  # the switch: one row
            if old:
                self._call("write metadata", self._client.delete, self.meta_collection, ids=old)

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.close()
        if self.lite:
            with _lite_mutex:
                left = _lite_users.get(self.location, 1) - 1
                _lite_users[self.location] = left
            if left <= 0:
                # Stop this process's Milvus Lite server for the path: another process may open it.
                with contextlib.suppress(Exception):
                    from milvus_lite.server_manager import server_manager_instance

                    server_manager_instance.release_server(self.location)
                _lite_users.pop(self.location, None)


def _row(item: GalleryItem, vector: np.ndarray) -> Dict[str, Any]:
    return {
        "id": item.id,
        "vector": vector.tolist(),
        "source": item.source,
        "camera": item.camera,
        "timestamp": item.timestamp,
        "frame": item.frame,
        "box": list(item.box) if item.box is not None else NO_BOX,
        "track": item.track,
        "pid": item.pid,
        "crop": item.crop or "",
    }


def _message(e: Exception) -> str:
    msg = getattr(e, "message", None) or str(e)
    return " ".join(str(msg).split())[:300]
