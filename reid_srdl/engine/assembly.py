"""Run assembly: a Config turned into everything a training run needs, fresh or resumed.

:func:`assemble_run` builds the data (checking every evaluation image before anything
expensive), the network factory, the method, the stages and the learning rate of every
epoch, and -- for ``--resume`` -- restores the training state.  It does no training: the
loop (engine.loop) and the report (engine.report) take the :class:`Run` from here.
"""

import functools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from reid_srdl.config import Config, ConfigError, completed_saved, flat_dict, matches_saved, save_config, to_dict
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.core import distributed as ddp
from reid_srdl.core import seeding
from reid_srdl.core.precision import resolve_precision
from reid_srdl.core.schema import SchemaError, check
from reid_srdl.engine.preflight import preflight_evaluation_data
from reid_srdl.engine.schedule import epoch_learning_rates
from reid_srdl.methods import Method, Recipe, StageContext, StageSpec, build_method

log = logging.getLogger(__name__)


def resolve_device(name: str, local_rank: Optional[int] = None) -> torch.device:
    """``local_rank`` (under torchrun): each process takes its own GPU, ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device='{name}' but no CUDA device is available; use train.device=cpu or auto")
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return device


def build_optimizer(module: torch.nn.Module, optim_cfg) -> torch.optim.Optimizer:
    """``optim.name``: SGD (momentum, Nesterov), Adam (L2 weight decay in the gradient, as BoT)
    or AdamW (decoupled weight decay); default betas.  The loop sets the learning rate of
    every epoch."""
    params = [p for p in module.parameters() if p.requires_grad]
    if optim_cfg.name == "adam":
        return torch.optim.Adam(params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay)
    if optim_cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay)
    return torch.optim.SGD(
        params,
        lr=optim_cfg.lr,
        momentum=optim_cfg.momentum,
        nesterov=optim_cfg.nesterov and optim_cfg.momentum > 0,
        weight_decay=optim_cfg.weight_decay,
    )


def run_dir_for(cfg: Config) -> str:
    """The run folder a new run asks for: ``train.run_name``, or a timestamped name (which
    :func:`claim_run_dir` makes unique)."""
    name = cfg.train.run_name or "{}_{}_{}_{}".format(
        cfg.data.label, cfg.model.name, cfg.method.name, time.strftime("%Y%m%d-%H%M%S")
    )
    return os.path.join(cfg.train.output_dir, name)


def claim_run_dir(cfg: Config) -> ckpt.RunDirClaim:
    """Create the new run's folder atomically: a timestamped name gets a suffix (_2, _3...)
    when another run took it in the same second; a chosen ``train.run_name`` is reused only
    if it holds no training state.  Under torchrun rank 0 alone calls this and broadcasts
    the name (tools/train.py)."""
    return ckpt.create_run_dir(run_dir_for(cfg), unique=not cfg.train.run_name)


def config_differences(saved: dict, current: dict) -> List[str]:
    """``key: old -> new`` for every dotted key whose value differs (or exists on one side)."""
    old, new = flat_dict(saved), flat_dict(current)
    missing = object()
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            show = lambda v: "(absent)" if v is missing else repr(v)
            diffs.append(f"{key}: {show(a)} -> {show(b)}")
    return diffs


@dataclass(frozen=True)
class Precision:
    """What the training step runs in: the resolved precision and the memory layout."""

    mode: str  # fp32 | bf16 | fp16
    channels_last: bool

    @property
    def uses_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling (GradScaler); bf16 has fp32's range."""
        return self.mode == "fp16"


def training_precision(setting: str, channels_last: bool, device: torch.device) -> Precision:
    """``train.precision`` on ``device``: auto picks bf16 only where it pays
    (core.precision.resolve_precision) and always the channels-last layout, which was faster
    in fp32 as well as in bf16 on every CPU measured (ResNet-50 step 1.29x, small_reid 1.35x on
    an Intel Xeon without AMX; 1.44x fp32 on an AMD EPYC: benchmarks/bench_train_step.py).
    Explicit ``fp32`` keeps the NCHW layout: the exact path the reproducibility tests pin."""
    mode = resolve_precision(setting, device, "train.precision")
    return Precision(mode, channels_last or setting == "auto")


