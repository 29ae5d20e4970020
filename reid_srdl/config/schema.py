"""The configuration's schema: one frozen dataclass per section, with its defaults (the CPU
demo), and its conversion to plain dicts.

The ``method`` section has one sub-section per registered method; its keys come from the
method registry the loader is given (:func:`method_options`), never from an import here.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.registry import Registry


class ConfigError(ReidSrdlError, ValueError):
    """A configuration key or value is not what the schema expects."""


# How several re-id training sources are named together (run folders, metrics.json).
SOURCE_SEPARATOR = "+"


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DataConfig:
    # A re-id set torchreid reads (market1501, dukemtmcreid, msmt17, cuhk03, viper, ...; see
    # datasets/README.md) or cifar10 | cifar100 | fashion_mnist | tiny_imagenet | imagenet.
    name: str = "market1501"
    # Re-id: train on several sets at once, e.g. [market1501, dukemtmcreid] (identity labels
    # and cameras offset per set); empty = [name].  data.name is then ignored.
    sources: Tuple[str, ...] = ()
    # Re-id: evaluate on each of these sets (cross-domain), e.g. [dukemtmcreid, msmt17];
    # empty = the sources.
    targets: Tuple[str, ...] = ()
    # Re-id sets with random splits (viper, grid, cuhk01, ilids, prid; cuhk03 classic): which one.
    split_id: int = 0
    # CUHK03: the hand-drawn (labeled) boxes instead of the detected ones; the 20 classic
    # splits (1,367 / 100 ids) instead of the new protocol (767 / 700 ids).
    cuhk03_labeled: bool = False
    cuhk03_classic_split: bool = False
    # Folder holding the data set; "" picks the data set's default (see datasets/README.md).
    root: str = "datasets/synthetic"
    # Re-id: write a synthetic data set under `root` for each chosen set that has a writer
    # (market1501, dukemtmcreid, msmt17, cuhk03, viper) and no folder there yet.
    synthetic: bool = True
    synthetic_ids: int = 120
    synthetic_seed: int = 0
    height: int = 128
    width: int = 64
    batch_size: int = 32
    test_batch_size: int = 128
    # DataLoader worker processes; -1 = auto: 0 when the run trains on a CPU with at most 2
    # cores (workers there compete with the training threads for the same cores: the demo
    # trained in 58-81 s with 0 workers vs 73-96 s with 2, four runs each, on a 2-core Xeon), else 2.
    workers: int = -1
    # Train on a fixed-seed random subset of N samples (0 = all); classification only.
    train_subset: int = 0
    # Classification: resize every image to N x N before augmentation (0 = the set's own
    # size), e.g. Fashion-MNIST's 28x28 upscaled for an ImageNet network; re-id uses
    # height x width.
    image_size: int = 0
    # Training batches: random (a seeded shuffle) | identity (P identities x K images each,
    # K = num_instances, P = batch_size / K; the sampler of the triplet loss; re-id only).
    sampler: str = "random"
    num_instances: int = 4
    # Re-id training: probability of random erasing (Zhong et al.; BoT uses 0.5); 0 = off.
    random_erasing: float = 0.0
    # Re-id training: decode each training image once, resized, into a uint8 cache of at most
    # this many MiB and augment it as tensors -- bit for bit the batches of decoding every step
    # (Market-1501 at 256x128 needs 1,213 MiB, at 128x64 303 MiB).  A set over this or over half
    # the memory available is decoded every step (logged); 0 = always (docs/benchmarks.md).
    cache_mb: int = 4096

    @property
    def source_names(self) -> Tuple[str, ...]:
        """The training set(s): ``sources``, or ``(name,)``."""
        return tuple(self.sources) or (self.name,)

    @property
    def target_names(self) -> Tuple[str, ...]:
        """The evaluation set(s): ``targets``, or the sources."""
        return tuple(self.targets) or self.source_names

    @property
    def label(self) -> str:
        """Run folders and metrics.json name the training data so: ``market1501+dukemtmcreid``."""
        return SOURCE_SEPARATOR.join(self.source_names)


@dataclass(frozen=True)
class ModelConfig:
    # reid: resnet50 | densenet121 | small_reid | osnet_x1_0 | osnet_x0_25 | osnet_ain_x1_0 |
    # mlfn | resnet50_fc512 ... (torchreid's) | timm/<any timm model>; classification: resnet32 |
    # resnet110 | wrn28_10 | densenet_bc_190_40 | resnet8 ...  (tools/train.py --list-models)
    name: str = "small_reid"
    # Size of the feature layer (Linear + BN) after pooling; 0 = none (the pooled map).
    feature_dim: int = 128
    # ImageNet weights for the backbone: a local file, or a URL (https; http on a loopback
    # host) fetched into torch's cache; "" = random initialisation (or model.pretrained).
    weights: str = ""
    # imagenet: fetch the ImageNet weights the architecture's library publishes (torchvision,
    # timm, torchreid) into torch's cache ($TORCH_HOME/hub/checkpoints), checksum verified;
    # "" = none.  Give either this or model.weights.
    pretrained: str = ""
    # plain: the embedding feeds the classifier and every loss | bnneck (BoT): a BatchNorm
    # between the metric feature (triplet) and a bias-free classifier (ID loss); its output
    # is the retrieval feature.
    neck: str = "plain"


def method_options(methods: Registry) -> Dict[str, type]:
    """The options dataclass of every method of ``methods`` that has options, by name.

    Read from the method registry the caller passes (``reid_srdl.methods.METHODS``: each
    method file declares and registers its own): this module never imports the methods.
    """
    found = {name: methods.info(name).get("options") for name in methods.list()}
    return {name: cls for name, cls in found.items() if cls is not None and dataclasses.fields(cls)}


@dataclass(frozen=True)
class MethodConfig:
    """``name`` picks the method (tools/train.py --list-methods); ``method.<name>.*`` are its
    options, one section per registered method (``cfg.method.srdl.temperature``).

    ``options`` is filled from the method registry by :func:`load_config`; a bare
    ``MethodConfig()`` has none."""

    name: str = "srdl"
    # (method name, its options) for every registered method with options.
    options: Tuple[Tuple[str, Any], ...] = ()

    def options_of(self, name: str):
        """The options of method ``name`` (None for a method without options)."""
        for key, value in self.options:
            if key == name:
                return value
        return None

    def __getattr__(self, item: str):
        # Only reached when normal lookup fails: ``cfg.method.<registered method>``.
        if item.startswith("_") or item in ("name", "options"):
            raise AttributeError(item)
        for key, value in object.__getattribute__(self, "options"):
            if key == item:
                return value
        raise AttributeError(
            f"no options for method '{item}' (registered with options: "
            f"{', '.join(k for k, _ in object.__getattribute__(self, 'options'))})"
        )


@dataclass(frozen=True)
class LossConfig:
    """The recipe's terms, added to every method's loss (reid_srdl/methods/recipe.py)."""

    # Label smoothing epsilon of every hard-label cross-entropy (BoT: 0.1); 0 = plain CE.
    label_smoothing: float = 0.0
    # Weight of the batch-hard triplet loss on the metric feature (BoT: 1); 0 = off.
    triplet_weight: float = 0.0
    # Hinge margin of the triplet loss (BoT: 0.3); unused with triplet_soft_margin.
    triplet_margin: float = 0.3
    # Soft margin log(1 + exp(d_ap - d_an)) instead of the hinge (Hermans et al. 2017).
    triplet_soft_margin: bool = False


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 2e-4
    # Step decay points as fractions of a stage's epochs, and the factor applied at each.
    milestones: Tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    # step (decay by gamma at the milestones) | cosine (from lr to 0 after the warm-up)
    schedule: str = "step"
    # Linear warm-up over the first N epochs of each stage: lr * (e + 1) / N (BoT: 10).
    warmup_epochs: int = 0
    # sgd (momentum, nesterov) | adam | adamw (BoT: adam, lr 3.5e-4, weight decay 5e-4)
    name: str = "sgd"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    seed: int = 0
    output_dir: str = "runs"
    # Run folder name under output_dir; "" = <data>_<model>_<method>_<timestamp>.
    run_name: str = ""
    # auto | cpu | cuda | cuda:N
    device: str = "auto"
    # Stop each epoch after this many batches (0 = whole epoch); for smoke tests.
    max_batches: int = 0
    # auto: bf16 autocast + channels-last where the hardware runs bf16 natively (a CPU with
    # AVX512-BF16 or AMX, a CUDA GPU with bf16), fp16 + GradScaler on a CUDA GPU without
    # bf16, fp32 elsewhere; fp32 is exact and bit-reproducible | bf16 | fp16 (CUDA only).
    # The precision actually used is recorded in metrics.json.
    precision: str = "auto"
    # Channels-last memory layout (also switched on by precision=auto when it picks bf16).
    channels_last: bool = False
    progress: bool = True
    tensorboard: bool = True
    # torchrun: seconds a rank waits at the rendezvous or any collective before the run
    # stops with an error naming MASTER_ADDR/PORT, RANK, WORLD_SIZE ($REID_SRDL_DIST_TIMEOUT
    # overrides it).  data.batch_size stays the global batch, split across the processes.
    dist_timeout: float = 300.0
    # torchrun on GPUs: SyncBatchNorm across processes (CPU/gloo has none: per-process BN).
    sync_bn: bool = True


@dataclass(frozen=True)
class EvalConfig:
    max_rank: int = 50
    # Market-1501 multi-query protocol from gt_bbox images, next to single query.
    multi_query: bool = True
    # mean | max
    pool: str = "mean"
    # torchreid | official
    ap: str = "torchreid"
    flip: bool = False
    normalize: bool = False
    # Write the CMC curve PNG into the run directory.
    plot: bool = True
    # k-reciprocal re-ranking (Zhong et al., CVPR 2017) reported beside the plain ranking.
    rerank: bool = False
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3
    # Feature extraction (reid_srdl.inference.features.extract_features): fp32 (exact) |
    # bf16 | fp16 (CUDA only) | auto (bf16 where the hardware runs it natively, else fp32).
    precision: str = "fp32"
    # Channels-last layout and BatchNorm folding (on a copy of the net): faster, same values.
    channels_last: bool = False
    fold_bn: bool = False


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def to_dict(cfg) -> Dict[str, Any]:
    """Plain nested dict (lists for tuples), ready for YAML/JSON; the method section as
    ``{"name": ..., "<method>": {...}, ...}``."""

    def plain(v):
        if isinstance(v, MethodConfig):
            return {"name": v.name, **{n: plain(o) for n, o in v.options}}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def flat_dict(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}`` (dotted keys, as in overrides)."""
    out: Dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flat_dict(v, key))
        else:
            out[key] = v
    return out


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
