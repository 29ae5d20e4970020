"""Identity-balanced training batches: P identities x K images each (the triplet loss's sampler).

The batches are those of torchreid's ``RandomIdentitySampler`` (and BoT's): every identity's
images are shuffled and cut into groups of K (an identity with fewer than K images is filled
up to K by drawing with replacement; a remainder of fewer than K images sits the epoch out);
then P identities that still have a group are drawn without replacement, one group of each
makes a batch, and so on until fewer than P identities have a group left.

What differs is where the randomness comes from.  Everything is drawn from a numpy generator
seeded by (run seed, epoch) alone, never from Python's or torch's global RNG, so the batches
are the same for any number of DataLoader workers, after a resume, and across DDP ranks: each
rank takes its own contiguous share of every global batch (whole identities when the share is
a multiple of K), so the ranks together see exactly the batches one process would.  The keys
are ``(index, augmentation seed)`` pairs for :class:`~reid_srdl.data.indexed.IndexedDataset`;
an image drawn twice in an epoch (replacement) gets a different augmentation each time.
"""

from collections import defaultdict
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
from torch.utils.data import Sampler

from reid_srdl.config import ConfigError

# Mixed into the seed so that this stream differs from every other one drawn from the run seed.
_STREAM = 0x1D5A


def pk_batches(identities: Dict[int, List[int]], p: int, k: int, rng: np.random.Generator) -> List[List[int]]:
    """One epoch of batches of P identities x K dataset indices.

    ``identities`` maps every identity to its dataset indices (in a fixed order); ``rng``
    makes every random choice.
    """
    groups: Dict[int, List[List[int]]] = {}
    for pid, indices in identities.items():
        if len(indices) < k:
            drawn = rng.choice(indices, size=k, replace=True).tolist()
        else:
            drawn = rng.permutation(indices).tolist()
        groups[pid] = [drawn[i : i + k] for i in range(0, len(drawn) - k + 1, k)]
    available = list(groups)
    batches = []
    while len(available) >= p:
        chosen = [available[i] for i in rng.choice(len(available), size=p, replace=False)]
        batches.append([index for pid in chosen for index in groups[pid].pop(0)])
        available = [pid for pid in available if groups[pid]]
    return batches


class IdentitySampler(Sampler):
    """Seeded P x K batches (see the module docstring), flattened into DataLoader keys.

    ``labels[i]`` is the identity of dataset sample ``i``.  ``batch_size`` is the global batch
    (P = batch_size / num_instances); with ``world_size`` > 1 this sampler yields rank
    ``rank``'s share of each batch, ``batch_size / world_size`` keys.  ``set_epoch`` selects
    the epoch; a loop that never calls it gets the next epoch on each pass.
    """

    def __init__(
        self, labels: Sequence[int], batch_size: int, num_instances: int, seed: int, rank: int = 0, world_size: int = 1
    ):
        k = int(num_instances)
        if k < 1 or batch_size % k:
            raise ConfigError(f"data.sampler=identity: data.num_instances={k} must divide data.batch_size={batch_size}")
        if batch_size % world_size:
            raise ConfigError(
                f"data.batch_size={batch_size} is the global batch and must be divisible by the "
                f"{world_size} processes (WORLD_SIZE)"
            )
        if (batch_size // world_size) % k:
            raise ConfigError(
                f"data.sampler=identity under {world_size} processes: each process takes data.batch_size / "
                f"WORLD_SIZE = {batch_size // world_size} images of every batch, which must hold whole identities "
                f"(a multiple of data.num_instances={k}) for its own triplet mining"
            )
        self.labels = [int(x) for x in labels]
        self.batch_size, self.num_instances, self.seed = int(batch_size), k, int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.num_identities = self.batch_size // k
        self.identities: Dict[int, List[int]] = defaultdict(list)
        for index, pid in enumerate(self.labels):
            self.identities[pid].append(index)
        self.identities = dict(self.identities)
        if len(self.identities) < self.num_identities:
            raise ConfigError(
                f"data.sampler=identity needs P = data.batch_size / data.num_instances = {self.num_identities} "
                f"identities per batch, but the training set has only {len(self.identities)}"
            )
        self.epoch = 0
        self._cached: Tuple[int, List[Tuple[int, int]]] = (-1, [])

    def shard(self, rank: int, world_size: int) -> "IdentitySampler":
        """The same batches, rank ``rank``'s share of each (for DDP)."""
        return IdentitySampler(self.labels, self.batch_size, self.num_instances, self.seed, rank, world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_keys(self, epoch: int) -> List[Tuple[int, int]]:
        """Every ``(index, augmentation seed)`` of the epoch, batch after batch, all ranks."""
        if self._cached[0] != epoch:
            order, augment = np.random.SeedSequence([_STREAM, self.seed, epoch]).spawn(2)
            batches = pk_batches(self.identities, self.num_identities, self.num_instances, np.random.default_rng(order))
            # The n-th draw of the same image in this epoch gets the n-th seed, so repeats
            # (identities with fewer than K images) are augmented differently.
            seeds = [int(s) >> 2 for s in augment.generate_state(self.num_instances, np.uint64)]
            draws: Dict[int, int] = defaultdict(int)
            keys = []
            for batch in batches:
                for index in batch:
                    keys.append((index, seeds[draws[index]]))
                    draws[index] += 1
            self._cached = (epoch, keys)
        return self._cached[1]

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        keys = self.global_keys(epoch)
        share = self.batch_size // self.world_size
        for start in range(0, len(keys), self.batch_size):
            yield from keys[start + self.rank * share : start + (self.rank + 1) * share]

    def __len__(self) -> int:
        return len(self.global_keys(self.epoch)) // self.world_size
