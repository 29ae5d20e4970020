"""Typed configuration: dataclasses loaded from YAML, dotted overrides, strict checking.

Precedence: dataclass defaults (the CPU demo) < YAML file (with one level of ``_base_``)
< ``section.key=value`` overrides from the command line.  An unknown key or a value of the
wrong type is a :class:`ConfigError` naming the key and the valid ones.  Each package's
``build_*`` function turns its own section into explicit arguments; library code never
reads this object deep inside.
"""

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from reid_srdl.core import limits
from reid_srdl.core.download import DownloadError, check_url, is_url
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.files import atomic_path
from reid_srdl.core.precision import PRECISIONS
from reid_srdl.core.registry import Registry
from reid_srdl.core.yaml_text import YamlError, load_yaml_text, read_yaml_file

logger = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- conversion
def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _coerce(value: Any, tp, key: str, methods: Registry):
    """Check `value` against the annotation `tp`; return it in the field's own type."""
    origin = typing.get_origin(tp)
    if origin in (tuple, list, Tuple, List, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"key '{key}' expects a list, got {type(value).__name__} {_shown(value)}")
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]", methods) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML follows YAML 1.1, whose float needs a dot: "5e-4" and "1e30" arrive as
        # strings.  Every spelling Python's float() reads is a float here.
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, methods, key)
        raise ConfigError(f"key '{key}' is a section; give it as a mapping, got {_shown(value)}")
    raise ConfigError(f"key '{key}' expects {_type_name(tp)}, got {type(value).__name__} {_shown(value)}")


def _schema(cls, methods: Registry) -> Dict[str, Any]:
    """Key -> type of a section; the method section's keys come from the method registry."""
    if cls is MethodConfig:
        return {"name": str, **method_options(methods)}
    return typing.get_type_hints(cls)


def _build(cls, values: Dict[str, Any], methods: Registry, prefix: str = ""):
    """Instantiate dataclass `cls` from a (possibly partial) nested dict, strictly."""
    hints = _schema(cls, methods)
    kwargs = {}
    for k, v in values.items():
        dotted = f"{prefix}.{k}" if prefix else k
        if k not in hints:
            where = f"in '{prefix}'" if prefix else "at the top level"
            raise ConfigError(f"unknown key '{dotted}'; valid keys {where}: {', '.join(hints)}")
        kwargs[k] = _coerce(v, hints[k], dotted, methods)
    if cls is MethodConfig:
        name = kwargs.pop("name", MethodConfig.name)
        # Every registered method's options, at their defaults where not given.
        options = tuple((n, kwargs[n] if n in kwargs else opt()) for n, opt in method_options(methods).items())
        return MethodConfig(name=name, options=options)
    if cls is Config and "method" not in kwargs:
        kwargs["method"] = _build(MethodConfig, {}, methods, "method")  # its options, at their defaults
    return cls(**kwargs)


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


def completed_saved(saved: Dict[str, Any], methods: Registry) -> Dict[str, Any]:
    """A config dict saved with a run, with the keys added to the schema since at their
    defaults (the dict as it is when it no longer fits the schema)."""
    try:
        return to_dict(_build(Config, saved, methods))
    except (ConfigError, TypeError):
        return saved


def matches_saved(cfg: Config, saved: Dict[str, Any], methods: Registry) -> bool:
    """Whether a config dict saved with a run (``to_dict`` of its config) describes ``cfg``.

    Keys added to the schema since the run was written take their defaults, so a run from an
    older version resumes as long as it set nothing differently.
    """
    try:
        return to_dict(_build(Config, saved, methods)) == to_dict(cfg)
    except (ConfigError, TypeError):  # a key the schema no longer has, or not a mapping
        return False


