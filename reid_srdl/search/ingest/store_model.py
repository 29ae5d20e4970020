"""Open a gallery store for adding crops embedded by a given model, with the model checked.

A store records the fingerprint of the network that made its vectors and the extraction
settings (``meta["model"]``, ``meta["settings"]``).  Adding vectors of another network, or
of other settings, would make every later search meaningless; it is refused unless the
caller says the features are comparable.  A new store records them; the recorded settings
are the defaults of the options not given.
"""

from typing import Tuple

from reid_srdl.search.embedder import FEATURE_SETTINGS, Embedder
from reid_srdl.search.fingerprint import describe_model, same_model
from reid_srdl.search.gallery import GalleryMismatchError

HINT = "pass --allow-model-mismatch only if you know the features are comparable"


def feature_dim(embedder: Embedder) -> int:
    """The embedder's feature dimension, from one blank image (known before any video frame
    is decoded, so a store of another dimension is refused first)."""
    from PIL import Image

    o = embedder.options
    return int(embedder.embed_pil([Image.new("RGB", (o["width"], o["height"]))]).shape[1])


def _check(location: str, store, meta: dict, embedder: Embedder) -> None:
    if not meta.get("model"):
        if len(store):
            raise GalleryMismatchError(
                f"{location} records no model, so its {len(store)} vectors cannot be checked against "
                f"{describe_model(embedder.fingerprint)}; {HINT}"
            )
        return
    if not same_model(meta["model"], embedder.fingerprint):
        raise GalleryMismatchError(
            f"{location} holds vectors of {describe_model(meta['model'])}, not of "
            f"{describe_model(embedder.fingerprint)}; {HINT}"
        )
    stored = meta.get("settings") or {}
    differ = [k for k in FEATURE_SETTINGS if k in stored and stored[k] != embedder.settings[k]]
    if differ:
        both = "; ".join(f"{k}: store {stored[k]!r}, asked {embedder.settings[k]!r}" for k in differ)
        raise GalleryMismatchError(f"{location} was embedded with other settings ({both}); {HINT}")


def open_store_for(location: str, model, embedding: dict, allow_mismatch: bool = False) -> Tuple:
    """``(store, embedder)``: the gallery at ``location`` (created if there is none) and an
    embedder of ``model`` with the ``embedding`` options, checked against each other."""
    from reid_srdl.search.stores import StoreError, open_store

    try:
        store = open_store(location)
    except StoreError:
        store = None  # a new gallery, or a broken one: the create=True below tells which
    try:
        meta = store.get_meta() if store is not None else {}
        stored = meta.get("settings") or {}
        options = dict(embedding)
        for key in ("normalize", "flip", "precision", "height", "width"):
            if key in stored and key not in options:
                options[key] = stored[key]
        embedder = Embedder(model, **options)
        dim = feature_dim(embedder)
        if store is None:
            store = open_store(location, dim=dim, create=True)
        elif store.dim != dim:
            raise GalleryMismatchError(
                f"{location} holds {store.dim}-dimensional vectors; {describe_model(embedder.fingerprint)} makes "
                f"{dim}-dimensional ones"
            )
        elif not allow_mismatch:
            _check(location, store, meta, embedder)
        if not meta.get("model"):
            store.set_meta({**meta, "model": embedder.fingerprint, "settings": embedder.settings})
    except BaseException:
        if store is not None:
            store.close()
        raise
    return store, embedder
