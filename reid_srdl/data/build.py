"""``build_data``: the ``data`` config section turned into explicit loader construction.

The trainer only sees a :class:`DataBundle`: training loaders yielding
``(images, labels, indices)`` and, for re-id, one :class:`ReIDTarget` per evaluation data
set whose query/gallery/multi-query loaders yield ``(images, pids, camids, indices)`` in list
order with the test transform.  Re-id data sets are listed by torchreid's own classes
(:mod:`reid_srdl.data.reid_sets`); several training sources are combined with per-source
label and camera offsets (:mod:`reid_srdl.data.sources`).
"""

import copy
import dataclasses
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from reid_srdl.config import SOURCE_SEPARATOR, ConfigError, DataConfig
from reid_srdl.core.seeding import DATA_ORDER, TRAIN_SUBSET, derive_seed
from reid_srdl.data.classification import (
    FASHION_MNIST_DEFAULT_ROOT,
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_imagenet,
    load_tiny_imagenet,
)
from reid_srdl.data.decoded import (
    DEFAULT_CACHE_MB,
    DecodedImageDataset,
    PreparedLoader,
    TensorReidTest,
    TensorReidTrain,
    decoded_images_if_they_fit,
    usable_cores,
)
from reid_srdl.data.indexed import ImageFileDataset, IndexedDataset, SeededSampler
from reid_srdl.data.reid_sets import (
    ReidSetLists,
    accepted_options,
    is_reid_dataset,
    is_test_only,
    is_train_only,
    read_reid_set,
    reid_dataset_names,
)
from reid_srdl.data.samplers import IdentitySampler
from reid_srdl.data.sources import combine_train_sets
from reid_srdl.data.synthetic.reid_sets import WRITERS as SYNTHETIC_WRITERS
from reid_srdl.data.synthetic.reid_sets import ensure_synthetic
from reid_srdl.data.transforms import classification_transforms, reid_test_transform, reid_train_transform

_CLASSIFICATION_LOADERS = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "fashion_mnist": load_fashion_mnist,
    "tiny_imagenet": load_tiny_imagenet,
    "imagenet": load_imagenet,
}
_DEFAULT_ROOTS = {"fashion_mnist": FASHION_MNIST_DEFAULT_ROOT, "imagenet": os.path.join("datasets", "imagenet")}


@dataclass
class ReIDSplit:
    loader: DataLoader  # yields (images, pids, camids, indices), in index order, test transform
    pids: np.ndarray  # int64, len N
    camids: np.ndarray  # int64, len N, 0-based
    paths: List[str]


@dataclass
class ReIDTarget:
    """One evaluation data set: its query, gallery and (Market-1501 only) gt_bbox splits."""

    name: str
    query: ReIDSplit
    gallery: ReIDSplit
    multi_query: Optional[ReIDSplit] = None


@dataclass
class DataBundle:
    task: str  # "reid" | "classification"
    name: str  # data set name
    num_classes: int  # number of training identities / classes
    in_channels: int  # 3, or 1 for Fashion-MNIST
    num_train: int
    train_loader: DataLoader  # yields (images, labels, indices); shuffled, train transform
    train_eval_loader: DataLoader  # (images, labels, indices); index order, test transform, same indices
    test_loader: Optional[DataLoader] = None  # classification: (images, labels, indices)
    query: Optional[ReIDSplit] = None
    gallery: Optional[ReIDSplit] = None
    multi_query: Optional[ReIDSplit] = None  # gt_bbox images; None when absent
    # Re-id: query/gallery/multi_query above are targets[0]'s; each target is evaluated apart.
    sources: Tuple[str, ...] = ()
    targets: Optional[List[ReIDTarget]] = None
    # Re-id: each training sample's camera (offset per source) and source index.
    train_camids: Optional[np.ndarray] = None
    train_dsetids: Optional[np.ndarray] = None


def default_root(name: str) -> str:
    """The folder a data set is looked for in when ``data.root`` is empty."""
    return _DEFAULT_ROOTS.get(name, "datasets")


def order_seed(seed: int) -> int:
    """The seed of the training order's stream.  DistributedSampler shuffles epoch e from
    ``seed + e``: a hashed seed keeps epoch 1 of one run from being epoch 0 of the next seed."""
    return derive_seed(seed, DATA_ORDER)