def _deep_merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        data = read_yaml_file(path, "config file")
    except YamlError as e:
        raise ConfigError(str(e)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_yaml_dict(path: str) -> Dict[str, Any]:
    """Read a config YAML, resolving one level of ``_base_`` (a path relative to the file)."""
    data = _read_yaml(path)
    base_ref = data.pop("_base_", None)
    if base_ref is None:
        return data
    if not isinstance(base_ref, str) or not base_ref:
        raise ConfigError(f"config file {path}: _base_ must be the path of another config file, got {base_ref!r}")
    base_path = os.path.join(os.path.dirname(os.path.abspath(path)), base_ref)
    base = _read_yaml(base_path)
    if "_base_" in base:
        raise ConfigError(f"{base_path} has its own _base_; only one level of _base_ is supported")
    return _deep_merge(base, data)


def parse_override(text: str) -> Tuple[List[str], str]:
    """``optim.lr=0.05`` -> (['optim', 'lr'], '0.05'); the value is typed against the schema."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{text}' has an empty key part")
    return parts, raw


def _parse_value(raw: str, tp) -> Any:
    """A string field keeps the raw text ("0001" stays "0001"); others are YAML scalars."""
    if tp is str:
        return raw
    try:
        return load_yaml_text(raw, "override value")
    except YamlError:
        return raw  # not (acceptable) YAML: the schema check names the key and the type it expects


def _set_dotted(tree: Dict[str, Any], parts: List[str], raw: str, cls, methods: Registry) -> None:
    """Put the value `raw` at `parts` in the nested dict, checking each step against the schema."""
    node, node_cls, path = tree, cls, []
    for i, p in enumerate(parts):
        path.append(p)
        hints = _schema(node_cls, methods)
        if p not in hints:
            where = f"in '{'.'.join(path[:-1])}'" if i else "at the top level"
            raise ConfigError(f"unknown key '{'.'.join(path)}'; valid keys {where}: {', '.join(hints)}")
        tp = hints[p]
        last = i == len(parts) - 1
        if last:
            node[p] = _parse_value(raw, tp)
        else:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"key '{'.'.join(path)}' is a value, not a section")
            node = node.setdefault(p, {})
            node_cls = tp


def load_config(path: Optional[str] = None, overrides: Sequence[str] = (), *, methods: Registry) -> Config:
    """Defaults, then the YAML file (if any), then the dotted overrides.

    ``methods``: the method registry (``reid_srdl.methods.METHODS``), which gives the
    ``method`` section its keys; ``reid_srdl.load_config`` passes the built-in one.
    """
    tree: Dict[str, Any] = load_yaml_dict(path) if path else {}
    for text in overrides:
        parts, raw = parse_override(text)
        _set_dotted(tree, parts, raw, Config, methods)
    cfg = _build(Config, tree, methods)
    validate(cfg, methods)
    return cfg


_CHOICES = {
    ("data", "sampler"): ("random", "identity"),
    ("model", "neck"): ("plain", "bnneck"),
    ("model", "pretrained"): ("", "imagenet"),
    ("optim", "name"): ("sgd", "adam", "adamw"),
    ("optim", "schedule"): ("step", "cosine"),
    ("eval", "pool"): ("mean", "max"),
    ("eval", "ap"): ("torchreid", "official"),
    ("eval", "precision"): PRECISIONS,
    ("train", "precision"): PRECISIONS,
}


# --------------------------------------------------------------------------- ranges
def range_problem(value, minimum=None, maximum=None, above=None) -> Optional[str]:
    """What is wrong with a number against its allowed range, or None.

    ``minimum``/``maximum`` are inclusive bounds, ``above`` an exclusive lower bound; a
    float must also be finite (NaN and infinity fail every range).  The one range check
    of the project: config keys (:func:`check_range`) and CLI arguments (:func:`int_arg`).
    """
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        return f"must be in {minimum}..{maximum}, got {value}"
    if minimum is not None and value < minimum:
        return f"must be >= {minimum}, got {value}"
    if maximum is not None and value > maximum:
        return f"must be <= {maximum}, got {value}"
    if above is not None and not value > above:
        return f"must be > {above}, got {value}"
    return None


def check_range(key: str, value, minimum=None, maximum=None, above=None, why: str = "") -> None:
    """A :class:`ConfigError` naming ``key`` if ``value`` is outside the range."""
    problem = range_problem(value, minimum, maximum, above)
    if problem:
        raise ConfigError(f"{key} {problem}" + (f" ({why})" if why else ""))


def check_choice(key: str, value, choices) -> None:
    """A :class:`ConfigError` naming ``key`` if ``value`` is not one of ``choices``."""
    if value not in choices:
        shown = ", ".join("'' (none)" if c == "" else str(c) for c in choices)
        raise ConfigError(f"{key}='{value}' is not one of: {shown}")


def int_arg(minimum=None, maximum=None):
    """An argparse ``type=`` for an int in a range: ``--height 0`` is refused by argparse
    with one line (``argument --height: must be >= 1, got 0``) and exit code 2."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects an integer, got '{text}'") from None
        problem = range_problem(value, minimum, maximum)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = "int"  # argparse names the type in some messages
    return parse


