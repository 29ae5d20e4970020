"""FRSKD: Refine Myself by Teaching Myself (Ji et al., CVPR 2021).

A self-teacher reads the classifier's stage maps through a BiFPN (lateral 1x1 convolutions
to a common width, a top-down then a bottom-up path, each node a learned normalised fusion
followed by a depthwise-separable convolution) and has its own classifier.  It refines the
classifier's features and predictions:

    CE(z) + CE(z_t) + alpha T^2 KL(softmax(z_t/T) || softmax(z/T))
          + beta sum_stages || a(F_s) - a(F_t) ||^2 (mean over positions),

with a(F) the attention map of Zagoruyko & Komodakis: the channel mean of the squared
activations, flattened and L2-normalised.  The teacher side (z_t and its refined maps F_t)
is detached in both distillation terms; the self-teacher learns from its cross-entropy,
whose gradient also reaches the classifier's backbone through the lateral connections.
The classifier (the plain Net) is deployed; the self-teacher is dropped.
"""
from typing import Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from reid_srdl.config import ConfigError
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


def attention_map(feature_map: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W]: channel mean of squared activations, L2-normalised per image."""
    return F.normalize(feature_map.pow(2).mean(dim=1).flatten(1), dim=1)


def attention_loss(student_maps: List[torch.Tensor], teacher_maps: List[torch.Tensor]) -> torch.Tensor:
    """Sum over stages of the mean squared difference of attention maps (teacher detached)."""
    return sum(
        (attention_map(s) - attention_map(t.detach())).pow(2).mean() for s, t in zip(student_maps, teacher_maps)
    )


class FRSKDNetwork(nn.Module):
    """The classifier (``net``, deployed) and its self-teacher."""

    def __init__(self, net: Net, width: int):
        super().__init__()
        self.net = net
        self.teacher = SelfTeacher(net.stage_channels, width, net.num_classes)
        init_weights(self.teacher)

    def forward(self, x: torch.Tensor):
        """(classifier logits, classifier stage maps, teacher logits, teacher refined maps,
        the classifier's metric feature)."""
        maps = self.net.stage_maps(x)
        logits, features = self.net.head(maps[-1])
        teacher_logits, refined = self.teacher(maps)
        return logits, maps, teacher_logits, refined, features


@METHODS.register("frskd")
class FRSKD(Method):
    def __init__(self, model_factory, total_epochs, temperature=4.0, alpha=2.0, beta=100.0, width=64):
        if float(temperature) <= 0:
            raise ConfigError(f"FRSKD temperature (method.frskd.temperature) must be > 0, got {temperature}")
        if float(alpha) < 0 or float(beta) < 0:
            raise ConfigError(f"FRSKD alpha and beta (method.frskd.alpha, .beta) must be >= 0, got {alpha}, {beta}")
        if int(width) < 1:
            raise ConfigError(f"FRSKD width (method.frskd.width) must be >= 1, got {width}")
        # Set before Method.__init__, which calls build() and build() needs the width.
        self.width = int(width)
        super().__init__(model_factory, total_epochs)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.beta = float(beta)

    @classmethod
    def from_config(cls, section, model_factory, *, total_epochs, num_classes=None, seed=0, **_run):
        return cls(
            model_factory,
            total_epochs,
            temperature=section.temperature,
            alpha=section.alpha,
            beta=section.beta,
            width=section.width,
        )

    def build(self, model_factory) -> FRSKDNetwork:
        return FRSKDNetwork(model_factory(), self.width)

    def forward(self, images, labels, indices) -> Dict[str, torch.Tensor]:
        logits, maps, teacher_logits, refined, features = self.trainable(images)
        ce = self.recipe.id_loss(logits, labels)
        ce_teacher = self.recipe.id_loss(teacher_logits, labels)
        kd = soft_kl(logits, teacher_logits.detach(), self.temperature)
        attention = attention_loss(maps, refined)
        loss = ce + ce_teacher + self.alpha * kd + self.beta * attention
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