def _loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    train: bool = False,
    seed: int = 0,
    sampler: Optional[IdentitySampler] = None,
) -> PreparedLoader:
    # Training: order and per-sample augmentation seeds from (seed, epoch) only (SeededSampler
    # over a one-replica DistributedSampler: the same permutation a 1-process torchrun run
    # uses, or the given IdentitySampler), so they are reproducible across resume and
    # independent of the workers -- which can therefore stay alive between epochs.
    # drop_last only when it loses less than half the data: tiny sets must still give batches
    # (an IdentitySampler only ever yields whole batches).
    drop_last = train and sampler is None and len(dataset) >= 2 * batch_size
    if train and sampler is None:
        shuffle = DistributedSampler(
            dataset, num_replicas=1, rank=0, shuffle=True, seed=order_seed(seed), drop_last=False
        )
        sampler = SeededSampler(shuffle, seed)
    return PreparedLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=train and workers > 0,
    )


def distributed_train_loader(loader: DataLoader, rank: int, world_size: int, seed: int) -> DataLoader:
    """The training loader of one of ``world_size`` processes (torchrun / DDP).

    ``data.batch_size`` is the GLOBAL batch: each process loads ``batch_size / world_size``
    samples per step (an error if it does not divide), so a run keeps its hyper-parameters
    whatever the number of processes.  A :class:`DistributedSampler` (shuffled from
    ``seed`` + the epoch set by ``sampler.set_epoch``) deals the samples out, so rank ``r``'s
    i-th batch holds positions ``r, r + W, ...`` of the same global permutation: together the
    ranks see exactly the global batches one process would with the same sampler.
    """
    if loader.batch_size % world_size:
        raise ConfigError(
            f"data.batch_size={loader.batch_size} is the global batch and must be divisible by the "
            f"{world_size} processes (WORLD_SIZE)"
        )
    per_process = loader.batch_size // world_size
    dataset = loader.dataset
    if isinstance(loader.sampler, IdentitySampler):
        # Rank r takes the r-th contiguous share of every global P x K batch.
        return PreparedLoader(
            dataset,
            batch_size=per_process,
            sampler=loader.sampler.shard(rank, world_size),
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
            persistent_workers=loader.num_workers > 0,
        )
    # Same rule as _loader: drop the last partial batch only when that loses little data.
    drop_last = len(dataset) >= 2 * loader.batch_size
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=order_seed(seed), drop_last=False
    )
    return PreparedLoader(
        dataset,
        batch_size=per_process,
        # Sample i is augmented alike whichever rank loads it (seeds from seed, epoch, i).
        sampler=SeededSampler(sampler, seed),
        drop_last=drop_last,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        persistent_workers=loader.num_workers > 0,
    )


def reid_split(samples: Sequence[Tuple[str, int, int]], transform, batch_size: int, workers: int) -> ReIDSplit:
    dataset = IndexedDataset(ImageFileDataset(samples, transform))
    return ReIDSplit(
        loader=_loader(dataset, batch_size, workers),
        pids=np.array([s[1] for s in samples], dtype=np.int64),
        camids=np.array([s[2] for s in samples], dtype=np.int64),
        paths=[s[0] for s in samples],
    )


def reid_target(lists: ReidSetLists, transform, batch_size: int, workers: int) -> ReIDTarget:
    """The evaluation splits of one data set: query, gallery and (Market-1501) gt_bbox."""
    multi_query = None
    if lists.gt_bbox is not None:
        # Multi-query pools the gt_bbox boxes of a query's own (pid, camera); no other box
        # is ever used, so only those are kept (on real Market-1501 this skips ~half of them).
        wanted = {(pid, camid) for _path, pid, camid in lists.query}
        pooled = [s for s in lists.gt_bbox if (s[1], s[2]) in wanted]
        multi_query = reid_split(pooled, transform, batch_size, workers) if pooled else None
    return ReIDTarget(
        name=lists.name,
        query=reid_split(lists.query, transform, batch_size, workers),
        gallery=reid_split(lists.gallery, transform, batch_size, workers),
        multi_query=multi_query,
    )