# Market-1501 pids are 1..1501; a synthetic set needs a few identities on each side.
SYNTHETIC_IDS = (4, 1501)

#: Upper bounds of keys that size an allocation or start processes: far above any real
#: setting, low enough that a typo is one line instead of an out-of-memory kill.  (Image
#: sides and feature sizes: the limits every file is read with, core/limits.py, so that a
#: run's final.pt loads again.)
MAX_BATCH = 65536
MAX_WORKERS = 128
MAX_EPOCHS = 100_000
MAX_RANK = 100_000


def _ranges():
    """(key, keyword arguments of check_range): keys a type alone cannot constrain.  Built
    when checked, so that a limit raised at run time (core/limits.py) takes effect."""
    return (
        ("data.height", dict(minimum=1, maximum=limits.MAX_INPUT_SIDE)),
        ("data.width", dict(minimum=1, maximum=limits.MAX_INPUT_SIDE)),
        ("model.feature_dim", dict(minimum=0, maximum=limits.MAX_FEATURE_DIM, why="0 = no feature layer")),
    ) + _RANGES


_RANGES = (
    ("data.synthetic_ids", dict(minimum=SYNTHETIC_IDS[0], maximum=SYNTHETIC_IDS[1])),
    ("data.synthetic_seed", dict(minimum=0)),
    ("data.batch_size", dict(minimum=1, maximum=MAX_BATCH)),
    ("data.test_batch_size", dict(minimum=1, maximum=MAX_BATCH)),
    ("data.workers", dict(minimum=-1, maximum=MAX_WORKERS, why="-1 = auto")),
    ("data.cache_mb", dict(minimum=0, why="0 = decode every step")),
    ("data.train_subset", dict(minimum=0, why="0 = all")),
    ("data.split_id", dict(minimum=0)),
    ("data.num_instances", dict(minimum=1, maximum=MAX_BATCH)),
    ("data.random_erasing", dict(minimum=0.0, maximum=1.0, why="a probability")),
    ("loss.label_smoothing", dict(minimum=0.0, why="an epsilon in [0, 1)")),
    ("loss.triplet_weight", dict(minimum=0.0, why="0 = off")),
    ("loss.triplet_margin", dict(minimum=0.0)),
    ("optim.lr", dict(above=0)),
    ("optim.momentum", dict(minimum=0, maximum=1)),
    ("optim.weight_decay", dict(minimum=0)),
    ("optim.gamma", dict(above=0)),
    ("optim.warmup_epochs", dict(minimum=0, maximum=MAX_EPOCHS)),
    ("train.epochs", dict(minimum=1, maximum=MAX_EPOCHS)),
    ("train.seed", dict(minimum=0)),
    ("train.max_batches", dict(minimum=0, why="0 = whole epoch")),
    ("train.dist_timeout", dict(above=0, maximum=7 * 86400, why="seconds")),
    ("eval.max_rank", dict(minimum=1, maximum=MAX_RANK)),
    ("eval.rerank_k1", dict(minimum=1, maximum=MAX_RANK)),
    ("eval.rerank_k2", dict(minimum=1, maximum=MAX_RANK)),
    ("eval.rerank_lambda", dict(minimum=0.0, maximum=1.0)),
)


