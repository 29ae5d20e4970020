"""Gallery search: index person crops, find who a query looks like, decide whether they are there.

stores       the gallery: one GalleryStore interface; a folder (faiss), Milvus (Lite or server),
             an .npz file; open_store(path_or_uri)
embedder     Embedder: network + transform + extraction settings (and the model fingerprint)
fingerprint  which network made a gallery (architecture + sha256 of the weights)
provenance   whether a query embedder fits a gallery (model, settings)
calibration  the open-set "no match" threshold at a false accept rate, and where it came from
request      the API's search arguments -> query features and per-query store filters
results      SearchResult: the hits with their metadata; decisions: match / no match
searcher     ReIDSearcher: a store and an embedder together (a thin facade)

Names are imported lazily (torch and faiss load only when needed).
"""

import importlib

_EXPORTS = {
    "ReIDSearcher": "searcher",
    "SearchResult": "results",
    "open_store": "stores",
    "GalleryItem": "stores",
    "SearchFilter": "stores",
    "GalleryStore": "stores",
    "GalleryMismatchError": "gallery",
    "SearchError": "errors",
    "UNKNOWN": "gallery",
    "Embedder": "embedder",
    "Calibration": "calibration",
    "calibrate": "calibration",
    "model_fingerprint": "fingerprint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
