"""Gallery search: index person crops, find who a query looks like, decide whether they are there.

gallery      GalleryIndex: vectors + pids/camids/paths + provenance, exact FAISS search, save/load
embedder     Embedder: network + transform + extraction settings (and the model fingerprint)
fingerprint  which network made a gallery (architecture + sha256 of the weights)
calibration  the open-set "no match" threshold at a false accept rate, and where it came from
searcher     ReIDSearcher: the two together, with decisions

Names are imported lazily (torch and faiss load only when needed).
"""

import importlib

_EXPORTS = {
    "ReIDSearcher": "searcher",
    "SearchResult": "searcher",
    "GalleryIndex": "gallery",
    "GalleryMismatchError": "gallery",
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