def _get_dotted(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _unusable_scalar(value, key: str) -> Optional[str]:
    """The problem with the first value no key can mean, or None: a NaN or infinite float
    (sections, method options, lists), a string holding a NUL byte (no path or name has one)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{key} must be a finite number, got {value}"
    if isinstance(value, str):
        return f"{key} must not contain a NUL byte, got {_shown(value)}" if "\0" in value else None
    if isinstance(value, MethodConfig):
        found = (_unusable_scalar(options, f"{key}.{name}") for name, options in value.options)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        found = (_unusable_scalar(getattr(value, f.name), f"{key}.{f.name}") for f in dataclasses.fields(value))
    elif isinstance(value, (list, tuple)):
        found = (_unusable_scalar(v, f"{key}[{i}]") for i, v in enumerate(value))
    else:
        return None
    return next((problem for problem in found if problem is not None), None)


def validate(cfg: Config, methods: Registry) -> None:
    """Value checks that types alone cannot express.  (Data set names are checked by
    ``reid_srdl.data.build_data`` against the data registries, which this layer cannot import.)

    No float key of the project means anything as NaN or infinity (a NaN weight would switch
    its loss term off, every comparison with it being false): each is refused by name.
    """
    for f in dataclasses.fields(cfg):
        problem = _unusable_scalar(getattr(cfg, f.name), f.name)
        if problem:
            raise ConfigError(problem)
    for (section, key), choices in _CHOICES.items():
        check_choice(f"{section}.{key}", getattr(getattr(cfg, section), key), choices)
    for key, bounds in _ranges():
        check_range(key, _get_dotted(cfg, key), **bounds)
    # The method's own options checked themselves when they were built; its name and the
    # epochs it needs come from the method registry.
    if cfg.method.name not in methods:
        raise ConfigError(f"method.name='{cfg.method.name}' is not one of: {', '.join(methods.list())}")
    needed = getattr(methods.get(cfg.method.name), "min_epochs", 1)
    if cfg.train.epochs < needed:
        raise ConfigError(f"method '{cfg.method.name}' needs train.epochs >= {needed}, got {cfg.train.epochs}")
    name = cfg.train.run_name
    if name in (".", "..") or "/" in name or os.sep in name:
        raise ConfigError(
            f"train.run_name must be one folder name (no '/'), got {name!r}; put the parent folder in train.output_dir"
        )
    for m in cfg.optim.milestones:
        if not 0.0 < m < 1.0:
            raise ConfigError(f"optim.milestones are fractions in (0, 1), got {m}")
    _validate_recipe(cfg)


def _validate_weights(model: ModelConfig) -> None:
    """Before anything is built or fetched: one source of weights, and a URL that may be fetched."""
    if model.pretrained and model.weights:
        raise ConfigError(
            f"model.pretrained={model.pretrained} and model.weights={model.weights} both choose the weights: "
            f"give one of them"
        )
    if is_url(model.weights):
        try:
            check_url(model.weights, what="model.weights URL")
        except DownloadError as e:
            raise ConfigError(str(e)) from None


def _validate_recipe(cfg: Config) -> None:
    """The strong-baseline keys: sampler, augmentation, neck, loss terms, warm-up."""
    data, loss = cfg.data, cfg.loss
    if data.sampler == "identity":
        k, batch = data.num_instances, data.batch_size
        if k < 1 or k > batch or batch % k:
            raise ConfigError(
                f"data.sampler=identity takes batches of P identities x K images: data.num_instances (K={k}) "
                f"must be between 1 and data.batch_size ({batch}) and divide it"
            )
    # (Ranges of single keys, NaN and infinity included: _ranges(), checked by validate.)
    _validate_weights(cfg.model)
    if not loss.label_smoothing < 1.0:
        raise ConfigError(f"loss.label_smoothing is an epsilon in [0, 1), got {loss.label_smoothing}")
    if loss.triplet_weight > 0 and data.sampler != "identity":
        # Allowed (torchreid allows it), but a random batch of a large re-id set holds few
        # positive pairs, so most anchors have nothing to mine.
        logger.warning(
            "loss.triplet_weight > 0 with data.sampler=%s: batch-hard mining needs positives in "
            "the batch; data.sampler=identity gives each identity num_instances images",
            data.sampler,
        )


def save_config(cfg: Config, path: str) -> None:
    """Write the resolved config as YAML (atomically: temp file, then rename)."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
