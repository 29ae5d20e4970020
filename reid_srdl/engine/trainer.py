"""One generic training loop: ``out = method(images, labels, indices)``; backward; step.

The loop never knows which method it runs.  It owns: stages (a fresh optimizer at the
start of each), the learning rate of every epoch, mixed precision, the non-finite-loss
guard, checkpoints after every epoch, resume, logging and the end-of-run evaluation.
"""
import contextlib
import dataclasses
import functools
import json
import os
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from tqdm import tqdm

from reid_srdl.config import Config, ConfigError, completed_saved, flat_dict, matches_saved, save_config, to_dict
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.core import distributed as ddp
from reid_srdl.core import seeding
from reid_srdl.core.files import write_bytes_atomic
from reid_srdl.engine.flops import parameter_count, training_forward_flops
from reid_srdl.engine.logger import RunLogger, format_epoch, read_epoch_records
from reid_srdl.engine.preflight import preflight_evaluation_data
from reid_srdl.evaluation.features import sharded_feature_extractor
from reid_srdl.engine.schedule import epoch_learning_rates
from reid_srdl.methods import Method, Recipe, StageContext, build_method

_NOT_TERMS = ("loss", "logits", "acc")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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


def epoch_seed(seed: int, epoch: int) -> int:
    """The model-side random stream of one epoch (dropout), its own for every (run seed,
    epoch), so a resumed run replays exactly the epochs an uninterrupted run would have.
    (The training order and augmentations have their own streams: data.indexed.SeededSampler.)"""
    return seeding.derive_seed(seed, seeding.EPOCH, epoch)


