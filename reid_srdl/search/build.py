"""Opening a gallery, and building one from images: what :class:`ReIDSearcher`'s
``store=``, :meth:`~ReIDSearcher.from_images` and :meth:`~ReIDSearcher.load` do."""

import os
from typing import Optional, Tuple

from reid_srdl.search import provenance, request
from reid_srdl.search.embedder import Embedder
from reid_srdl.search.stores import GalleryStore, StoreMissingError, open_store, store_kind
from reid_srdl.search.stores.npz_store import NpzStore, items_from_arrays


def open_gallery(store, dim: Optional[int] = None, index: Optional[dict] = None) -> GalleryStore:
    """A GalleryStore as given, an ``.npz`` read into memory (writable; ``save`` writes it), or
    :func:`~reid_srdl.search.stores.open_store` (created when ``dim`` is given and nothing is
    there yet)."""
    if isinstance(store, GalleryStore):
        return store
    if store_kind(store) == "npz":
        return NpzStore.load(store)
    return open_store(store, dim=dim, create=dim is not None, index=index)


def embed_into(model, paths, pids, camids, store=None, index=None, allow_mismatch=False, skip_unreadable=False,
               **embedding) -> Tuple[GalleryStore, Embedder]:  # fmt: skip
    """Embed image files into a new in-memory gallery (``store`` None) or into ``store``
    (created with ``index`` when missing).  An existing store that records another model or
    other settings is refused before anything is embedded; the gallery records the model."""
    embedder, paths = Embedder(model, **embedding), [os.fspath(p) for p in paths]
    pids, camids = request.ids_of_images(len(paths), pids, camids)
    target = None
    if store is not None:
        try:
            target = open_gallery(store)
            provenance.record(target.get_meta(), embedder, target.location, allow_mismatch)
        except StoreMissingError:
            pass
    feats, kept = embedder.embed_files(paths, skip_unreadable)
    kept_paths = [paths[i] for i in kept]
    if store is None:
        target = NpzStore.from_arrays(feats, pids[kept], camids[kept], kept_paths)
    else:
        target = target or open_gallery(store, feats.shape[1], index)
        target.add(feats, items_from_arrays(feats, pids[kept], camids[kept], kept_paths, len(target), "images"))
    target.set_meta(provenance.record(target.get_meta(), embedder, target.location, allow_mismatch))
    return target, embedder
