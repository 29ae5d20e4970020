"""BYOT: Be Your Own Teacher (Zhang et al., ICCV 2019).

Every non-final stage gets a side exit: bottleneck convolutions that bring its map to the
deepest stage's channels and resolution, then global pooling and a classifier.  The deepest
exit (the plain network) teaches the shallow ones:

    CE(z_deep) + sum_i [ (1 - alpha) CE(z_i) + alpha T^2 KL(softmax(z_deep/T) || softmax(z_i/T))
                         + lambda ||f_i - f_deep||^2 ]

where f are the globally pooled exit / deepest maps and the deepest logits and features are
detached (targets only).  The hint is a squared L2 norm summed over the feature dimensions
and averaged over the batch (the paper's ||.||_2^2 per sample; docs/methods.md says why).
The side exits are dropped at deployment: the deepest exit is the plain Net.
"""
import copy
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from reid_srdl.config import ConfigError
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
    """Bottleneck (1x1 reduce, resolution-matching conv, 1x1 expand) -> pooling -> classifier.

    The middle convolution has kernel = stride = the downsampling factor to the deepest
    stage, so its output has the deepest map's resolution (as BYOT's branch bottlenecks);
    where the resolution already matches it is a plain 3x3 convolution.
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


class BYOTNetwork(nn.Module):
    """The plain net (``net``, the deepest exit, deployed) and one side exit per shallow stage."""

    def __init__(self, net: Net):
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
    """Squared L2 distance per sample, summed over feature dimensions, averaged over the batch."""
    return (features - target).pow(2).sum(dim=1).mean()


@METHODS.register("byot")
class BYOT(Method):
    def __init__(self, model_factory, total_epochs, temperature=3.0, alpha=0.3, hint_weight=0.03):
        if float(temperature) <= 0:
            raise ConfigError(f"BYOT temperature (method.byot.temperature) must be > 0, got {temperature}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"BYOT alpha (method.byot.alpha) must be in [0, 1], got {alpha}")
        if float(hint_weight) < 0:
            raise ConfigError(f"BYOT hint_weight (method.byot.hint_weight) must be >= 0, got {hint_weight}")
        super().__init__(model_factory, total_epochs)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.hint_weight = float(hint_weight)

    @classmethod
    def from_config(cls, section, model_factory, *, total_epochs, num_classes=None, seed=0, **_run):
        return cls(
            model_factory,
            total_epochs,
            temperature=section.temperature,
            alpha=section.alpha,
            hint_weight=section.hint_weight,
        )

    def build(self, model_factory) -> BYOTNetwork:
        return BYOTNetwork(model_factory())

    def forward(self, images, labels, indices) -> Dict[str, torch.Tensor]:
        logits, deepest_features, exits, embedding = self.trainable(images)
        teacher_logits, teacher_features = logits.detach(), deepest_features.detach()
        ce = self.recipe.id_loss(logits, labels)
        out = {}
        exit_ce, kd, hint = [], [], []
        for i, (z, f) in enumerate(exits, start=1):
            exit_ce.append(self.recipe.id_loss(z, labels))
            kd.append(soft_kl(z, teacher_logits, self.temperature))
            hint.append(hint_loss(f, teacher_features))
            out[f"acc_exit{i}"] = accuracy(z, labels)
        exit_ce, kd, hint = sum(exit_ce), sum(kd), sum(hint)
        loss = ce + (1.0 - self.alpha) * exit_ce + self.alpha * kd + self.hint_weight * hint
        out.update(loss=loss, ce=ce, exit_ce=exit_ce, kd=kd, hint=hint, logits=logits, acc=accuracy(logits, labels))
        # The metric term on the deepest exit only: it is the deployed network; the side exits
        # are discarded and already follow it through the KL and the hint.
        return self.recipe.add_metric_terms(out, embedding, labels)

    def deploy(self) -> Net:
        """The deepest exit: the plain Net without the side exits."""
        return self.trainable.net
