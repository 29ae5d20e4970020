"""Gallery stores: one interface (:mod:`.base`), one engine per module, chosen by
:func:`open_store` from a path or a URI.

faiss   a folder on disk (append-only segments + a manifest; the default)   :mod:`.faiss_store`
milvus  pymilvus: a Milvus Lite ``*.db``, or a Milvus server at ``http(s)://host:port``
        (the optional ``milvus`` extra; pymilvus is imported in :mod:`.milvus_store` only)
npz     a gallery file of the first releases, read-only                       :mod:`.npz_store`
"""

import os
from typing import Optional

from reid_srdl.search.stores.base import (  # noqa: F401  (the interface, re-exported)
    MAX_K,
    DeleteRequest,
    GalleryItem,
    GalleryStore,
    SearchFilter,
    StoreError,
    StoreHits,
    StoreMissingError,
    item_id,
)


def store_kind(path_or_uri: str) -> str:
    """``"milvus"`` for ``http(s)://`` and ``*.db``, ``"npz"`` for ``*.npz``, else ``"faiss"``."""
    text = os.fspath(path_or_uri)
    if text.startswith(("http://", "https://")):
        return "milvus"
    if "://" in text:
        raise StoreError(f"{text}: a store is a folder, a *.db file, or an http(s)://host:port Milvus URI")
    if text.endswith(".db"):
        return "milvus"
    if text.endswith(".npz"):
        return "npz"
    return "faiss"


def open_store(
    path_or_uri,
    dim: Optional[int] = None,
    create: bool = False,
    index: Optional[dict] = None,
    collection: Optional[str] = None,
    crop_dir: Optional[str] = None,
) -> GalleryStore:
    """Open (or, with ``create=True`` and ``dim``, create) the gallery at ``path_or_uri``:

    * a folder -> :class:`~.faiss_store.FaissStore` (``index``: ``{"kind": "flat"}`` by
      default, or ``{"kind": "ivf_pq", "nlist": ..., "pq_m": ..., "nprobe": ...}``);
    * ``*.db`` -> Milvus Lite in this process; ``http(s)://host:port`` -> a Milvus server
      (``index``: ``{"kind": "FLAT"}`` by default, ``IVF_FLAT`` or ``HNSW``; ``collection``
      names the collection, ``crop_dir`` the folder of crops the gallery owns);
    * ``*.npz`` -> a gallery file of the first releases, read-only (convert it with
      ``tools/search.py convert OLD.npz --store NEW``).

    ``dim`` and ``index``, when given for an existing gallery, must match what it holds.
    """
    kind = store_kind(path_or_uri)
    text = os.fspath(path_or_uri)
    if kind == "milvus":
        from reid_srdl.search.stores.milvus_store import DEFAULT_COLLECTION, MilvusStore

        return MilvusStore(
            text, dim=dim, create=create, index=index, collection=collection or DEFAULT_COLLECTION, crop_dir=crop_dir
        )
    if collection is not None or crop_dir is not None:
        raise StoreError(f"{text}: collection= and crop_dir= apply to Milvus galleries only")
    if kind == "npz":
        from reid_srdl.search.stores.npz_store import NpzStore

        if create:
            raise StoreError(f"{text}: .npz galleries are read-only here; create a store folder or a Milvus gallery")
        return NpzStore.load(text, read_only=True)
    from reid_srdl.search.stores.faiss_store import FaissStore

    return FaissStore(text, dim=dim, create=create, index=index)
