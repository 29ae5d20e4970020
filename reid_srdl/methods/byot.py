"""BYOT: Be Your Own Teacher (Zhang et al., ICCV 2019), as its official code defines it.

Every non-final stage gets a side exit: bottleneck convolutions that bring its map to the
deepest stage's channels and resolution, then global pooling and a classifier.  The deepest
exit (the plain network) teaches the shallow ones.  The side exit is NOT the official branch
(see :class:`SideExit`); the loss below is the official one.  The official code (ArchipLab-LinfengZhang/
pytorch-self-distillation-final, train.py, final version) trains

    CE(z_deep) + sum_i [ (1 - alpha) CE(z_i) + alpha KL_T(softmax(z_deep/T) || softmax(z_i/T)) ]
               + lambda sum_{i in H} || FC_i(f_i) - f_deep ||_2

with the deepest logits and features detached (targets only), T = 3, alpha = 0.3,
lambda = 0.03, where:

* the distillation term has NO T^2 factor (``kd_t_squared=True`` adds it, as some third-party
  re-implementations do; at T = 3 that makes the term 9x stronger).  The official file
  computes the soft cross-entropy -sum p_deep log p_i, which is this KL plus the teacher's
  entropy: a constant for the gradient, since the teacher is detached;
* the hint (``hint="official"``) is the plain, unsquared L2 norm ``torch.dist`` over the whole
  batch of the difference between a fully connected adaptation of the exit's pooled features
  and the deepest pooled features; H is every shallow exit except the one of the
  second-to-last stage (the official loop skips ``index == 1``, which in its deep-to-shallow
  output order is that exit, although its comment speaks of the shallowest one).
  ``hint="squared"`` is the conference paper's ||f_i - f_deep||^2 (per sample, summed over the
  feature dimensions, batch mean, every exit, no adaptation layer); lambda = 0.03 was set by
  the official code for the other quantity, not for this one.

The side exits are dropped at deployment: the deepest exit is the plain Net.
"""

import copy
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from reid_srdl.config import ConfigError, check_choice, check_range
from reid_srdl.methods.base import METHODS, Method
from reid_srdl.methods.losses import accuracy, soft_kl
from reid_srdl.models.base import EmbeddingHead, Net, init_weights

# Side of the square image used to read each stage's resolution; big enough that every
# registered net still has a map of several pixels after its last stage.
_PROBE_SIZE = 256


