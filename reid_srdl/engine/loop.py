"""The training loop: ``out = method(images, labels, indices)``; backward; step.

The loop never knows which method it runs.  It owns the stages (a fresh optimizer at the
start of each), the learning rate of every epoch, the precision of the step (autocast, and a
GradScaler for fp16), the non-finite-loss guard, the stage-end hooks and a checkpoint after
every epoch.  Under torchrun the whole method runs inside DistributedDataParallel (rebuilt
at each stage: SRDL replaces its network at the boundary), so a method's forward is the
same code in one process and in many.
"""

import logging
import os
import time
from typing import Dict, Optional

import torch
from tqdm import tqdm

from reid_srdl.core import checkpoint as ckpt
from reid_srdl.core import distributed as ddp
from reid_srdl.core import seeding
from reid_srdl.core.cli import EXIT_DIVERGED
from reid_srdl.core.files import OutputPathError
from reid_srdl.core.precision import autocast_for
from reid_srdl.engine.assembly import Run, build_optimizer, load_optimizer_state, training_state_dict
from reid_srdl.engine.flops import training_forward_flops
from reid_srdl.engine.logger import format_epoch

log = logging.getLogger(__name__)

#: Record keys that are not loss terms (everything else the method returns is logged as one).
_NOT_TERMS = ("stage", "epoch", "lr", "loss", "train_acc", "seconds")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = EXIT_DIVERGED  # the tools' exit code for it (not bad input: the data were fine)


def epoch_seed(seed: int, epoch: int) -> int:
    """The model-side random stream of one epoch (dropout), its own for every (run seed,
    epoch), so a resumed run replays exactly the epochs an uninterrupted run would have.
    (The training order and augmentations have their own streams: data.indexed.SeededSampler.)"""
    return seeding.derive_seed(seed, seeding.EPOCH, epoch)