def build_optimizer(module: torch.nn.Module, optim_cfg) -> torch.optim.Optimizer:
    """``optim.name``: SGD (momentum, Nesterov), Adam (L2 weight decay in the gradient, as BoT)
    or AdamW (decoupled weight decay); default betas.  The trainer sets the learning rate of
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
            show = lambda v: "(absent)" if v is missing else repr(v)  # noqa: E731
            diffs.append(f"{key}: {show(a)} -> {show(b)}")
    return diffs


class _NoLogger:
    """What ranks other than 0 log to: nothing (rank 0 writes the run directory)."""

    def log_epoch(self, record):
        pass

    def log_results(self, flat, step):
        pass

    def close(self):
        pass


class Trainer:
    """Build everything from a Config, train all stages, evaluate, write the run directory.

    Under torchrun (a process group initialised by :func:`ddp.init_distributed`) every rank
    builds the same Trainer: the training step runs in DistributedDataParallel on its share
    of each global batch, rank 0 alone writes checkpoints, logs and results, and per-sample
    inference (SRDL's logit bank, evaluation features) is sharded across ranks and gathered.
    """

    def __init__(self, cfg: Config, run_dir: str, resume: bool = False):
        from reid_srdl.data import build_data
        from reid_srdl.data.build import distributed_train_loader
        from reid_srdl.models import build_model

        self.cfg = cfg
        self.run_dir = run_dir
        self.dist = ddp.current_env()
        self.device = resolve_device(cfg.train.device, self.dist.local_rank if self.dist.enabled else None)
        self.data = build_data(cfg.data, seed=cfg.train.seed)
        # Before anything expensive (teachers, training): every evaluation image is
        # readable and the protocol has a valid query, or the run stops here in one line.
        preflight_evaluation_data(self.data)
        if ddp.process_group_active():
            # Also with WORLD_SIZE=1, so that `torchrun --nproc_per_node=1` is the exact
            # single-process reference of an N-process run (same global batches).
            self.data.train_loader = distributed_train_loader(
                self.data.train_loader, self.dist.rank, self.dist.world_size, cfg.train.seed
            )
        # The DDP wrapper of the current stage's trainable network (rebuilt when the method
        # replaces it, e.g. SRDL's restart at the stage boundary).
        self._ddp_module: Optional[torch.nn.Module] = None
        self._ddp_wrapped: Optional[torch.nn.Module] = None
        self.model_factory = functools.partial(
            build_model,
            cfg.model.name,
            self.data.num_classes,
            feature_dim=cfg.model.feature_dim,
            weights=cfg.model.weights,
            in_channels=self.data.in_channels,
            neck=cfg.model.neck,
        )
        # The network's initialisation: a stream of its own, drawn right before building.
        seeding.seed_everything(seeding.derive_seed(cfg.train.seed, seeding.MODEL_INIT))
        self.method: Method = build_method(
            cfg.method,
            self.model_factory,
            total_epochs=cfg.train.epochs,
            num_classes=self.data.num_classes,
            seed=cfg.train.seed,
            recipe=Recipe.from_config(cfg.loss),
        )
        self.stages = self.method.stages()
        self.stage_starts = np.cumsum([0] + [s.epochs for s in self.stages]).tolist()
        self.lrs = epoch_learning_rates(
            [s.epochs for s in self.stages],
            cfg.optim.lr,
            cfg.optim.milestones,
            cfg.optim.gamma,
            per_stage=self.method.per_stage_schedule,
            schedule=cfg.optim.schedule,
            warmup_epochs=cfg.optim.warmup_epochs,
        )
        self.start_epoch = 0
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.history: Dict[str, float] = {"train_seconds": 0.0}
        self.stage_flops: List[int] = []
        if resume:
            state = ckpt.load_train_state(run_dir)
            ckpt.verify_run_files(run_dir)  # stage files too (SRDL's stage1.pt), before training
            self._restore(state)
        elif self.dist.is_main:
            os.makedirs(run_dir, exist_ok=True)
            save_config(cfg, os.path.join(run_dir, ckpt.CONFIG_FILE))
        ddp.barrier()  # the run folder exists for every rank from here on
        self._place()
        self.amp_enabled = cfg.train.amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_enabled and self.device.type == "cuda")
        self.context = StageContext(run_dir, self.device, self.data, cfg.train.progress, cfg.train.channels_last)

    # ------------------------------------------------------------------ state
    def _place(self) -> None:
        self.method.to(self.device)
        if self.cfg.train.channels_last:
            self.method.to(memory_format=torch.channels_last)

    def _restore(self, state: dict) -> None:
        saved = state.get("config")
        if saved is not None and not matches_saved(self.cfg, saved):
            diffs = config_differences(completed_saved(saved), to_dict(self.cfg))
            shown = "; ".join(diffs[:5]) + (f"; ... ({len(diffs)} keys in all)" if len(diffs) > 5 else "")
            raise ckpt.CheckpointError(
                f"cannot resume {self.run_dir}: its {ckpt.CONFIG_FILE} differs from the config the training state "
                f"was written with (saved -> now): {shown}; restore those values or start a new run"
            )
        self.method.load_extra_state(state["method"], self.run_dir)
        ckpt.load_state_dict_checked(self.method.trainable, state["trainable"], os.path.join(self.run_dir, ckpt.LAST_FILE))
        self.start_epoch = int(state["epoch"])
        self.history = dict(state.get("history", self.history))
        self.stage_flops = list(state.get("stage_flops", []))
        if state.get("optimizer") is not None:
            self._place()
            self.optimizer = build_optimizer(self.method.trainable, self.cfg.optim)
            self.optimizer.load_state_dict(state["optimizer"])

    def _save(self, epochs_done: int) -> None:
        if not self.dist.is_main:
            return
        at_stage_start = epochs_done in self.stage_starts
        state = {
            "format": ckpt.TRAIN_STATE_FORMAT,
            "epoch": epochs_done,
            "trainable": self.method.trainable.state_dict(),
            # A new stage builds a fresh optimizer: nothing to carry over at a boundary.
            "optimizer": None if at_stage_start or self.optimizer is None else self.optimizer.state_dict(),
            "method": self.method.extra_state(),
            "history": self.history,
            "stage_flops": self.stage_flops,
            "config": to_dict(self.cfg),
        }
        ckpt.atomic_save(state, os.path.join(self.run_dir, ckpt.LAST_FILE))

    def stage_of(self, epoch: int) -> int:
        return int(np.searchsorted(self.stage_starts, epoch, side="right") - 1)

    # ------------------------------------------------------------------ loop
    def _autocast(self):
        if not self.amp_enabled:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def _training_forward(self) -> torch.nn.Module:
        """The module the step calls in place of ``method.trainable``: itself in one process,
        its DDP wrapper (built once per stage's network) under torchrun."""
        if not self.dist.enabled:
            return self.method.trainable
        if self._ddp_module is not self.method.trainable:
            if self.cfg.train.sync_bn and self.device.type == "cuda":
                # SyncBatchNorm (same state_dict keys) needs a GPU; on CPU/gloo each rank
                # normalises with the statistics of its own share of the batch.
                self.method.trainable = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.method.trainable)
            self._ddp_module = self.method.trainable
            self._ddp_wrapped = ddp.wrap_for_training(self.method.trainable, self.device)
        return self._ddp_wrapped

    @contextlib.contextmanager
    def _forward_through(self, module: torch.nn.Module):
        """Methods call ``self.trainable(images)``; for one epoch that call goes through the
        DDP wrapper, while checkpoints and stage hooks keep seeing the plain network."""
        plain = self.method.trainable
        if module is plain:
            yield
            return
        self.method.trainable = module
        try:
            yield
        finally:
            self.method.trainable = plain

    def train_epoch(self, epoch: int) -> Dict[str, float]:
        cfg = self.cfg
        stage = self.stage_of(epoch)
        lr = self.lrs[epoch]
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.method.set_epoch(epoch)
        self.method.train()
        seeding.seed_everything(epoch_seed(cfg.train.seed, epoch))
        sums: Dict[str, float] = {}
        start = time.time()
        loader = self.data.train_loader
        if hasattr(loader.sampler, "set_epoch"):  # order and augmentation seeds of this epoch
            loader.sampler.set_epoch(epoch)
        total = len(loader) if cfg.train.max_batches <= 0 else min(len(loader), cfg.train.max_batches)
        bar = tqdm(loader, total=total, desc=f"stage {stage + 1} epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=not (cfg.train.progress and self.dist.is_main), leave=False)
        with self._forward_through(self._training_forward()):
            self._run_batches(bar, total, epoch, stage, sums)
        bar.close()
        if self.dist.enabled:
            # Logged means are over the whole global batch, not rank 0's share.
            keys = sorted(sums)
            reduced = ddp.all_reduce_sum(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
            sums = dict(zip(keys, reduced.tolist()))
        count = int(sums.pop("_count", 0))
        if count == 0:
            raise RuntimeError("the training loader gave no batch; check data.batch_size against the training set size")
        record = {"stage": stage + 1, "epoch": epoch + 1, "lr": lr}
        record.update({("train_acc" if k == "acc" else k): v / count for k, v in sums.items()})
        record["seconds"] = time.time() - start
        return record

    def _run_batches(self, bar, total: int, epoch: int, stage: int, sums: Dict[str, float]) -> None:
        """One epoch's steps; per-sample sums of every logged term go into ``sums``."""
        cfg = self.cfg
        count = 0
        sums["_count"] = 0.0
        for batch_idx, (images, labels, indices) in enumerate(bar):
            if batch_idx >= total:
                break
            images = images.to(self.device, non_blocking=True)
            if cfg.train.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(self.device, non_blocking=True)
            with self._autocast():
                out = self.method(images, labels, indices)
            loss = out["loss"]
            if not torch.isfinite(loss.detach()):
                last = os.path.join(self.run_dir, ckpt.LAST_FILE)
                kept = (
                    f"keeping the last good checkpoint {last} (after epoch {epoch})" if os.path.isfile(last)
                    else "no checkpoint exists yet (none is written before the first epoch ends)"
                )
                raise TrainingDivergedError(
                    f"loss is {loss.item()} at epoch {epoch + 1}, batch {batch_idx + 1} (stage {stage + 1}); "
                    f"stopped, {kept}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            n = images.shape[0]
            count += n
            sums["_count"] = float(count)
            for k, v in out.items():
                if k == "logits" or not torch.is_tensor(v) or v.dim() != 0:
                    continue
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
            bar.set_postfix(loss=f"{sums['loss'] / count:.4f}")

    def fit(self) -> dict:
        cfg = self.cfg
        logger = RunLogger(self.run_dir, cfg.train.tensorboard, start_epoch=self.start_epoch) if self.dist.is_main else _NoLogger()
        try:
            for epoch in range(self.start_epoch, cfg.train.epochs):
                stage = self.stage_of(epoch)
                if self.optimizer is None or epoch == self.stage_starts[stage]:
                    self.optimizer = build_optimizer(self.method.trainable, cfg.optim)
                if len(self.stage_flops) <= stage:
                    self.stage_flops.append(training_forward_flops(self.method, self.data.train_eval_loader.dataset, self.device))
                record = self.train_epoch(epoch)
                self.history["train_seconds"] += record["seconds"]
                terms = [k for k in record if k not in ("stage", "epoch", "lr", "loss", "train_acc", "seconds")]
                if epoch + 1 == self.stage_starts[stage + 1]:
                    hook_start = time.time()
                    # Sharded stage-end inference must run one model: rank 0's.
                    ddp.broadcast_module_state(self.method.trainable)
                    self.method.on_stage_end(stage, self.context)
                    ddp.barrier()  # rank 0's stage files are written before anyone goes on
                    self._place()
                    self.optimizer = None
                    # Part of the training cost (SRDL's logit extraction): counted, not hidden.
                    self.history["train_seconds"] += time.time() - hook_start
                self._save(epoch + 1)
                logger.log_epoch(record)
                if self.dist.is_main:
                    tqdm.write(format_epoch(record, terms)) if cfg.train.progress else print(format_epoch(record, terms))
            return self.finish(logger)
        finally:
            logger.close()

    # ------------------------------------------------------------------ end of run
    def training_flops(self) -> int:
        """Forward FLOPs x epochs x training-set size, summed over stages (as in the paper)."""
        return int(sum(f * s.epochs * self.data.num_train for f, s in zip(self.stage_flops, self.stages)))

    def finish(self, logger: RunLogger) -> dict:
        from reid_srdl.engine.evaluate import evaluate_targets, print_results_table

        cfg = self.cfg
        main = self.dist.is_main
        ddp.broadcast_module_state(self.method.trainable)  # every rank evaluates rank 0's network
        deployed = self.method.deploy()
        if main:
            ckpt.save_model_file(
                deployed,
                os.path.join(self.run_dir, ckpt.FINAL_FILE),
                task=self.data.task,
                data=cfg.data.label,
                method=cfg.method.name,
                height=cfg.data.height,
                width=cfg.data.width,
            )
        models = {"deployed": deployed}
        models.update(self.method.extra_eval_models(self.context))
        eval_cfg = cfg.eval if main else dataclasses.replace(cfg.eval, plot=False)
        extract = sharded_feature_extractor() if self.dist.enabled else None
        results = {}
        for name, model in models.items():
            results[name] = evaluate_targets(
                model, self.data, self.device, eval_cfg, out_dir=self.run_dir, tag=name,
                progress=cfg.train.progress and main, extract=extract,
            )
        if not main:
            return {"results": results}
        diagnostics = self.method.diagnostics(read_epoch_records(self.run_dir))
        summary = {
            "task": self.data.task,
            "data": cfg.data.label,
            "model": cfg.model.name,
            "method": cfg.method.name,
            "epochs": cfg.train.epochs,
            "num_train": self.data.num_train,
            "num_classes": self.data.num_classes,
            "forward_flops_per_sample": self.stage_flops,
            "deployed_parameters": parameter_count(deployed),
            "train_flops": self.training_flops(),
            "train_seconds": self.history["train_seconds"],
            "results": results,
        }
        if diagnostics:
            summary["diagnostics"] = diagnostics
        if self.data.targets:  # re-id: the evaluation data set(s), one per results prefix when several
            summary["targets"] = [t.name for t in self.data.targets]
        write_bytes_atomic(os.path.join(self.run_dir, "metrics.json"), json.dumps(summary, indent=2).encode("utf-8"))
        flat = {}
        for name, res in results.items():
            for proto, vals in res.items():
                for k, v in vals.items():
                    if isinstance(v, float):
                        flat[f"{name}/{proto}/{k}"] = v
        logger.log_results(flat, cfg.train.epochs)
        print_results_table(summary)
        return summary
