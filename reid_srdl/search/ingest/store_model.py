"""Open a gallery store for adding crops embedded by a given model, with the model checked.

A store records the fingerprint of the network that made its vectors and the extraction
settings (:mod:`reid_srdl.search.provenance`).  Adding vectors of another network, or of
other settings, would make every later search meaningless: it is refused unless the caller
says the features are comparable.  A new store records them; an existing one's recorded
settings are the defaults of the options not given.
"""

from typing import Tuple

from reid_srdl.search import provenance
from reid_srdl.search.embedder import Embedder
from reid_srdl.search.fingerprint import describe_model
from reid_srdl.search.gallery import GalleryMismatchError


def feature_dim(embedder: Embedder) -> int:
    """The embedder's feature dimension, from one blank image (known before any video frame
    is decoded, so a store of another dimension is refused first)."""
    from PIL import Image

    o = embedder.options
    return int(embedder.embed_pil([Image.new("RGB", (o.width, o.height))]).shape[1])


def open_store_for(location: str, model, embedding: dict, allow_mismatch: bool = False) -> Tuple:
    """``(store, embedder)``: the gallery at ``location`` (created if there is none) and an
    embedder of ``model`` with the ``embedding`` options, checked against each other."""
    from reid_srdl.search.build import open_gallery
    from reid_srdl.search.stores import StoreMissingError

    try:
        store = open_gallery(location)
    except StoreMissingError:
        store = None
    try:
        meta = store.get_meta() if store is not None else {}
        if store is not None and (meta.get("model") or len(store)):
            embedder = provenance.embedder_for(meta, store.location, model, allow_mismatch, **embedding)
        else:  # a new gallery: it will record this model and these settings
            embedder = Embedder(model, **embedding)
        dim = feature_dim(embedder)
        if store is None:
            store = open_gallery(location, dim=dim)
        elif store.dim != dim:
            raise GalleryMismatchError(
                f"{store.location} holds {store.dim}-dimensional vectors; {describe_model(embedder.fingerprint)} "
                f"makes {dim}-dimensional ones"
            )
        store.set_meta(provenance.record(meta, embedder, store.location, allow_mismatch))
    except BaseException:
        if store is not None:
            store.close()
        raise
    return store, embedder
