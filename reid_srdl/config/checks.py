"""Value checks of a loaded configuration that types alone cannot express: choices, ranges
(NaN and infinity refused by name), the method's epochs, the recipe's combinations.
"""

import argparse
import dataclasses
import logging
import math
import os
from typing import Optional

from reid_srdl.config.schema import Config, ConfigError, MethodConfig, ModelConfig, shown
from reid_srdl.core import limits
from reid_srdl.core.download import DownloadError, check_url, is_url
from reid_srdl.core.precision import PRECISIONS
from reid_srdl.core.registry import Registry

logger = logging.getLogger(__name__)


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
        return f"{key} must not contain a NUL byte, got {shown(value)}" if "\0" in value else None
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
