"""FRSKD: Refine Myself by Teaching Myself (Ji et al., CVPR 2021), as its official code defines it.

A self-teacher reads the classifier's stage maps through a BiFPN and has its own classifier.
It refines the classifier's features and predictions:

    CE(z) + CE(z_t) + alpha T^2 KL(softmax(z_t/T) || softmax(z/T))
          + beta sum_stages || a(F_s) - a(F_t) ||^2 (mean over positions),

with a(F) the attention map of Zagoruyko & Komodakis: the channel mean of the squared
activations, flattened and L2-normalised.  The teacher side (z_t and its refined maps F_t)
is detached in both distillation terms; the self-teacher learns from its cross-entropy,
whose gradient also reaches the classifier's backbone through the lateral connections.
The classifier (the plain Net) is deployed; the self-teacher is dropped.

The self-teacher (``bifpn="bifpnc"``, the official default ``--bifpn BiFPNc``, MingiJi/FRSKD
models/bifpnc.py) gives level i a width of ``width_multiplier`` (2) x the backbone stage's
channels; every node is a learned normalised fusion (weights relu(w) / (sum + 1e-6)) followed
by ``depth`` (2) depthwise-separable 3x3 convolutions; the bottom-up path has lateral 1x1
convolutions of its own; a map changes level through a 1x1 convolution after a nearest
upsampling (top-down) or a 3x3 stride-2 "same" max pooling (bottom-up).  ``bifpn="uniform"``
is a lighter variant of this project's own (every level ``width`` channels, one separable
convolution per node, the lateral maps reused bottom-up).
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from reid_srdl.config import ConfigError, check_choice, check_range
from reid_srdl.methods.base import METHODS, Method
from reid_srdl.methods.losses import accuracy, soft_kl
from reid_srdl.models.base import EmbeddingHead, Net, init_weights


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bring a map to `size`: max pooling to shrink, nearest interpolation to grow.

    Levels are not assumed to halve: ResNet-50 with last stride 1 and the DenseNets have
    consecutive stages of equal resolution, and odd sizes do not halve exactly.
    """
    size = tuple(int(s) for s in size)
    (h, w), (th, tw) = x.shape[-2:], size
    if (h, w) == size:
        return x
    if h >= th and w >= tw:
        if h % th == 0 and w % tw == 0:
            # Whole ratios (the usual halving): the same windows as adaptive pooling, through
            # the plain kernel, several times faster on CPU.
            return F.max_pool2d(x, (h // th, w // tw))
        return F.adaptive_max_pool2d(x, size)
    return F.interpolate(x, size=size, mode="nearest")


class FusionNode(nn.Module):
    """Weighted sum of same-shaped maps with fast normalised weights relu(w) / (sum + eps)
    (EfficientDet), then a depthwise-separable 3x3 convolution, BN and ReLU."""

    def __init__(self, num_inputs: int, width: int, eps: float = 1e-4):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_inputs))
        self.eps = eps
        self.conv = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),  # depthwise
            nn.Conv2d(width, width, 1, bias=False),  # pointwise
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )

    def fusion_weights(self) -> torch.Tensor:
        w = F.relu(self.weight)
        return w / (w.sum() + self.eps)

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        w = self.fusion_weights()
        return self.conv(sum(w[k] * x for k, x in enumerate(inputs)))


class SelfTeacher(nn.Module):
    """BiFPN over the stage maps plus a classifier on its deepest output.

    Returns (teacher logits, refined maps: one per stage, at that stage's resolution).
    """

    def __init__(self, stage_channels: Sequence[int], width: int, num_classes: int):
        super().__init__()
        levels = len(stage_channels)
        if levels < 2:
            raise ConfigError(f"FRSKD needs at least 2 stages for its BiFPN, got {levels}")
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            for c in stage_channels
        )
        # top_down[i] fuses level i with the (resized) top-down map of level i+1.
        self.top_down = nn.ModuleList(FusionNode(2, width) for _ in range(levels - 1))
        # bottom_up[i-1] fuses level i, its top-down map and the (resized) output of level i-1;
        # the deepest level has no top-down map of its own, so two inputs.
        self.bottom_up = nn.ModuleList(FusionNode(3 if i < levels - 1 else 2, width) for i in range(1, levels))
        self.head = EmbeddingHead(width, num_classes, None)

    def forward(self, stage_maps: List[torch.Tensor]):
        # ReLU first: the stage maps of pre-activation nets (WRN) are not activated.
        lat = [conv(F.relu(m)) for conv, m in zip(self.lateral, stage_maps)]
        levels = len(lat)
        td = [None] * levels
        td[-1] = lat[-1]
        for i in range(levels - 2, -1, -1):
            td[i] = self.top_down[i]([lat[i], resize_to(td[i + 1], lat[i].shape[-2:])])
        out = [td[0]]
        for i in range(1, levels):
            below = resize_to(out[-1], lat[i].shape[-2:])
            inputs = [lat[i], td[i], below] if i < levels - 1 else [lat[i], below]
            out.append(self.bottom_up[i - 1](inputs))
        logits, _features = self.head(out[-1])
        return logits, out


