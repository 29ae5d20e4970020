"""Which network and settings made a gallery, and whether a query embedder fits it.

A gallery records the fingerprint of its model and its extraction settings (the ``model``
and ``settings`` of the store's metadata).  :func:`embedder_for` builds the query embedder
with the recorded settings as defaults and refuses -- a :class:`GalleryMismatchError`
naming both sides -- a model with another fingerprint, an explicit setting that differs, or
a gallery that records no model, unless ``allow_mismatch``.
"""

from typing import Any, Dict, Optional

from reid_srdl.search.embedder import FEATURE_SETTINGS, Embedder, check_option_names
from reid_srdl.search.errors import SearchError
from reid_srdl.search.fingerprint import describe_model, same_model
from reid_srdl.search.gallery import GalleryMismatchError

HINT = "pass allow_mismatch=True (--allow-model-mismatch) only if you know the features are comparable"


def embedder_for(
    meta: Dict[str, Any], where: str, model, allow_mismatch: bool, trust_torchscript: bool = False, **embedding
) -> Optional[Embedder]:
    """The query embedder for a gallery whose metadata is ``meta`` (None without a model).
    ``trust_torchscript``: load a TorchScript model not named ``*.ts`` (it is a program)."""
    check_option_names(embedding)
    if model is None:
        if embedding:
            raise SearchError("embedding options need a model: ReIDSearcher.load(path, model=..., ...)")
        return None
    stored = meta.get("settings") or {}
    options = dict(embedding)
    for key in FEATURE_SETTINGS:
        if key != "transform" and key in stored and key not in options:
            options[key] = stored[key]
    embedder = Embedder(model, trust_torchscript=trust_torchscript, **options)
    if not allow_mismatch:
        check_model(where, meta.get("model"), embedder)
        resolved = embedder.settings  # compared as resolved ("auto" precision -> what it runs at)
        asked = {k: resolved[k] for k in FEATURE_SETTINGS if k in embedding or k == "transform"}
        check_settings(where, stored, asked)
    return embedder


def check_model(where: str, recorded: Optional[Dict[str, Any]], embedder: Embedder) -> None:
    if recorded is None:
        raise GalleryMismatchError(
            f"{where} records no model (built from features or by an older version), so queries embedded by "
            f"{describe_model(embedder.fingerprint)} cannot be checked against it; {HINT}"
        )
    if not same_model(recorded, embedder.fingerprint):
        raise GalleryMismatchError(
            f"{where} was built by {describe_model(recorded)} but the query model is "
            f"{describe_model(embedder.fingerprint)}; {HINT}"
        )


def check_settings(where: str, stored: Dict[str, Any], asked: Dict[str, Any]) -> None:
    """Settings asked for (as resolved) that differ from the ones the gallery recorded."""
    differ = [k for k in FEATURE_SETTINGS if k in stored and k in asked and asked[k] != stored[k]]
    if differ:
        both = "; ".join(f"{k}: gallery {stored[k]!r}, query {asked[k]!r}" for k in differ)
        raise GalleryMismatchError(
            f"{where} was embedded with other settings than asked ({both}); leave them out to use the gallery's, "
            f"or pass allow_mismatch=True (--allow-model-mismatch) if you know the features are comparable"
        )


def record(meta: Dict[str, Any], embedder: Embedder, where: str, allow_mismatch: bool) -> Dict[str, Any]:
    """``meta`` with the embedder's fingerprint and settings -- for a new gallery; an existing
    one that records another model (or settings) is refused unless ``allow_mismatch``."""
    if meta.get("model") is None:
        return dict(meta, model=embedder.fingerprint, settings=embedder.settings)
    if not allow_mismatch:
        check_model(where, meta.get("model"), embedder)
        check_settings(where, meta.get("settings") or {}, embedder.settings)
    return meta