@dataclass
class TrainingState:
    """What a resume restores beyond the weights: the next epoch, the optimizer of the
    current stage, the time and FLOPs counted so far."""

    start_epoch: int = 0
    optimizer_state: Optional[Dict[str, Any]] = None
    history: Dict[str, float] = field(default_factory=lambda: {"train_seconds": 0.0})
    stage_flops: List[int] = field(default_factory=list)


@dataclass
class Run:
    """Everything assembled for one training run."""

    cfg: Config
    run_dir: str
    dist: ddp.DistEnv
    device: torch.device
    precision: Precision
    data: Any  # reid_srdl.data.DataBundle
    method: Method
    stages: List[StageSpec]
    lrs: List[float]  # the learning rate of every global epoch
    state: TrainingState
    context: StageContext

    @property
    def stage_starts(self) -> List[int]:
        """The first global epoch of every stage, and the total number of epochs last."""
        return np.cumsum([0] + [s.epochs for s in self.stages]).tolist()

    def stage_of(self, epoch: int) -> int:
        return int(np.searchsorted(self.stage_starts, epoch, side="right") - 1)

    def place(self) -> None:
        """The method (and every network it holds) on the run's device and memory layout."""
        self.method.to(self.device)
        if self.precision.channels_last:
            self.method.to(memory_format=torch.channels_last)


def assemble_run(cfg: Config, run_dir: str, resume: bool = False) -> Run:
    """Data, method and schedule for ``cfg``; with ``resume``, the state saved in ``run_dir``.

    Under torchrun every rank assembles the same run; rank 0 alone writes the run folder.
    """
    from reid_srdl.data import build_data
    from reid_srdl.data.build import distributed_train_loader
    from reid_srdl.models import build_model
    from reid_srdl.models.weights import resolve_weights

    saved = None
    if resume:
        # Before anything expensive: last.pt read safely, its fields checked against their
        # schema and its config against the run's, every other .pt of the run readable.
        saved = ckpt.load_train_state(run_dir, cfg.train.epochs)
        check_saved_config(cfg, saved, run_dir)
        ckpt.verify_run_files(run_dir)  # stage files too (SRDL's stage1.pt), before training
    # The backbone's weights first (fetched into torch's cache if named by URL or by
    # model.pretrained): an unreachable or wrong source stops the run before the data work.
    weights = resolve_weights(cfg.model.name, cfg.model.weights, cfg.model.pretrained)
    dist = ddp.current_env()
    device = resolve_device(cfg.train.device, dist.local_rank if dist.enabled else None)
    precision = training_precision(cfg.train.precision, cfg.train.channels_last, device)
    data = build_data(cfg.data, seed=cfg.train.seed, device_type=device.type)
    # Before anything expensive (teachers, training): every evaluation image is readable
    # and the protocol has a valid query, or the run stops here in one line.
    preflight_evaluation_data(data)
    if ddp.process_group_active():
        # Also with WORLD_SIZE=1, so that `torchrun --nproc_per_node=1` is the exact
        # single-process reference of an N-process run (same global batches).
        data.train_loader = distributed_train_loader(data.train_loader, dist.rank, dist.world_size, cfg.train.seed)
    model_factory = functools.partial(
        build_model,
        cfg.model.name,
        data.num_classes,
        feature_dim=cfg.model.feature_dim,
        weights=weights,
        in_channels=data.in_channels,
        neck=cfg.model.neck,
    )
    # The network's initialisation: a stream of its own, drawn right before building.
    seeding.seed_everything(seeding.derive_seed(cfg.train.seed, seeding.MODEL_INIT))
    method = build_method(
        cfg.method,
        model_factory,
        total_epochs=cfg.train.epochs,
        num_classes=data.num_classes,
        seed=cfg.train.seed,
        recipe=Recipe.from_config(cfg.loss),
    )
    stages = method.stages()
    lrs = epoch_learning_rates(
        [s.epochs for s in stages],
        cfg.optim.lr,
        cfg.optim.milestones,
        cfg.optim.gamma,
        per_stage=method.per_stage_schedule,
        schedule=cfg.optim.schedule,
        warmup_epochs=cfg.optim.warmup_epochs,
    )
    context = StageContext(run_dir, device, data, cfg.train.progress, precision.channels_last)
    run = Run(cfg, run_dir, dist, device, precision, data, method, stages, lrs, TrainingState(), context)
    if resume:
        restore(run, saved)
    elif dist.is_main:
        os.makedirs(run_dir, exist_ok=True)
        save_config(cfg, os.path.join(run_dir, ckpt.CONFIG_FILE))
    ddp.barrier()  # the run folder exists for every rank from here on
    run.place()
    log.info("training precision: %s%s", precision.mode, ", channels-last" if precision.channels_last else "")
    log.info("data loader workers: %d", data.train_loader.num_workers)
    return run


