"""Typed configuration: dataclasses loaded from YAML, dotted overrides, strict checking.

Precedence: dataclass defaults (the CPU demo) < YAML file (with one level of ``_base_``)
< ``section.key=value`` overrides from the command line.  An unknown key or a value of the
wrong type is a :class:`ConfigError` naming the key and the valid ones.  Each package's
``build_*`` function turns its own section into explicit arguments; library code never
reads this object deep inside.
"""
import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from reid_srdl.errors import ReidSrdlError


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
    workers: int = 2
    # Train on a fixed-seed random subset of N samples (0 = all); classification only.
    train_subset: int = 0

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
    # reid: resnet50 | densenet121 | small_reid ; classification: resnet32 | resnet110 |
    # wrn28_10 | densenet_bc_190_40 | resnet8 ...  (tools/train.py --list-models)
    name: str = "small_reid"
    feature_dim: int = 128
    # Local file with ImageNet weights for the backbone; "" = random initialisation.
    weights: str = ""


@dataclass(frozen=True)
class SRDLConfig:
    temperature: float = 3.0
    # complete: each stage has its own full step decay; incomplete: one decay over all epochs.
    schedule: str = "complete"
    # True: stage 2 restarts from a fresh initialisation; False: continues from stage 1.
    restart: bool = True
    # Also evaluate the ensemble of the stage-1 and stage-2 models.
    ensemble: bool = True


@dataclass(frozen=True)
class KDConfig:
    # Run directory or checkpoint file of the frozen teacher.
    teacher: str = ""
    # Teacher architecture; "" = read it from the teacher run's config.
    teacher_model: str = ""
    temperature: float = 3.0
    ce_weight: float = 1.0
    kd_weight: float = 1.0


@dataclass(frozen=True)
class ONEConfig:
    branches: int = 3
    temperature: float = 3.0
    # Consistency ramp-up of the KL weight over this many epochs (0 = constant weight 1).
    ramp_epochs: int = 80
    # Also evaluate the gated ensemble of all branches (reported as "ensemble"); final.pt
    # stays branch 1, a plain network.
    deploy_ensemble: bool = False


@dataclass(frozen=True)
class BYOTConfig:
    temperature: float = 3.0
    # Weight of the KL to the deepest exit in each shallow exit's loss; (1 - alpha) on its CE.
    alpha: float = 0.3
    # Weight of the feature hint (squared L2, summed over dimensions, batch mean).
    hint_weight: float = 0.03


@dataclass(frozen=True)
class FRSKDConfig:
    temperature: float = 4.0
    alpha: float = 2.0
    beta: float = 100.0
    # Channels of the self-teacher's BiFPN layers.
    width: int = 64


@dataclass(frozen=True)
class MethodConfig:
    # vanilla | kd | srdl | one | byot | frskd
    name: str = "srdl"
    srdl: SRDLConfig = field(default_factory=SRDLConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    one: ONEConfig = field(default_factory=ONEConfig)
    byot: BYOTConfig = field(default_factory=BYOTConfig)
    frskd: FRSKDConfig = field(default_factory=FRSKDConfig)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 2e-4
    # Step decay points as fractions of a stage's epochs, and the factor applied at each.
    milestones: Tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1


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
    channels_last: bool = False
    # Mixed precision: bf16 autocast on CPU, fp16 AMP on CUDA.
    amp: bool = False
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
    # Feature extraction (reid_srdl.evaluation.features.extract_features): fp32 (exact) |
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
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- conversion
def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp, key: str):
    """Check `value` against the annotation `tp`; return it in the field's own type."""
    origin = typing.get_origin(tp)
    if origin in (tuple, list, Tuple, List, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"key '{key}' expects a list, got {type(value).__name__} {value!r}")
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
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
    elif tp is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, key)
        raise ConfigError(f"key '{key}' is a section; give it as a mapping, got {value!r}")
    raise ConfigError(
        f"key '{key}' expects {_type_name(tp)}, got {type(value).__name__} {value!r}"
    )


