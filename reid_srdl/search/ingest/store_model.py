"""Open a gallery store for adding crops embedded by a given model, with the model checked.

A store records the fingerprint of the network that made its vectors and the extraction
settings (``meta["model"]``, ``meta["settings"]``).  Adding vectors of another network, or
of other settings, would make every later search meaningless; it is refused unless the
caller says the features are comparable.  A new or empty store records them.
"""

from typing import Tuple

from reid_srdl.search.embedder import FEATURE_SETTINGS, Embedder
from reid_srdl.search.fingerprint import describe_model, same_model
from reid_srdl.search.gallery import GalleryMismatchError

HINT = "pass --allow-model-mismatch only if you know the features are comparable"


def open_store_for(location: str, model, embedding: dict, allow_mismatch: bool, create: bool = True) -> Tuple:
    """``(store, embedder)``: the store at ``location`` and an embedder of ``model``.

    The store's recorded settings are the defaults of the options not given in ``embedding``.
    """
    from reid_srdl.search.stores import open_store

    store = None
    try:
        store = open_store(location)
    except Exception:  # noqa: BLE001 - resolved below when the stores land
        store = None
    meta = store.get_meta() if store is not None else {}
    stored = dict(meta.get("settings") or {})
    options = dict(embedding)
    for key in ("normalize", "flip", "precision", "height", "width"):
        if key in stored and key not in options:
            options[key] = stored[key]
    embedder = Embedder(model, **options)
    if store is None:
        from reid_srdl.search.ingest.pipeline import feature_dim

        store = open_store(location, dim=feature_dim(embedder), create=create)
    if not meta.get("model"):
        store.set_meta({**meta, "model": embedder.fingerprint, "settings": embedder.settings})
        return store, embedder
    if not allow_mismatch:
        if not same_model(meta["model"], embedder.fingerprint):
            raise GalleryMismatchError(
                f"{location} holds vectors of {describe_model(meta['model'])}, not of "
                f"{describe_model(embedder.fingerprint)}; {HINT}"
            )
        differ = [k for k in FEATURE_SETTINGS if k in stored and stored[k] != embedder.settings[k]]
        if differ:
            both = "; ".join(f"{k}: store {stored[k]!r}, asked {embedder.settings[k]!r}" for k in differ)
            raise GalleryMismatchError(f"{location} was embedded with other settings ({both}); {HINT}")
    return store, embedder