def check_saved_config(cfg: Config, saved: dict, run_dir: str) -> None:
    """The config a training state was written with (if it kept one) must describe ``cfg``
    (keys added to the schema since take their defaults)."""
    config = saved.get("config")
    if config is not None and not matches_saved(cfg, config):
        diffs = config_differences(completed_saved(config), to_dict(cfg))
        shown = "; ".join(diffs[:5]) + (f"; ... ({len(diffs)} keys in all)" if len(diffs) > 5 else "")
        raise ckpt.CheckpointError(
            f"cannot resume {run_dir}: its {ckpt.CONFIG_FILE} differs from the config the training state "
            f"was written with (saved -> now): {shown}; restore those values or start a new run"
        )


def check_stage_fields(run: Run, saved: dict) -> None:
    """The fields of a training state (already checked against ``file_schemas.train_state``)
    that depend on the run's stages and method: the method's own state, the FLOPs counted per
    stage begun, and an optimizer state wherever the epoch falls inside a stage."""
    where = f"cannot resume {os.path.join(run.run_dir, ckpt.LAST_FILE)}"
    epoch = saved["epoch"]
    try:
        check(saved["method"], run.method.extra_state_schema(epoch), f"{where}: method")
    except SchemaError as e:
        raise ckpt.CheckpointError(f"{e} (the state after {epoch} of {run.cfg.train.epochs} epochs)") from None
    begun = run.stage_of(epoch - 1) + 1 if epoch else 0  # the stages epochs 1..epoch trained in
    flops = saved.get("stage_flops", [])
    if len(flops) > begun:
        raise ckpt.CheckpointError(
            f"{where}: stage_flops: {len(flops)} entries, but epoch {epoch} is in stage {begun} "
            f"(one entry per stage begun)"
        )
    if epoch not in run.stage_starts and saved.get("optimizer") is None:
        raise ckpt.CheckpointError(
            f"{where}: optimizer: missing, but epoch {epoch} is inside stage {begun}, whose optimizer "
            f"state (momentum, moments) an exact resume needs"
        )


def restore(run: Run, saved: dict) -> None:
    """Put a saved training state (last.pt, as :func:`ckpt.load_train_state` checked it) into
    ``run``; its config must describe ``run.cfg``."""
    check_saved_config(run.cfg, saved, run.run_dir)
    check_stage_fields(run, saved)
    run.method.load_extra_state(saved["method"], run.run_dir)
    ckpt.load_state_dict_checked(run.method.trainable, saved["trainable"], os.path.join(run.run_dir, ckpt.LAST_FILE))
    run.state = TrainingState(
        start_epoch=int(saved["epoch"]),
        optimizer_state=saved.get("optimizer"),
        history=dict(saved.get("history", {"train_seconds": 0.0})),
        stage_flops=list(saved.get("stage_flops", [])),
    )