def build_reid_target(
    name: str,
    root: str,
    height: int,
    width: int,
    batch_size: int,
    workers: int,
    split_id: int = 0,
    cuhk03_labeled: bool = False,
    cuhk03_classic_split: bool = False,
) -> ReIDTarget:
    """Query/gallery loaders of one re-id data set (e.g. to evaluate a finished run on it)."""
    if not is_reid_dataset(name):
        raise ConfigError(f"'{name}' is not a re-id data set; valid names: {', '.join(reid_dataset_names())}")
    if is_train_only(name):
        raise ConfigError(f"'{name}' is a training-only data set (no query/gallery split); evaluate on another")
    lists = read_reid_set(
        name, root, split_id=split_id, cuhk03_labeled=cuhk03_labeled, cuhk03_classic_split=cuhk03_classic_split
    )
    return reid_target(lists, reid_test_transform(height, width), batch_size, workers)


def check_reid_choice(
    sources: Sequence[str],
    targets: Sequence[str],
    split_id: int,
    cuhk03_labeled: bool,
    cuhk03_classic_split: bool,
    sources_key: str = "data.sources",
) -> None:
    """Names, roles (training-only / test-only sets) and per-set options, before any reading."""
    valid = reid_dataset_names()
    for key, names in ((sources_key, sources), ("data.targets", targets)):
        for name in names:
            if not is_reid_dataset(name):
                raise ConfigError(f"{key}: '{name}' is not a re-id data set; valid names: {', '.join(valid)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{key} lists a data set twice: {', '.join(names)}")
    for name in sources:
        if is_test_only(name):
            raise ConfigError(
                f"{sources_key}: '{name}' is a test-only data set (its training split is its own test "
                "images); give it in data.targets"
            )
    for name in targets:
        if is_train_only(name):
            raise ConfigError(
                f"data.targets: '{name}' is a training-only data set (no query/gallery split); give it in data.sources"
            )
    chosen = set(sources) | set(targets)
    given = {"split_id": split_id != 0, "cuhk03_labeled": cuhk03_labeled, "cuhk03_classic_split": cuhk03_classic_split}
    for option, is_set in given.items():
        takers = [n for n in valid if option in accepted_options(n)]
        if is_set and not chosen & set(takers):
            raise ConfigError(
                f"data.{option} applies to {', '.join(takers)} only; none of them is in data.sources "
                f"or data.targets ({', '.join(sorted(chosen))})"
            )
    if split_id < 0:
        raise ConfigError(f"data.split_id must be >= 0, got {split_id}")


