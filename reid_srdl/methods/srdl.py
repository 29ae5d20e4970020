"""SRDL: Self-Referenced Deep Learning (Lan, Zhu & Gong, ACCV 2018).

M epochs become two stages of M/2.  Stage 1 trains the network with cross-entropy.  At its
end the stage-1 network, in eval mode on test-transform images, gives every training
sample's logits z1 (the "self-reference"), saved beside the stage-1 checkpoint.  Stage 2
restarts the network from a fresh initialisation and trains with

    CE(z, y) + T^2 * KL(softmax(z1 / T) || softmax(z / T)),   T = 3,

looking each sample's z1 up by its dataset index.  The stage-2 network is deployed; the
stage-1 and stage-2 networks can also be evaluated as an ensemble.

Ablations: ``schedule=incomplete`` spreads one step decay over both stages instead of a
complete decay per stage; ``restart=False`` continues stage 2 from the stage-1 weights;
``teacher_view=augmented`` (not the paper's method) replaces the stored clean-image logits by
the frozen stage-1 network evaluated on the student's own augmented batch, one extra forward
per step, to ask whether the clean-image targets matter.

Diagnostics (metrics.json, the result table): the stage-1 bank's accuracy on the training
set, the mean entropy of its softened distribution softmax(z1/T), and the stage-2 KL of
every epoch.
"""

import copy
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from reid_srdl.config import ConfigError, check_choice, check_range
from reid_srdl.core import schema
from reid_srdl.core.checkpoint import CheckpointError, atomic_save, load_plain_file, save_model_file
from reid_srdl.core.distributed import is_main_process, sharded_map
from reid_srdl.core.seeding import SRDL_STAGE2_INIT, derive_seed
from reid_srdl.methods.base import METHODS, Method, StageContext, StageSpec
from reid_srdl.methods.losses import accuracy, soft_kl
from reid_srdl.models.model_file import load_model_file

STAGE1_MODEL = "stage1.pt"
STAGE1_LOGITS = "stage1_logits.pt"
TEACHER_VIEWS = ("clean", "augmented")


@torch.inference_mode()
def extract_logits(
    model: nn.Module,
    loader,
    num_samples: int,
    device,
    progress: bool = True,
    channels_last: bool = False,
    sample_ids: Optional[List[int]] = None,
    with_labels: bool = False,
):
    """Per-sample logits of `model` in eval mode, as a [num_samples, C] tensor by dataset index
    (and, with ``with_labels``, the [num_samples] labels the loader gave, in the same order).

    ``sample_ids``: the dataset indices a sharded loader covers (its ``Subset.indices``);
    row ``i`` of the result is then sample ``sample_ids[i]``, and ``num_samples`` is their count.
    """
    row_of = None
    if sample_ids is not None:
        row_of = torch.full((max(sample_ids, default=-1) + 1,), -1, dtype=torch.long)
        row_of[torch.as_tensor(sample_ids, dtype=torch.long)] = torch.arange(len(sample_ids))
    was_training = model.training
    model.eval()
    bank: Optional[torch.Tensor] = None
    labels_by_row = torch.full((num_samples,), -1, dtype=torch.long)
    seen = torch.zeros(num_samples, dtype=torch.bool)
    try:
        for images, labels, indices in tqdm(loader, desc="SRDL: stage-1 logits", disable=not progress, leave=False):
            images = images.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            logits = model(images)[0].float().cpu()
            if bank is None:
                bank = torch.zeros(num_samples, logits.shape[1], dtype=torch.float32)
            rows = indices if row_of is None else row_of[indices]
            bank[rows] = logits
            labels_by_row[rows] = labels.long()
            seen[rows] = True
    finally:
        model.train(was_training)
    if bank is None or not bool(seen.all()):
        missing = int((~seen).sum())
        raise RuntimeError(f"SRDL logit extraction covered {num_samples - missing} of {num_samples} training samples")
    return (bank, labels_by_row) if with_labels else bank


def sharded_logits(model: nn.Module, loader, device, progress: bool = True, channels_last: bool = False):
    """``(bank, labels)``: :func:`extract_logits` over the whole loader; under torchrun each rank
    extracts 1/W of the samples and both are gathered in dataset order on every rank (one
    process: the plain extraction)."""

    def run(part):
        shard_ids = getattr(part.dataset, "indices", None) if part is not loader else None
        bank, labels = extract_logits(
            model,
            part,
            len(part.dataset),
            device,
            progress and is_main_process(),
            channels_last,
            sample_ids=shard_ids,
            with_labels=True,
        )
        # One tensor per row for the ordered gather: labels ride along as an exact float32
        # column (class indices are far below 2^24).
        return torch.cat([bank, labels[:, None].float()], dim=1)

    packed = sharded_map(run, loader)
    return packed[:, :-1].contiguous(), packed[:, -1].long()