def same_max_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 max pooling with TensorFlow-style "same" padding (output ceil(h/2) x
    ceil(w/2)), as the official MaxPool2dStaticSamePadding; inputs are non-negative (after a
    ReLU), so the zero padding never wins a window."""
    h, w = x.shape[-2:]
    pad_h = max((math.ceil(h / 2) - 1) * 2 + 3 - h, 0)
    pad_w = max((math.ceil(w / 2) - 1) * 2 + 3 - w, 0)
    x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    return F.max_pool2d(x, 3, 2)


def shrink_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The bottom-up path's downsampling: the official same-padded 3x3/2 max pooling where
    the next level has half the resolution; unchanged where it has the same (ResNet-50 with
    last stride 1, DenseNets); adaptive max pooling for any other ratio."""
    size = tuple(int(v) for v in size)
    h, w = x.shape[-2:]
    if (h, w) == size:
        return x
    if size == (math.ceil(h / 2), math.ceil(w / 2)):
        return same_max_pool(x)
    return F.adaptive_max_pool2d(x, size)


def grow_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The top-down path's upsampling: nearest interpolation to the lower level's size (the
    official nn.Upsample(scale_factor=2) where the ratio is 2; also equal or odd sizes)."""
    size = tuple(int(v) for v in size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="nearest")


def pointwise_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 convolution, BN, ReLU (the official DepthConvBlock with kernel 1)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
    )


def separable_block(channels: int, depth: int) -> nn.Sequential:
    """``depth`` depthwise-separable 3x3 convolutions, each followed by BN, with a ReLU between
    them and none after the last (the official DepthConvBlock with kernel 3)."""
    layers: List[nn.Module] = []
    for i in range(depth):
        if i:
            layers.append(nn.ReLU(inplace=False))
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),  # depthwise
            nn.Conv2d(channels, channels, 1, bias=False),  # pointwise
            nn.BatchNorm2d(channels),
        ]
    return nn.Sequential(*layers)


def normalised(weight: torch.Tensor, eps: float) -> torch.Tensor:
    w = F.relu(weight)
    return w / (w.sum() + eps)


class BiFPNcTeacher(nn.Module):
    """The official default self-teacher (BiFPNc), one BiFPN layer over every stage map.

    Returns (teacher logits, refined maps: one per stage, at that stage's resolution and
    ``width_multiplier`` x its channels).
    """

    eps = 1e-6  # the official epsilon of the fusion weights

    def __init__(self, stage_channels: Sequence[int], width_multiplier: int, depth: int, num_classes: int):
        super().__init__()
        levels = len(stage_channels)
        if levels < 2:
            raise ConfigError(f"FRSKD needs at least 2 stages for its BiFPN, got {levels}")
        widths = [int(c) * width_multiplier for c in stage_channels]
        self.widths = widths
        self.lateral = nn.ModuleList(pointwise_block(c, w) for c, w in zip(stage_channels, widths))
        # The bottom-up path reads the stage maps through lateral convolutions of its own.
        self.lateral_up = nn.ModuleList(pointwise_block(c, w) for c, w in zip(stage_channels[1:], widths[1:]))
        # top-down node i (0..L-2): level i fused with level i+1's node, brought to width i.
        self.down_resample = nn.ModuleList(pointwise_block(widths[i + 1], widths[i]) for i in range(levels - 1))
        self.top_down = nn.ModuleList(separable_block(widths[i], depth) for i in range(levels - 1))
        self.top_down_weight = nn.ParameterList(nn.Parameter(torch.ones(2)) for _ in range(levels - 1))
        # bottom-up node i (1..L-1): its lateral, its top-down node (not at the top) and level i-1's output.
        self.up_resample = nn.ModuleList(pointwise_block(widths[i - 1], widths[i]) for i in range(1, levels))
        self.bottom_up = nn.ModuleList(separable_block(widths[i], depth) for i in range(1, levels))
        self.bottom_up_weight = nn.ParameterList(
            nn.Parameter(torch.ones(3 if i < levels - 1 else 2)) for i in range(1, levels)
        )
        self.head = EmbeddingHead(widths[-1], num_classes, None)

    def forward(self, stage_maps: List[torch.Tensor]):
        maps = [F.relu(m) for m in stage_maps]  # pre-activation nets (WRN) give unactivated maps
        lat = [conv(m) for conv, m in zip(self.lateral, maps)]
        lat_up = [conv(m) for conv, m in zip(self.lateral_up, maps[1:])]
        levels = len(lat)
        td = [None] * levels
        td[-1] = lat[-1]
        for i in range(levels - 2, -1, -1):
            w = normalised(self.top_down_weight[i], self.eps)
            above = self.down_resample[i](grow_to(F.relu(td[i + 1]), lat[i].shape[-2:]))
            td[i] = self.top_down[i](w[0] * F.relu(lat[i]) + w[1] * above)
        out = [td[0]]
        for i in range(1, levels):
            w = normalised(self.bottom_up_weight[i - 1], self.eps)
            below = self.up_resample[i - 1](shrink_to(F.relu(out[-1]), lat[i].shape[-2:]))
            if i < levels - 1:
                fused = w[0] * F.relu(lat_up[i - 1]) + w[1] * F.relu(td[i]) + w[2] * below
            else:
                fused = w[0] * F.relu(lat_up[i - 1]) + w[1] * below
            out.append(self.bottom_up[i - 1](fused))
        refined = [F.relu(o) for o in out]
        logits, _features = self.head(refined[-1])
        return logits, refined


def attention_map(feature_map: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W]: channel mean of squared activations, L2-normalised per image."""
    return F.normalize(feature_map.pow(2).mean(dim=1).flatten(1), dim=1)