def stage_downsampling(net: Net) -> List[Tuple[int, int]]:
    """(height, width) factor by which each stage's map is larger than the deepest stage's.

    Read from shapes only: a copy of the net on the meta device runs no arithmetic, so this
    costs nothing even for DenseNet-BC-190 and leaves the real net (and the RNG) untouched.
    Works whatever the net does between stages (halving, last stride 1, pooling).
    """
    probe = copy.deepcopy(net).to("meta").eval()
    x = torch.empty(1, net.in_channels or 3, _PROBE_SIZE, _PROBE_SIZE, device="meta")
    with torch.no_grad():
        maps = probe.stage_maps(x)
    last_h, last_w = maps[-1].shape[-2:]
    factors = []
    for i, m in enumerate(maps):
        h, w = m.shape[-2:]
        if h % last_h or w % last_w:
            raise ValueError(
                f"BYOT: stage {i + 1} of {net.arch} gives a {h}x{w} map at {_PROBE_SIZE}x{_PROBE_SIZE} input, "
                f"not a whole multiple of the deepest stage's {last_h}x{last_w}"
            )
        factors.append((h // last_h, w // last_w))
    return factors


def _conv_bn_relu(in_channels: int, out_channels: int, kernel, stride=1, padding=0) -> List[nn.Module]:
    # No conv bias: the BatchNorm after it has its own shift.
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SideExit(nn.Module):
    """Bottleneck (1x1 reduce to C_deep/4, resolution-matching conv, 1x1 expand) -> pooling ->
    classifier.

    The middle convolution has kernel = stride = the downsampling factor to the deepest
    stage, so its output has the deepest map's resolution; where the resolution already
    matches it is a plain 3x3 convolution.  Not the official branch: the official final ResNet
    uses an attention module and stride-2 SepConv stacks (its unused ``ScalaNet`` helper has
    this shape with a fixed width of 128); the C_deep/4 width follows third-party
    re-implementations (docs/methods.md).
    Returns (logits, pooled features of the deepest stage's width).
    """

    def __init__(self, in_channels: int, out_channels: int, factor: Tuple[int, int], num_classes: int):
        super().__init__()
        mid = max(out_channels // 4, 1)
        if factor == (1, 1):
            middle = _conv_bn_relu(mid, mid, 3, padding=1)
        else:
            middle = _conv_bn_relu(mid, mid, factor, stride=factor)
        self.factor = factor
        self.bottleneck = nn.Sequential(
            *_conv_bn_relu(in_channels, mid, 1), *middle, *_conv_bn_relu(mid, out_channels, 1)
        )
        self.head = EmbeddingHead(out_channels, num_classes, None)

    def forward(self, stage_map: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        fh, fw = self.factor
        if stage_map.shape[-2] < fh or stage_map.shape[-1] < fw:
            raise ConfigError(
                f"BYOT side exit needs a map of at least {fh}x{fw}, got {tuple(stage_map.shape[-2:])}: "
                f"the input images are too small for this network (raise data.height / data.width)"
            )
        return self.head(self.bottleneck(stage_map))


HINTS = ("official", "squared")


def hinted_exits(num_exits: int, hint: str) -> List[int]:
    """0-based indices (shallow to deep) of the side exits that get the feature hint: all of
    them for ``squared``; all but the deepest side exit for ``official`` (see the module doc)."""
    if hint == "squared":
        return list(range(num_exits))
    return list(range(num_exits - 1))


class BYOTNetwork(nn.Module):
    """The plain net (``net``, the deepest exit, deployed), one side exit per shallow stage and,
    for the official hint, one fully connected adaptation layer per hinted exit."""

    def __init__(self, net: Net, hint: str = "official"):
        super().__init__()
        if len(net.stages) < 2:
            raise ConfigError(f"BYOT needs a net with at least 2 stages; {net.arch} has {len(net.stages)}")
        self.net = net
        factors = stage_downsampling(net)
        deepest = net.stage_channels[-1]
        self.exits = nn.ModuleList(
            SideExit(c, deepest, f, net.num_classes) for c, f in zip(net.stage_channels[:-1], factors[:-1])
        )
        init_weights(self.exits)
        self.hinted = hinted_exits(len(self.exits), hint)
        # Exit features already have the deepest width, so each adaptation is square (as in
        # the official ResNets, where every exit pools 512 x expansion channels).
        self.adaptation = (
            nn.ModuleList(nn.Linear(deepest, deepest) for _ in self.hinted) if hint == "official" else None
        )
        if self.adaptation is not None:
            init_weights(self.adaptation)

    def forward(self, x: torch.Tensor):
        """(deepest logits, pooled deepest map, [(exit logits, exit features), ...] shallow to deep,
        the deepest exit's metric feature)."""
        maps = self.net.stage_maps(x)
        logits, embedding = self.net.head(maps[-1])
        # The hint target is the pooled last map (the deepest stage's channels), not the re-id
        # embedding after the feature layer, so that it has the exits' width on every net.
        deepest_features = torch.flatten(F.adaptive_avg_pool2d(maps[-1], 1), 1)
        return logits, deepest_features, [side(m) for side, m in zip(self.exits, maps[:-1])], embedding


def hint_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The ``squared`` hint: squared L2 distance per sample, summed over feature dimensions,
    averaged over the batch."""
    return (features - target).pow(2).sum(dim=1).mean()


def official_hint_loss(adapted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The ``official`` hint, ``torch.dist(adapted, target)``: the plain L2 norm of the whole
    batch's difference (not squared, not averaged)."""
    return torch.linalg.vector_norm(adapted - target)


@dataclass(frozen=True)
class BYOTOptions:
    # Defaults: the official code (pytorch-self-distillation-final, train.py); docs/methods.md.
    temperature: float = 3.0
    # Weight of the KL to the deepest exit in each shallow exit's loss; (1 - alpha) on its CE.
    alpha: float = 0.3
    # Weight of the feature hint.
    hint_weight: float = 0.03
    # Multiply the KL by T^2 (third-party re-implementations); the official code does not.
    kd_t_squared: bool = False
    # official: unsquared whole-batch L2 of FC-adapted exit features (the official code);
    # squared: the conference paper's per-sample squared L2, no adaptation layer.
    hint: str = "official"

    def __post_init__(self):
        check_range("method.byot.temperature", self.temperature, above=0)
        check_range("method.byot.alpha", self.alpha, minimum=0.0, maximum=1.0)
        check_range("method.byot.hint_weight", self.hint_weight, minimum=0)
        check_choice("method.byot.hint", self.hint, HINTS)


@METHODS.register("byot", options=BYOTOptions)
class BYOT(Method):
    def build(self, model_factory) -> BYOTNetwork:
        return BYOTNetwork(model_factory(), self.options.hint)

    def distillation(self, exit_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """KL(softmax(t/T) || softmax(s/T)), batch mean; times T^2 only with ``kd_t_squared``."""
        t = self.options.temperature
        kl = soft_kl(exit_logits, teacher_logits, t)  # includes T^2
        return kl if self.options.kd_t_squared else kl / (t * t)

    def forward(self, images, labels, indices) -> Dict[str, torch.Tensor]:
        network = self.trainable
        logits, deepest_features, exits, embedding = network(images)
        teacher_logits, teacher_features = logits.detach(), deepest_features.detach()
        ce = self.recipe.id_loss(logits, labels)
        out = {}
        exit_ce, kd, hint = [], [], []
        for i, (z, _features) in enumerate(exits):
            exit_ce.append(self.recipe.id_loss(z, labels))
            kd.append(self.distillation(z, teacher_logits))
            out[f"acc_exit{i + 1}"] = accuracy(z, labels)
        for slot, i in enumerate(network.hinted):
            f = exits[i][1]
            if network.adaptation is None:
                hint.append(hint_loss(f, teacher_features))
            else:
                hint.append(official_hint_loss(network.adaptation[slot](f), teacher_features))
        exit_ce, kd = sum(exit_ce), sum(kd)
        hint = sum(hint) if hint else logits.new_zeros(())
        alpha, weight = self.options.alpha, self.options.hint_weight
        loss = ce + (1.0 - alpha) * exit_ce + alpha * kd + weight * hint
        out.update(loss=loss, ce=ce, exit_ce=exit_ce, kd=kd, hint=hint, logits=logits, acc=accuracy(logits, labels))
        # The metric term on the deepest exit only: it is the deployed network; the side exits
        # are discarded and already follow it through the KL and the hint.
        return self.recipe.add_metric_terms(out, embedding, labels)

    def deploy(self) -> Net:
        """The deepest exit: the plain Net without the side exits."""
        return self.trainable.net