def bank_statistics(bank: torch.Tensor, labels: torch.Tensor, temperature: float) -> Dict[str, float]:
    """How good and how soft the self-reference is: the fraction of training samples whose
    stage-1 arg-max is their label, and the mean entropy (nats) of softmax(z1 / T), whose
    ceiling is log(classes)."""
    log_p = F.log_softmax(bank.double() / float(temperature), dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return {
        "bank_train_acc": float((bank.argmax(dim=1) == labels.to(bank.device)).double().mean()),
        "bank_entropy": float(entropy.mean()),
        "bank_entropy_max": math.log(bank.shape[1]),
    }


class EnsembleNet(nn.Module):
    """Several networks as one: mean of softmax for classes, concatenated L2-normalised
    embeddings for retrieval.  Returns (log of the mean probability, features)."""

    def __init__(self, members: List[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        probs, feats = [], []
        for m in self.members:
            logits, f = m(x)
            probs.append(F.softmax(logits.float(), dim=1))
            feats.append(F.normalize(f.float(), dim=1))
        return torch.stack(probs).mean(0).clamp_min(1e-12).log(), torch.cat(feats, dim=1)


SCHEDULES = ("complete", "incomplete")


@dataclass(frozen=True)
class SRDLOptions:
    temperature: float = 3.0
    # complete: each stage has its own full step decay; incomplete: one decay over all epochs.
    schedule: str = "complete"
    # True: stage 2 restarts from a fresh initialisation; False: continues from stage 1.
    restart: bool = True
    # Also evaluate the ensemble of the stage-1 and stage-2 models.
    ensemble: bool = True
    # Stage-2 targets: clean = the paper's stored logits of the test-transform images;
    # augmented = ablation, not the paper's method: the frozen stage-1 network on the
    # student's own augmented batch (one extra forward per step).
    teacher_view: str = "clean"

    def __post_init__(self):
        check_range("method.srdl.temperature", self.temperature, above=0)
        check_choice("method.srdl.schedule", self.schedule, SCHEDULES)
        check_choice("method.srdl.teacher_view", self.teacher_view, TEACHER_VIEWS)


@METHODS.register("srdl", options=SRDLOptions)
class SRDL(Method):
    #: Two stages of epochs / 2.
    min_epochs = 2

    def __init__(self, options: SRDLOptions, run):
        super().__init__(options, run)
        if self.total_epochs < self.min_epochs:
            raise ConfigError(f"SRDL needs train.epochs >= 2 (two stages of epochs/2), got {self.total_epochs}")
        self.temperature = float(options.temperature)
        self.per_stage_schedule = options.schedule == "complete"
        # The stage-2 re-initialisation has its own random stream: seed + 1 would be exactly
        # the initialisation of the run seeded seed + 1.
        self.reinit_seed = derive_seed(run.seed, SRDL_STAGE2_INIT)
        self.stage = 0
        self.bank_stats: Dict[str, float] = {}
        # Per-sample stage-1 logits, indexed by dataset index; moves with .to(device) but is
        # not part of any state_dict (it is saved once, as its own file).
        self.register_buffer("bank", None, persistent=False)
        # teacher_view=augmented: the frozen stage-1 network (outside `trainable`, like KD's teacher).
        self.stage1_net: Optional[nn.Module] = None

    def stages(self) -> List[StageSpec]:
        first = self.total_epochs // 2
        return [StageSpec(first), StageSpec(self.total_epochs - first)]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.stage1_net is not None:
            self.stage1_net.eval()  # frozen: evaluated, its BN statistics never move
        return self

    def reference_logits(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The stage-1 targets of a batch: its stored clean-image logits (the paper), or the
        frozen stage-1 network on this very augmented batch (the ablation)."""
        if self.stage1_net is not None:
            with torch.no_grad():
                return self.stage1_net(images)[0]
        return self.bank[indices.to(self.bank.device)]

    def forward(self, images, labels, indices):
        logits, features = self.trainable(images)
        ce = self.recipe.id_loss(logits, labels)
        if self.stage == 0:  # stage 1: plain cross-entropy
            out = {"loss": ce, "ce": ce, "logits": logits, "acc": accuracy(logits, labels)}
        else:
            kl = soft_kl(logits, self.reference_logits(images, indices), self.temperature)
            out = {"loss": ce + kl, "ce": ce, "kl": kl, "logits": logits, "acc": accuracy(logits, labels)}
        return self.recipe.add_metric_terms(out, features, labels)

    def fresh_model(self) -> nn.Module:
        """A newly initialised network (ImageNet weights when configured, fresh classifier),
        drawn from its own seed so the run stays reproducible and resumable."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.reinit_seed)
            return self.model_factory()

    def on_stage_end(self, stage: int, ctx: StageContext) -> None:
        if stage != 0:
            return
        data = ctx.data
        bank, labels = sharded_logits(
            self.trainable, data.train_eval_loader, ctx.device, ctx.progress, ctx.channels_last
        )
        self.bank_stats = bank_statistics(bank, labels, self.temperature)
        if is_main_process():  # under torchrun every rank holds the gathered bank; one writes it
            atomic_save({"logits": bank, "temperature": self.temperature}, os.path.join(ctx.run_dir, STAGE1_LOGITS))
            save_model_file(self.trainable, os.path.join(ctx.run_dir, STAGE1_MODEL), stage=1)
        self.bank = bank.to(ctx.device)
        stage1 = self.trainable
        if self.options.restart:
            self.trainable = self.fresh_model()
        if self.options.teacher_view == "augmented":
            self._freeze_stage1(stage1 if self.options.restart else copy.deepcopy(stage1), ctx.device)
        self.stage = 1

    def _freeze_stage1(self, net: nn.Module, device) -> None:
        for p in net.parameters():
            p.grad = None  # stage 1's last gradients: never used again
        self.stage1_net = net.to(device).requires_grad_(False).eval()

    def extra_state(self) -> dict:
        return {"stage": self.stage, "bank_stats": dict(self.bank_stats)}

    def extra_state_schema(self, epochs_done: int) -> schema.Spec:
        # Stage 2 starts (and its stage-1 logits exist) once the first stage's epochs are done.
        stage = int(epochs_done >= self.stages()[0].epochs)
        return schema.Dict(
            {"stage": schema.Int(stage, stage), "bank_stats": schema.Dict(extra=schema.Float())},
            required=("stage", "bank_stats"),
        )

    def load_extra_state(self, state: dict, run_dir: Optional[str] = None) -> None:
        self.stage = int(state.get("stage", 0))
        self.bank_stats = dict(state.get("bank_stats", {}))
        if self.stage >= 1:
            path = os.path.join(run_dir or "", STAGE1_LOGITS)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"SRDL resume in stage 2 needs the stage-1 logits {path}, which is missing")
            saved = load_plain_file(path, "SRDL stage-1 logits")  # safe loader, one-line errors
            if not isinstance(saved, dict) or not isinstance(saved.get("logits"), torch.Tensor):
                raise CheckpointError(f"{path} does not hold SRDL stage-1 logits (a dict with a 'logits' tensor)")
            logits, classes = saved["logits"], self.run.num_classes
            if logits.dim() != 2 or not logits.is_floating_point() or (classes and logits.shape[1] != classes):
                raise CheckpointError(
                    f"{path}: field 'logits' must be a (samples, {classes or 'classes'}) float tensor, "
                    f"got a {tuple(logits.shape)} {logits.dtype} tensor"
                )
            if not torch.isfinite(logits).all():
                raise CheckpointError(f"{path}: field 'logits' holds NaN or infinite values")
            self.bank = saved["logits"]
            if self.options.teacher_view == "augmented":
                stage1, _meta = load_model_file(os.path.join(run_dir or "", STAGE1_MODEL))
                self._freeze_stage1(stage1, self.bank.device)

    def extra_eval_models(self, ctx: StageContext) -> Dict[str, nn.Module]:
        if not self.options.ensemble:
            return {}
        path = os.path.join(ctx.run_dir, STAGE1_MODEL)
        stage1, _meta = load_model_file(path)
        return {"ensemble": EnsembleNet([stage1.to(ctx.device), self.trainable])}

    def diagnostics(self, epoch_records: Sequence[dict]) -> Dict[str, object]:
        """The bank's statistics and the stage-2 KL of every epoch (from metrics.jsonl)."""
        out: Dict[str, object] = dict(self.bank_stats)
        out["stage2_kl"] = [float(r["kl"]) for r in epoch_records if r.get("stage") == 2 and "kl" in r]
        return out