def build_reid_data(
    sources: Sequence[str],
    targets: Sequence[str],
    root: str,
    synthetic: bool,
    synthetic_ids: int,
    synthetic_seed: int,
    height: int,
    width: int,
    batch_size: int,
    test_batch_size: int,
    workers: int,
    seed: int = 0,
    split_id: int = 0,
    cuhk03_labeled: bool = False,
    cuhk03_classic_split: bool = False,
    sampler: str = "random",
    num_instances: int = 4,
    random_erasing: float = 0.0,
    cache_mb: int = DEFAULT_CACHE_MB,
) -> DataBundle:
    """Training on ``sources`` (labels and cameras offset per source), evaluation on each of
    ``targets``.  With `synthetic`, a data set that has a synthetic writer and no folder under
    `root` is written first.  ``sampler="identity"``: training batches of P = batch_size /
    num_instances identities x num_instances images (:class:`IdentitySampler`);
    ``random_erasing``: its probability."""
    names = list(dict.fromkeys([*sources, *targets]))
    if synthetic:
        for name in names:
            if name in SYNTHETIC_WRITERS:
                ensure_synthetic(name, root, num_ids=synthetic_ids, seed=synthetic_seed)
    options = dict(split_id=split_id, cuhk03_labeled=cuhk03_labeled, cuhk03_classic_split=cuhk03_classic_split)
    lists = {name: read_reid_set(name, root, **options) for name in names}
    combined = combine_train_sets([(name, lists[name].train) for name in sources])
    # Our own Dataset over the very (path, pid, camid) lists torchreid's classes give (for
    # Market-1501: the lists Market1501SRDL hands to torchreid), rather than torchreid's
    # ImageDataManager loaders: those yield dicts, always drop the last batch, and torchreid's
    # read_image retries forever on an unreadable file, where ours stops with the file's name.
    train_samples = [(path, label) for path, label, _camid, _dsetid in combined.samples]
    decoded = decoded_images_if_they_fit([path for path, _label in train_samples], height, width, cache_mb)
    if decoded is None:
        train = IndexedDataset(ImageFileDataset(train_samples, reid_train_transform(height, width, random_erasing)))
        train_eval = IndexedDataset(ImageFileDataset(train_samples, reid_test_transform(height, width)))
    else:  # the same items, from images decoded once (train and train_eval share them)
        augment = TensorReidTrain(height, width, random_erasing)
        train = IndexedDataset(DecodedImageDataset(train_samples, decoded, augment))
        train_eval = IndexedDataset(DecodedImageDataset(train_samples, decoded, TensorReidTest()))
    identity_sampler = None
    if sampler == "identity":
        identity_sampler = IdentitySampler([label for _path, label in train_samples], batch_size, num_instances, seed)
    test_tf = reid_test_transform(height, width)
    evaluated = [reid_target(lists[name], test_tf, test_batch_size, workers) for name in targets]
    first = evaluated[0]
    return DataBundle(
        task="reid",
        name=SOURCE_SEPARATOR.join(sources),
        num_classes=combined.num_pids,
        in_channels=3,
        num_train=len(train),
        train_loader=_loader(train, batch_size, workers, train=True, seed=seed, sampler=identity_sampler),
        train_eval_loader=_loader(train_eval, test_batch_size, workers),
        query=first.query,
        gallery=first.gallery,
        multi_query=first.multi_query,
        sources=tuple(sources),
        targets=evaluated,
        train_camids=np.array([s[2] for s in combined.samples], dtype=np.int64),
        train_dsetids=np.array([s[3] for s in combined.samples], dtype=np.int64),
    )


def random_subset_indices(total: int, size: int, seed: int) -> np.ndarray:
    """`size` distinct indices of 0..total-1, fixed by `seed`, in increasing order."""
    return np.sort(np.random.default_rng(seed).choice(total, size=size, replace=False))


def build_classification_data(
    name: str,
    root: str,
    batch_size: int,
    test_batch_size: int,
    workers: int,
    train_subset: int = 0,
    seed: int = 0,
    image_size: int = 0,
) -> DataBundle:
    """One of the classification data sets, optionally a fixed random subset of its training
    set, optionally resized to ``image_size`` (0 = its own size)."""
    train_tf, test_tf = classification_transforms(name, image_size)
    data = _CLASSIFICATION_LOADERS[name](root, train_transform=train_tf, test_transform=test_tf)
    # The eval copy of the training set must decode the same samples with the test transform.
    train_eval_base = _with_transform(data.train, test_tf)
    train_base = data.train
    if train_subset:
        if train_subset > len(train_base):
            raise ConfigError(
                f"data.train_subset={train_subset} is larger than the {len(train_base)} training "
                f"samples of {name} in '{root}'"
            )
        keep = random_subset_indices(len(train_base), train_subset, derive_seed(seed, TRAIN_SUBSET)).tolist()
        train_base, train_eval_base = Subset(train_base, keep), Subset(train_eval_base, keep)
    train = IndexedDataset(train_base)
    return DataBundle(
        task="classification",
        name=name,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        num_train=len(train),
        train_loader=_loader(train, batch_size, workers, train=True, seed=seed),
        train_eval_loader=_loader(IndexedDataset(train_eval_base), test_batch_size, workers),
        test_loader=_loader(IndexedDataset(data.test), test_batch_size, workers),
    )


def _with_transform(dataset: Dataset, transform) -> Dataset:
    """A shallow copy of `dataset` (same samples, shared arrays) using `transform` instead."""
    twin = copy.copy(dataset)
    twin.transform = transform
    return twin


AUTO_WORKERS = -1