def _shown_value(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: Optimizer settings that come from the config: a training state must have been written
#: with the same (the learning rate is set by the loop every epoch, so it is not compared).
_OPTIMIZER_SETTINGS = ("momentum", "dampening", "nesterov", "weight_decay", "betas", "eps", "amsgrad", "maximize")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, source: str) -> None:
    """``optimizer.load_state_dict(state)`` after checking that ``state`` fits it: as many
    parameter groups and parameters, the config's settings, and every saved buffer (momentum,
    Adam's moments) of its parameter's shape; otherwise a :class:`CheckpointError` naming the
    field, not a traceback at the first step."""
    where = f"cannot resume {source}: optimizer"
    own_groups, saved_groups = optimizer.param_groups, state["param_groups"]
    if len(saved_groups) != len(own_groups):
        raise ckpt.CheckpointError(
            f"{where}.param_groups: {len(saved_groups)} groups, the optimizer has {len(own_groups)}"
        )
    params: Dict[Any, torch.nn.Parameter] = {}
    for g, (own, saved) in enumerate(zip(own_groups, saved_groups)):
        ids = saved.get("params")
        if not isinstance(ids, (list, tuple)) or not all(type(i) is int for i in ids) or len(ids) != len(own["params"]):
            raise ckpt.CheckpointError(
                f"{where}.param_groups[{g}].params: expected the {len(own['params'])} parameter numbers of "
                f"the network, got {_shown_value(ids)}"
            )
        for key in _OPTIMIZER_SETTINGS:
            if key in own and key in saved:
                mine, theirs = own[key], saved[key]
                if isinstance(mine, tuple) and isinstance(theirs, list):
                    theirs = tuple(theirs)
                if theirs != mine:
                    raise ckpt.CheckpointError(
                        f"{where}.param_groups[{g}].{key}: {_shown_value(theirs)}, but the config gives {mine!r}"
                    )
        params.update(zip(ids, own["params"]))
    for key, buffers in state["state"].items():
        if key not in params:
            raise ckpt.CheckpointError(f"{where}.state: an entry {_shown_value(key)} for no parameter of the optimizer")
        if not isinstance(buffers, dict):
            raise ckpt.CheckpointError(f"{where}.state.{key}: expected a mapping, got {type(buffers).__name__}")
        shape = tuple(params[key].shape)
        for name, value in buffers.items():
            if value is None:  # e.g. SGD's momentum buffer before its first step
                continue
            if isinstance(value, torch.Tensor):
                # A buffer has its parameter's shape; a step count is a scalar.
                bad = value.dim() > 0 and (tuple(value.shape) != shape or not value.is_floating_point())
                detail = f"a {tuple(value.shape)} {value.dtype} tensor, the parameter is {shape}"
            else:
                bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                detail = _shown_value(value)
            if bad:
                raise ckpt.CheckpointError(f"{where}.state.{key}.{name}: does not fit: {detail}")
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ckpt.CheckpointError(f"{where}: does not fit the optimizer: {str(e).splitlines()[0]}") from None


def training_state_dict(run: Run, epochs_done: int, optimizer: Optional[torch.optim.Optimizer]) -> dict:
    """The plain-data last.pt after ``epochs_done`` epochs."""
    at_stage_start = epochs_done in run.stage_starts
    return {
        "format": ckpt.TRAIN_STATE_FORMAT,
        "epoch": epochs_done,
        "trainable": run.method.trainable.state_dict(),
        # A new stage builds a fresh optimizer: nothing to carry over at a boundary.
        "optimizer": None if at_stage_start or optimizer is None else optimizer.state_dict(),
        "method": run.method.extra_state(),
        "history": run.state.history,
        "stage_flops": run.state.stage_flops,
        "config": to_dict(run.cfg),
    }