def _build(cls, values: Dict[str, Any], prefix: str = ""):
    """Instantiate dataclass `cls` from a (possibly partial) nested dict, strictly."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in values.items():
        dotted = f"{prefix}.{k}" if prefix else k
        if k not in hints:
            where = f"in '{prefix}'" if prefix else "at the top level"
            raise ConfigError(f"unknown key '{dotted}'; valid keys {where}: {', '.join(names)}")
        kwargs[k] = _coerce(v, hints[k], dotted)
    return cls(**kwargs)


def to_dict(cfg) -> Dict[str, Any]:
    """Plain nested dict (lists for tuples), ready for YAML/JSON."""

    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def matches_saved(cfg: Config, saved: Dict[str, Any]) -> bool:
    """Whether a config dict saved with a run (``to_dict`` of its config) describes ``cfg``.

    Keys added to the schema since the run was written take their defaults, so a run from an
    older version resumes as long as it set nothing differently.
    """
    try:
        return to_dict(_build(Config, saved)) == to_dict(cfg)
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
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
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
    base_path = os.path.join(os.path.dirname(os.path.abspath(path)), base_ref)
    base = _read_yaml(base_path)
    if "_base_" in base:
        raise ConfigError(
            f"{base_path} has its own _base_; only one level of _base_ is supported"
        )
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
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _set_dotted(tree: Dict[str, Any], parts: List[str], raw: str, cls) -> None:
    """Put the value `raw` at `parts` in the nested dict, checking each step against the schema."""
    node, node_cls, path = tree, cls, []
    for i, p in enumerate(parts):
        path.append(p)
        hints = typing.get_type_hints(node_cls)
        if p not in hints:
            where = f"in '{'.'.join(path[:-1])}'" if i else "at the top level"
            raise ConfigError(
                f"unknown key '{'.'.join(path)}'; valid keys {where}: "
                f"{', '.join(f.name for f in dataclasses.fields(node_cls))}"
            )
        tp = hints[p]
        last = i == len(parts) - 1
        if last:
            node[p] = _parse_value(raw, tp)
        else:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"key '{'.'.join(path)}' is a value, not a section")
            node = node.setdefault(p, {})
            node_cls = tp


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file (if any), then the dotted overrides."""
    tree: Dict[str, Any] = load_yaml_dict(path) if path else {}
    for text in overrides:
        parts, raw = parse_override(text)
        _set_dotted(tree, parts, raw, Config)
    cfg = _build(Config, tree)
    validate(cfg)
    return cfg


_CHOICES = {
    ("method", "name"): ("vanilla", "kd", "srdl", "one", "byot", "frskd"),
    ("eval", "pool"): ("mean", "max"),
    ("eval", "ap"): ("torchreid", "official"),
    ("eval", "precision"): ("fp32", "bf16", "fp16", "auto"),
}


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express.  (Data set names are checked by
    ``reid_srdl.data.build_data`` against the data registries, which this layer cannot import.)"""
    for (section, key), choices in _CHOICES.items():
        v = getattr(getattr(cfg, section), key)
        if v not in choices:
            raise ConfigError(f"{section}.{key}='{v}' is not one of: {', '.join(choices)}")
    if cfg.method.srdl.schedule not in ("complete", "incomplete"):
        raise ConfigError(
            f"method.srdl.schedule='{cfg.method.srdl.schedule}' is not one of: complete, incomplete"
        )
    if cfg.train.epochs < 1:
        raise ConfigError(f"train.epochs must be >= 1, got {cfg.train.epochs}")
    if cfg.method.name == "srdl" and cfg.train.epochs < 2:
        raise ConfigError("SRDL needs train.epochs >= 2 (two stages of epochs/2)")
    if cfg.data.batch_size < 1 or cfg.data.test_batch_size < 1:
        raise ConfigError("data.batch_size and data.test_batch_size must be >= 1")
    if cfg.data.split_id < 0:
        raise ConfigError(f"data.split_id must be >= 0, got {cfg.data.split_id}")
    if cfg.train.dist_timeout <= 0:
        raise ConfigError(f"train.dist_timeout must be > 0 seconds, got {cfg.train.dist_timeout}")
    if cfg.eval.rerank_k1 < 1 or cfg.eval.rerank_k2 < 1:
        raise ConfigError(f"eval.rerank_k1 and eval.rerank_k2 must be >= 1, got {cfg.eval.rerank_k1}, {cfg.eval.rerank_k2}")
    if not 0.0 <= cfg.eval.rerank_lambda <= 1.0:
        raise ConfigError(f"eval.rerank_lambda must be in [0, 1], got {cfg.eval.rerank_lambda}")
    for m in cfg.optim.milestones:
        if not 0.0 < m < 1.0:
            raise ConfigError(f"optim.milestones are fractions in (0, 1), got {m}")


def save_config(cfg: Config, path: str) -> None:
    """Write the resolved config as YAML (atomically: temp file, then rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
    os.replace(tmp, path)