def loader_workers(setting: int, device_type: str = "cpu") -> int:
    """``data.workers`` as a number of DataLoader processes.

    Auto (-1) gives 0 for training on a CPU with at most 2 cores: the training step already
    uses every core, so worker processes only take turns with it (measured: the demo's
    training phase 58-81 s with 0 workers vs 73-96 s with 2, four runs each, on a 2-core Xeon).  Elsewhere 2, the
    earlier default (more cores or a GPU leave room for decoding beside the step).
    """
    if setting != AUTO_WORKERS:
        return setting
    return 0 if device_type == "cpu" and usable_cores() <= 2 else 2


def build_data(cfg: DataConfig, seed: int = 0, device_type: str = "cpu") -> DataBundle:
    """Translate the ``data`` config section into loaders; `seed` (the run's) fixes
    ``train_subset`` and, with the epoch, the training order and augmentations;
    `device_type` (where the run trains) resolves ``workers=-1`` (:func:`loader_workers`)."""
    name = cfg.name
    reid = bool(cfg.sources or cfg.targets) or is_reid_dataset(name)
    if not reid and name not in _CLASSIFICATION_LOADERS:
        raise ConfigError(
            f"data.name='{name}' is not one of: {', '.join(reid_dataset_names() + list(_CLASSIFICATION_LOADERS))}"
        )
    if cfg.sources and name not in (DataConfig().name, *cfg.sources):
        raise ConfigError(f"data.name='{name}' and data.sources={list(cfg.sources)} disagree; give only data.sources")
    if cfg.batch_size < 1 or cfg.test_batch_size < 1:
        raise ConfigError("data.batch_size and data.test_batch_size must be >= 1")
    if cfg.workers < AUTO_WORKERS:
        raise ConfigError(f"data.workers must be >= 0 (or -1 = auto), got {cfg.workers}")
    cfg = dataclasses.replace(cfg, workers=loader_workers(cfg.workers, device_type))
    if cfg.image_size < 0:
        raise ConfigError(f"data.image_size must be >= 0 (0 = the data set's own size), got {cfg.image_size}")
    if cfg.train_subset < 0:
        raise ConfigError(f"data.train_subset must be >= 0 (0 = all), got {cfg.train_subset}")
    sources, targets = cfg.source_names, cfg.target_names
    root = cfg.root or default_root(sources[0])
    if reid:
        check_reid_choice(
            sources,
            targets,
            cfg.split_id,
            cfg.cuhk03_labeled,
            cfg.cuhk03_classic_split,
            "data.sources" if cfg.sources else "data.name",
        )
        if cfg.image_size:
            raise ConfigError(
                f"data.image_size is for classification sets; re-id images are resized to data.height x "
                f"data.width (got data.image_size={cfg.image_size})"
            )
        if cfg.train_subset:
            raise ConfigError(
                "data.train_subset is for classification only: a re-id training subset would "
                "change the identities; use data.synthetic_ids for a smaller re-id set"
            )
        if cfg.height < 1 or cfg.width < 1:
            raise ConfigError(f"data.height and data.width must be >= 1, got {cfg.height}x{cfg.width}")
        return build_reid_data(
            sources,
            targets,
            root,
            cfg.synthetic,
            cfg.synthetic_ids,
            cfg.synthetic_seed,
            cfg.height,
            cfg.width,
            cfg.batch_size,
            cfg.test_batch_size,
            cfg.workers,
            seed,
            cfg.split_id,
            cfg.cuhk03_labeled,
            cfg.cuhk03_classic_split,
            sampler=cfg.sampler,
            num_instances=cfg.num_instances,
            random_erasing=cfg.random_erasing,
            cache_mb=cfg.cache_mb,
        )
    if cfg.split_id or cfg.cuhk03_labeled or cfg.cuhk03_classic_split:
        raise ConfigError("data.split_id and data.cuhk03_* apply to re-id data sets only")
    if cfg.sampler != "random" or cfg.random_erasing:
        raise ConfigError(
            f"data.sampler=identity and data.random_erasing are for re-id training sets; data.name='{name}' "
            f"is a classification set (use data.sampler=random, data.random_erasing=0)"
        )
    return build_classification_data(
        name, root, cfg.batch_size, cfg.test_batch_size, cfg.workers, cfg.train_subset, seed, cfg.image_size
    )
