"""SRDL: Self-Referenced Deep Learning (Lan, Zhu & Gong, ACCV 2018).

M epochs become two stages of M/2.  Stage 1 trains the network with cross-entropy.  At its
end the stage-1 network, in eval mode on test-transform images, gives every training
sample's logits z1 (the "self-reference"), saved beside the stage-1 checkpoint.  Stage 2
restarts the network from a fresh initialisation and trains with

    CE(z, y) + T^2 * KL(softmax(z1 / T) || softmax(z / T)),   T = 3,

looking each sample's z1 up by its dataset index.  The stage-2 network is deployed; the
stage-1 and stage-2 networks can also be evaluated as an ensemble.

Ablations: ``schedule=incomplete`` spreads one step decay over both stages instead of a
complete decay per stage; ``restart=False`` continues stage 2 from the stage-1 weights.
"""
import os
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from reid_srdl.engine.checkpoint import atomic_save, load_model_file, save_model_file
from reid_srdl.engine.distributed import is_main_process, sharded_map
from reid_srdl.methods.base import METHODS, Method, StageContext, StageSpec
from reid_srdl.methods.losses import accuracy, soft_kl

STAGE1_MODEL = "stage1.pt"
STAGE1_LOGITS = "stage1_logits.pt"


@torch.inference_mode()
def extract_logits(model: nn.Module, loader, num_samples: int, device, progress: bool = True, channels_last: bool = False,
                   sample_ids: Optional[List[int]] = None) -> torch.Tensor:
    """Per-sample logits of `model` in eval mode, as a [num_samples, C] tensor by dataset index.

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
    seen = torch.zeros(num_samples, dtype=torch.bool)
    try:
        for images, _labels, indices in tqdm(loader, desc="SRDL: stage-1 logits", disable=not progress, leave=False):
            images = images.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            logits = model(images)[0].float().cpu()
            if bank is None:
                bank = torch.zeros(num_samples, logits.shape[1], dtype=torch.float32)
            rows = indices if row_of is None else row_of[indices]
            bank[rows] = logits
            seen[rows] = True
    finally:
        model.train(was_training)
    if bank is None or not bool(seen.all()):
        missing = int((~seen).sum())
        raise RuntimeError(f"SRDL logit extraction covered {num_samples - missing} of {num_samples} training samples")
    return bank


def sharded_logits(model: nn.Module, loader, device, progress: bool = True, channels_last: bool = False) -> torch.Tensor:
    """:func:`extract_logits` over the whole loader; under torchrun each rank extracts 1/W of
    the samples and the bank is gathered in dataset order on every rank (one process: the
    plain extraction)."""

    def run(part):
        shard_ids = getattr(part.dataset, "indices", None) if part is not loader else None
        return extract_logits(model, part, len(part.dataset), device, progress and is_main_process(), channels_last,
                              sample_ids=shard_ids)

    return sharded_map(run, loader)


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


@METHODS.register("srdl")
class SRDL(Method):
    def __init__(self, model_factory, total_epochs, temperature=3.0, schedule="complete", restart=True, ensemble=True, reinit_seed=1):
        super().__init__(model_factory, total_epochs)
        if total_epochs < 2:
            raise ValueError("SRDL needs at least 2 epochs (two stages of epochs/2)")
        if schedule not in ("complete", "incomplete"):
            raise ValueError(f"SRDL schedule must be 'complete' or 'incomplete', got '{schedule}'")
        self.temperature = float(temperature)
        self.per_stage_schedule = schedule == "complete"
        self.restart = bool(restart)
        self.ensemble = bool(ensemble)
        self.reinit_seed = int(reinit_seed)
        self.stage = 0
        # Per-sample stage-1 logits, indexed by dataset index; moves with .to(device) but is
        # not part of any state_dict (it is saved once, as its own file).
        self.register_buffer("bank", None, persistent=False)

    @classmethod
    def from_config(cls, section, model_factory, *, total_epochs, seed=0, **_run):
        return cls(
            model_factory,
            total_epochs,
            temperature=section.temperature,
            schedule=section.schedule,
            restart=section.restart,
            ensemble=section.ensemble,
            reinit_seed=seed + 1,
        )

    def stages(self) -> List[StageSpec]:
        first = self.total_epochs // 2
        return [StageSpec(first), StageSpec(self.total_epochs - first)]

    def forward(self, images, labels, indices):
        logits, features = self.trainable(images)
        ce = self.recipe.id_loss(logits, labels)
        if self.bank is None:  # stage 1: plain cross-entropy
            out = {"loss": ce, "ce": ce, "logits": logits, "acc": accuracy(logits, labels)}
            return self.recipe.add_metric_terms(out, features, labels)
        reference = self.bank[indices.to(self.bank.device)]
        kl = soft_kl(logits, reference, self.temperature)
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
        bank = sharded_logits(self.trainable, data.train_eval_loader, ctx.device, ctx.progress, ctx.channels_last)
        if is_main_process():  # under torchrun every rank holds the gathered bank; one writes it
            atomic_save({"logits": bank, "temperature": self.temperature}, os.path.join(ctx.run_dir, STAGE1_LOGITS))
            save_model_file(self.trainable, os.path.join(ctx.run_dir, STAGE1_MODEL), stage=1)
        self.bank = bank.to(ctx.device)
        if self.restart:
            self.trainable = self.fresh_model()
        self.stage = 1

    def extra_state(self) -> dict:
        return {"stage": self.stage}

    def load_extra_state(self, state: dict, run_dir: Optional[str] = None) -> None:
        self.stage = int(state.get("stage", 0))
        if self.stage >= 1:
            path = os.path.join(run_dir or "", STAGE1_LOGITS)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"SRDL resume in stage 2 needs the stage-1 logits {path}, which is missing")
            self.bank = torch.load(path, map_location="cpu", weights_only=True)["logits"]

    def extra_eval_models(self, ctx: StageContext) -> Dict[str, nn.Module]:
        if not self.ensemble:
            return {}
        path = os.path.join(ctx.run_dir, STAGE1_MODEL)
        stage1, _meta = load_model_file(path)
        return {"ensemble": EnsembleNet([stage1.to(ctx.device), self.trainable])}
