"""ONE: On-the-fly Native Ensemble (Lan, Zhu & Gong, NeurIPS 2018).

The low layers (stem and every stage but the last) are shared; ``branches`` copies of the
last stage and the head sit on top of them.  A gate looks at the shared map and weights the
branch logits into an ensemble that teaches every branch:

    sum_i CE(z_i) + CE(z_e) + w(e) * sum_i T^2 * KL(softmax(z_e/T) || softmax(z_i/T)),
    z_e = sum_i g_i z_i,   g = softmax(ReLU(BN(FC(pool(shared map))))),

with z_e detached in the KL terms (the ensemble is a target there, its own training signal
is its cross-entropy) and w(e) the mean-teacher sigmoid ramp-up exp(-5 (1 - e/R)^2).  The
ramp length R scales with the run: ``ramp_fraction`` of its epochs, by default the official
ratio (``cifar_one.py``: ``--consistency_rampup 80`` of ``--epochs 300``); ``ramp_epochs``
fixes it in epochs instead.

Branch 1 together with the shared layers is an ordinary :class:`Net` (the first network the
factory built), so deploying costs nothing: it is that net, with the plain net's shape,
parameter count and ``spec``.
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from reid_srdl.config import ConfigError, check_range
from reid_srdl.methods.base import METHODS, Method, StageContext
from reid_srdl.methods.losses import accuracy, soft_kl
from reid_srdl.models.base import Net, init_weights


def sigmoid_rampup(epoch: float, ramp_epochs: int) -> float:
    """exp(-5 (1 - e/R)^2) for e in [0, R], then 1; R = 0 means no ramp (always 1)."""
    if ramp_epochs <= 0:
        return 1.0
    phase = 1.0 - min(max(float(epoch), 0.0), float(ramp_epochs)) / ramp_epochs
    return math.exp(-5.0 * phase * phase)


class Gate(nn.Module):
    """Global pooling -> FC -> BN -> ReLU -> softmax over the branches: one weight vector per image."""

    def __init__(self, in_channels: int, branches: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        # No bias: the BatchNorm right after it has its own shift (a bias would get no gradient).
        self.fc = nn.Linear(in_channels, branches, bias=False)
        self.bn = nn.BatchNorm1d(branches)

    def forward(self, shared_map: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(shared_map), 1)
        return F.softmax(F.relu(self.bn(self.fc(x))), dim=1)


class Branch(nn.Module):
    """A copy of the last stage and the head, fed the shared map: returns (logits, features)."""

    def __init__(self, stage: nn.Module, head: nn.Module):
        super().__init__()
        self.stage = stage
        self.head = head

    def forward(self, shared_map: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.stage(shared_map))


class ONENetwork(nn.Module):
    """Shared layers + branch 1 (``net``, the deployed Net), branches 2..m and the gate."""

    def __init__(self, nets: List[Net]):
        super().__init__()
        first = nets[0]
        if len(first.stages) < 2:
            raise ConfigError(
                f"ONE needs a net with at least 2 stages to share the low ones; {first.arch} has {len(first.stages)}"
            )
        self.net = first
        # The other branches take the last stage and head of independently built nets: each
        # branch starts from its own initialisation (identical copies would learn alike),
        # and with ImageNet weights each last stage starts pre-trained like branch 1's.
        self.branches = nn.ModuleList(Branch(n.stages[-1], n.head) for n in nets[1:])
        self.gate = Gate(first.stage_channels[-2], len(nets))
        init_weights(self.gate)

    @property
    def num_branches(self) -> int:
        return 1 + len(self.branches)

    def forward(self, x: torch.Tensor):
        """(list of branch logits, list of branch features, gate weights [B, m])."""
        maps = self.net.stage_maps(x)  # the last map is branch 1's, maps[-2] the shared one
        shared = maps[-2]
        logits, feats = self.net.head(maps[-1])
        all_logits, all_feats = [logits], [feats]
        for branch in self.branches:
            z, f = branch(shared)
            all_logits.append(z)
            all_feats.append(f)
        return all_logits, all_feats, self.gate(shared)


def gated_logits(branch_logits: List[torch.Tensor], gate: torch.Tensor) -> torch.Tensor:
    """sum_i g_i z_i, with g [B, m] one weight per branch and image."""
    stacked = torch.stack(branch_logits, dim=2)  # [B, C, m]
    return (stacked * gate.unsqueeze(1)).sum(dim=2)


class GatedEnsemble(nn.Module):
    """The whole ONE network as one evaluable model: (gated logits, concatenated L2-normalised
    branch features).  The features are concatenated rather than gate-weighted so that every
    image is embedded in the same space whatever its gate weights."""

    def __init__(self, network: ONENetwork):
        super().__init__()
        self.network = network

    def forward(self, x):
        logits, feats, gate = self.network(x)
        embedding = torch.cat([F.normalize(f.float(), dim=1) for f in feats], dim=1)
        return gated_logits(logits, gate), embedding


# The official ramp-up: 80 of the 300 epochs (Lan1991Xu/ONE_NeurIPS2018, scripts/ONE_ResNet*.sh).
OFFICIAL_RAMP_FRACTION = 80 / 300


def ramp_length(total_epochs: int, ramp_fraction: float, ramp_epochs: int) -> int:
    """R in epochs: ``ramp_epochs`` when set (>= 0), else ``ramp_fraction`` of the run, rounded
    (at least 1 epoch when the fraction is not 0: a short run still ramps)."""
    if ramp_epochs >= 0:
        return ramp_epochs
    return max(1, int(round(ramp_fraction * total_epochs))) if ramp_fraction > 0 else 0


@dataclass(frozen=True)
class ONEOptions:
    branches: int = 3
    temperature: float = 3.0
    # Consistency ramp-up of the KL weight as a fraction of the run's epochs (official: 80 of
    # 300); 0 = constant weight 1.
    ramp_fraction: float = OFFICIAL_RAMP_FRACTION
    # The ramp-up in epochs instead (0 = constant weight 1); -1 = use ramp_fraction.
    ramp_epochs: int = -1
    # Also evaluate the gated ensemble of all branches (reported as "ensemble"); final.pt
    # stays branch 1, a plain network.
    deploy_ensemble: bool = False

    def __post_init__(self):
        check_range("method.one.branches", self.branches, minimum=2)
        check_range("method.one.temperature", self.temperature, above=0)
        check_range("method.one.ramp_fraction", self.ramp_fraction, minimum=0.0, maximum=1.0)
        check_range(
            "method.one.ramp_epochs", self.ramp_epochs, minimum=-1, why="-1 = ramp_fraction, 0 = constant weight 1"
        )


@METHODS.register("one", options=ONEOptions)
class ONE(Method):
    def build(self, model_factory) -> ONENetwork:
        return ONENetwork([model_factory() for _ in range(self.options.branches)])

    @property
    def ramp_epochs(self) -> int:
        """The ramp-up length R of this run, in epochs."""
        return ramp_length(self.total_epochs, self.options.ramp_fraction, self.options.ramp_epochs)

    def kl_weight(self) -> float:
        return sigmoid_rampup(self.epoch, self.ramp_epochs)

    def forward(self, images, labels, indices) -> Dict[str, torch.Tensor]:
        branch_logits, branch_features, gate = self.trainable(images)
        ensemble = gated_logits(branch_logits, gate)
        target = ensemble.detach()
        ce = sum(self.recipe.id_loss(z, labels) for z in branch_logits)
        ce_ensemble = self.recipe.id_loss(ensemble, labels)
        kl = sum(soft_kl(z, target, self.options.temperature) for z in branch_logits)
        weight = self.kl_weight()
        loss = ce + ce_ensemble + weight * kl
        out = {
            "loss": loss,
            "ce": ce,
            "ce_ensemble": ce_ensemble,
            "kl": kl,
            "kl_weight": torch.tensor(weight, device=loss.device),
            "logits": branch_logits[0],
            "acc": accuracy(branch_logits[0], labels),
            "acc_ensemble": accuracy(ensemble, labels),
        }
        # Every branch is a full re-id model trained alike: each gets the metric term.
        return self.recipe.add_metric_terms(out, branch_features, labels)

    def deploy(self) -> Net:
        """Branch 1 with the shared layers: a plain Net (saved as final.pt)."""
        return self.trainable.net

    def extra_eval_models(self, ctx: StageContext) -> Dict[str, nn.Module]:
        if not self.options.deploy_ensemble:
            return {}
        return {"ensemble": GatedEnsemble(self.trainable)}