class TrainingLoop:
    """Trains ``run`` from ``run.state.start_epoch`` to its last epoch."""

    def __init__(self, run: Run):
        self.run = run
        self.optimizer: Optional[torch.optim.Optimizer] = None
        if run.state.optimizer_state is not None:  # resumed inside a stage
            self.optimizer = build_optimizer(run.method.trainable, run.cfg.optim)
            last = os.path.join(run.run_dir, ckpt.LAST_FILE)
            load_optimizer_state(self.optimizer, run.state.optimizer_state, last)
        # fp16 only (CUDA): loss scaling, skipping a step whose gradients overflowed.
        device_type = run.device.type if run.device.type in ("cuda", "cpu") else "cuda"
        self.scaler = torch.amp.GradScaler(device_type, enabled=run.precision.uses_scaler)
        self._step_module: Optional[torch.nn.Module] = None  # the DDP wrapper of this stage

    # ------------------------------------------------------------------ one step
    def step_module(self) -> torch.nn.Module:
        """What a step calls: the method itself in one process, the method inside
        DistributedDataParallel under torchrun (built once per stage's network)."""
        run = self.run
        if not run.dist.enabled:
            return run.method
        if self._step_module is None:
            if run.cfg.train.sync_bn and run.device.type == "cuda":
                # SyncBatchNorm (same state_dict keys) needs a GPU; on CPU/gloo each rank
                # normalises with the statistics of its own share of the batch.
                run.method.trainable = torch.nn.SyncBatchNorm.convert_sync_batchnorm(run.method.trainable)
            self._step_module = ddp.wrap_for_training(run.method, run.device)
        return self._step_module

    def optimizer_step(self, loss: torch.Tensor) -> bool:
        """Backward and step; returns False when the GradScaler skipped the step because the
        fp16 gradients overflowed (it then lowers the scale; no weight changes)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return scale is None or self.scaler.get_scale() >= scale

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int) -> Dict[str, float]:
        """One epoch's steps; the record of means that goes to metrics.jsonl."""
        run, cfg = self.run, self.run.cfg
        stage = run.stage_of(epoch)
        lr = run.lrs[epoch]
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        run.method.set_epoch(epoch)
        run.method.train()
        seeding.seed_everything(epoch_seed(cfg.train.seed, epoch))
        start = time.time()
        loader = run.data.train_loader
        if hasattr(loader.sampler, "set_epoch"):  # order and augmentation seeds of this epoch
            loader.sampler.set_epoch(epoch)
        total = len(loader) if cfg.train.max_batches <= 0 else min(len(loader), cfg.train.max_batches)
        bar = tqdm(
            loader,
            total=total,
            desc=f"stage {stage + 1} epoch {epoch + 1}/{cfg.train.epochs}",
            disable=not (cfg.train.progress and run.dist.is_main),
            leave=False,
        )
        sums = self._run_batches(bar, total, epoch, stage)
        bar.close()
        if run.dist.enabled:
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

    def _run_batches(self, bar, total: int, epoch: int, stage: int) -> Dict[str, float]:
        """Per-sample sums of every logged term (and ``_count``) over one epoch's steps."""
        run = self.run
        module = self.step_module()
        sums: Dict[str, float] = {"_count": 0.0}
        count = 0
        for batch_idx, (images, labels, indices) in enumerate(bar):
            if batch_idx >= total:
                break
            images = images.to(run.device, non_blocking=True)
            if run.precision.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(run.device, non_blocking=True)
            with autocast_for(run.precision.mode, run.device):
                out = module(images, labels, indices)
            loss = out["loss"]
            if not torch.isfinite(loss.detach()):
                raise TrainingDivergedError(self._diverged(loss, epoch, batch_idx, stage))
            self.optimizer_step(loss)
            n = images.shape[0]
            count += n
            sums["_count"] = float(count)
            for k, v in out.items():
                if k == "logits" or not torch.is_tensor(v) or v.dim() != 0:
                    continue
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
            bar.set_postfix(loss=f"{sums['loss'] / count:.4f}")
        return sums

    def _diverged(self, loss: torch.Tensor, epoch: int, batch_idx: int, stage: int) -> str:
        last = os.path.join(self.run.run_dir, ckpt.LAST_FILE)
        kept = (
            f"keeping the last good checkpoint {last} (after epoch {epoch})"
            if os.path.isfile(last)
            else "no checkpoint exists yet (none is written before the first epoch ends)"
        )
        return f"loss is {loss.item()} at epoch {epoch + 1}, batch {batch_idx + 1} (stage {stage + 1}); stopped, {kept}"

    # ------------------------------------------------------------------ all epochs
    def run_epochs(self, logger) -> None:
        """Every remaining epoch: a fresh optimizer at each stage start, the stage-end hook,
        a checkpoint and a metrics line after every epoch."""
        run, cfg = self.run, self.run.cfg
        starts = run.stage_starts
        for epoch in range(run.state.start_epoch, cfg.train.epochs):
            stage = run.stage_of(epoch)
            if self.optimizer is None or epoch == starts[stage]:
                self.optimizer = build_optimizer(run.method.trainable, cfg.optim)
            if len(run.state.stage_flops) <= stage:
                run.state.stage_flops.append(
                    training_forward_flops(run.method, run.data.train_eval_loader.dataset, run.device)
                )
            record = self.train_epoch(epoch)
            run.state.history["train_seconds"] += record["seconds"]
            if epoch + 1 == starts[stage + 1]:
                self._end_stage(stage)
            self.save(epoch + 1)
            logger.log_epoch(record)
            if run.dist.is_main:
                log.info(format_epoch(record, [k for k in record if k not in _NOT_TERMS]))

    def _end_stage(self, stage: int) -> None:
        run = self.run
        hook_start = time.time()
        # Sharded stage-end inference must run one model: rank 0's.
        ddp.broadcast_module_state(run.method.trainable)
        run.method.on_stage_end(stage, run.context)
        ddp.barrier()  # rank 0's stage files are written before anyone goes on
        run.place()
        self.optimizer = None
        self._step_module = None  # the next stage may train another network (SRDL's restart)
        # Part of the training cost (SRDL's logit extraction): counted, not hidden.
        run.state.history["train_seconds"] += time.time() - hook_start

    def save(self, epochs_done: int) -> None:
        """last.pt after ``epochs_done`` epochs (rank 0; atomic)."""
        run = self.run
        if run.dist.is_main:
            path = os.path.join(run.run_dir, ckpt.LAST_FILE)
            try:
                ckpt.atomic_save(training_state_dict(run, epochs_done, self.optimizer), path)
            except OutputPathError as e:  # a full disk: the previous last.pt stands
                resumable = os.path.isfile(path)
                hint = f"free some space and continue with --resume {run.run_dir}" if resumable else "free some space"
                raise OutputPathError(f"{e}; {hint}") from None
