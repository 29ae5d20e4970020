"""Random streams derived from (run seed, purpose): no two runs of different seeds share one.

A run draws several independent random streams: the network's initialisation, SRDL's
stage-2 re-initialisation, the training order, the per-sample augmentations of each epoch,
the training subset.  Deriving them as ``seed + 1`` or ``seed + epoch`` couples runs: SRDL
seed s would restart stage 2 from exactly the weights vanilla seed s+1 starts from, and the
order of epoch 1 of seed s would be the order of epoch 0 of seed s+1.  Each stream is instead
a hash of the run's seed, a purpose name and any further keys, so streams of different
seeds or purposes are unrelated (a collision needs two 63-bit hashes to agree).
"""

import hashlib
import random

import numpy as np
import torch

# Purposes (the names are part of the reproducibility contract: renaming one changes results).
MODEL_INIT = "model.init"
SRDL_STAGE2_INIT = "srdl.stage2-init"
EPOCH = "train.epoch"  # model-side randomness of one epoch (dropout)
DATA_ORDER = "data.order"
AUGMENTATION = "data.augmentation"
TRAIN_SUBSET = "data.subset"

_MASK_63 = (1 << 63) - 1


def derive_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit seed for the stream ``purpose`` (with integer ``keys``, e.g. the epoch) of the
    run seeded ``seed``; the same arguments always give the same number, on every machine."""
    text = ":".join([str(int(seed)), purpose, *(str(int(k)) for k in keys)])
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & _MASK_63


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global generators from one number."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