def attention_loss(student_maps: List[torch.Tensor], teacher_maps: List[torch.Tensor]) -> torch.Tensor:
    """Sum over stages of the mean squared difference of attention maps (teacher detached)."""
    return sum((attention_map(s) - attention_map(t.detach())).pow(2).mean() for s, t in zip(student_maps, teacher_maps))


BIFPNS = ("bifpnc", "uniform")


class FRSKDNetwork(nn.Module):
    """The classifier (``net``, deployed) and its self-teacher."""

    def __init__(self, net: Net, bifpn: str = "bifpnc", width_multiplier: int = 2, depth: int = 2, width: int = 64):
        super().__init__()
        self.net = net
        if bifpn == "bifpnc":
            self.teacher = BiFPNcTeacher(net.stage_channels, width_multiplier, depth, net.num_classes)
        else:
            self.teacher = SelfTeacher(net.stage_channels, width, net.num_classes)
        init_weights(self.teacher)

    def forward(self, x: torch.Tensor):
        """(classifier logits, classifier stage maps, teacher logits, teacher refined maps,
        the classifier's metric feature)."""
        maps = self.net.stage_maps(x)
        logits, features = self.net.head(maps[-1])
        teacher_logits, refined = self.teacher(maps)
        return logits, maps, teacher_logits, refined, features


@dataclass(frozen=True)
class FRSKDOptions:
    # Defaults: the official code (MingiJi/FRSKD, main.py and README's CIFAR-100 command).
    temperature: float = 4.0
    alpha: float = 2.0
    beta: float = 100.0
    # bifpnc: the official default self-teacher (each level width_multiplier x its stage's
    # channels, `depth` separable convs per node); uniform: a lighter variant of our own
    # (every level `width` channels, one separable conv per node).
    bifpn: str = "bifpnc"
    width_multiplier: int = 2
    depth: int = 2
    # Channels of every level of the uniform variant.
    width: int = 64

    def __post_init__(self):
        check_range("method.frskd.temperature", self.temperature, above=0)
        check_range("method.frskd.alpha", self.alpha, minimum=0)
        check_range("method.frskd.beta", self.beta, minimum=0)
        check_choice("method.frskd.bifpn", self.bifpn, BIFPNS)
        for key in ("width_multiplier", "depth", "width"):
            check_range(f"method.frskd.{key}", getattr(self, key), minimum=1)


@METHODS.register("frskd", options=FRSKDOptions)
class FRSKD(Method):
    def build(self, model_factory) -> FRSKDNetwork:
        o = self.options
        return FRSKDNetwork(model_factory(), o.bifpn, o.width_multiplier, o.depth, o.width)

    def forward(self, images, labels, indices) -> Dict[str, torch.Tensor]:
        logits, maps, teacher_logits, refined, features = self.trainable(images)
        ce = self.recipe.id_loss(logits, labels)
        ce_teacher = self.recipe.id_loss(teacher_logits, labels)
        kd = soft_kl(logits, teacher_logits.detach(), self.options.temperature)
        attention = attention_loss(maps, refined)
        loss = ce + ce_teacher + self.options.alpha * kd + self.options.beta * attention
        out = {
            "loss": loss,
            "ce": ce,
            "ce_teacher": ce_teacher,
            "kd": kd,
            "attention": attention,
            "logits": logits,
            "acc": accuracy(logits, labels),
            "acc_teacher": accuracy(teacher_logits, labels),
        }
        # The metric term on the classifier only: it is the deployed network; the self-teacher
        # is discarded and has no re-id embedding of its own.
        return self.recipe.add_metric_terms(out, features, labels)

    def deploy(self) -> Net:
        """The classifier: the plain Net without the self-teacher."""
        return self.trainable.net
