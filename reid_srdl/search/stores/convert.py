"""Copy a gallery into another store: ``tools/search.py convert OLD.npz --store NEW``.

Every live item with its vector and the gallery's metadata (model fingerprint, extraction
settings, calibration) are copied in batches.  Adds skip items already there, so a convert
that was interrupted is finished by running it again.  Items of a gallery without paths get
the source ``OLD.npz#<position>`` (a store needs a source to make ids from).
"""

import dataclasses
from typing import Optional

from tqdm import tqdm

from reid_srdl.search.stores import StoreError, StoreMissingError, open_store
from reid_srdl.search.stores.base import GalleryStore


def convert(old: GalleryStore, target: str, index: Optional[dict] = None, batch_size: int = 8192) -> int:
    """Copy ``old`` into the store at ``target`` (created, or an earlier partial copy of the
    same gallery); returns the number of items the target holds afterwards."""
    meta = old.get_meta()
    try:
        new = open_store(target, dim=old.dim, index=index)
    except StoreMissingError:
        new = open_store(target, dim=old.dim, create=True, index=index)
    with new:
        if len(new) and new.get_meta().get("model") != meta.get("model"):
            raise StoreError(f"{target} already holds a gallery of another model; convert into a new store")
        new.set_meta(meta)
        named = getattr(old, "has_paths", True)
        position = 0
        with tqdm(total=len(old), desc="convert", unit="item", disable=None) as bar:
            for vectors, items in old.scan(batch_size):
                if not named:
                    items = [
                        dataclasses.replace(it, source=f"{old.location}#{position + i}") for i, it in enumerate(items)
                    ]
                position += len(items)
                new.add(vectors, items)
                bar.update(len(items))
        return len(new)
