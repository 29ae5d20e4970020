"""Classification networks from the CIFAR papers, at their true depths.

All take ``in_channels`` (1 for Fashion-MNIST) and any input of at least 28x28 (the head
pools globally).  They have no feature layer: the pooled last map is the embedding, as in
the papers, so ``feature_dim`` is accepted for a uniform interface and ignored (the net's
``spec`` records ``feature_dim=None``).
"""

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import DenseNet
from torchvision.models.resnet import BasicBlock

from reid_srdl.models.base import MODELS, EmbeddingHead, Net
from reid_srdl.models.errors import ModelConfigError


# ------------------------------------------------------------------ ResNet (He et al. 2016)
class ZeroPadShortcut(nn.Module):
    """Option-A shortcut of the CIFAR ResNets: subsample, then pad the new channels with zeros.

    Parameter-free, as in the paper's CIFAR experiments (which is what the published 0.46M /
    1.7M parameter counts of ResNet-32 / ResNet-110 assume).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ModelConfigError(f"ZeroPadShortcut cannot shrink {in_channels} to {out_channels} channels")
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dims first: (W left, W right, H top, H bottom, C front, C back).
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


def _cifar_resnet(arch: str, depth: int, num_classes: int, in_channels: int) -> Net:
    """He et al.'s CIFAR ResNet: 3 stages of n=(depth-2)/6 BasicBlocks with 16/32/64 channels."""
    if (depth - 2) % 6:
        raise ModelConfigError(f"{arch}: CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    stem = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(16),
            relu=nn.ReLU(inplace=True),
        )
    )
    widths = [16, 32, 64]
    stages, prev = [], 16
    for i, width in enumerate(widths):
        blocks = []
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            shortcut = ZeroPadShortcut(prev, width, stride) if (stride != 1 or prev != width) else None
            blocks.append(BasicBlock(prev, width, stride=stride, downsample=shortcut))
            prev = width
        stages.append(nn.Sequential(*blocks))
    return Net(arch, stem, stages, widths, EmbeddingHead(widths[-1], num_classes, None), in_channels)


def _register_resnet(depth: int) -> None:
    arch = f"resnet{depth}"

    def build(num_classes: int, feature_dim, in_channels: int) -> Net:
        return _cifar_resnet(arch, depth, num_classes, in_channels)

    build.__name__ = arch
    build.__doc__ = f"CIFAR ResNet-{depth} ({(depth - 2) // 6} BasicBlocks per stage, option-A shortcuts)."
    MODELS.register(arch)(build)


# ResNet-8/20 are for quick CPU experiments; ResNet-32/110 are the SRDL/ONE paper nets.
for _depth in (8, 20, 32, 110):
    _register_resnet(_depth)


# ------------------------------------------------------- Wide ResNet (Zagoruyko & Komodakis)
class PreActBlock(nn.Module):
    """Wide-ResNet block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus the shortcut.

    Where the shape changes the shortcut is a 1x1 conv applied to the pre-activated input,
    as in the authors' code.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = F.relu(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + identity


def _wide_resnet(arch: str, depth: int, widen: int, num_classes: int, in_channels: int, dropout: float) -> Net:
    if (depth - 4) % 6:
        raise ModelConfigError(f"{arch}: Wide ResNet depth must be 6n+4, got {depth}")
    if not 0.0 <= dropout < 1.0:
        raise ModelConfigError(f"{arch}: dropout must be in [0, 1), got {dropout!r}")
    n = (depth - 4) // 6
    widths = [16 * widen, 32 * widen, 64 * widen]
    stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
    stages, prev = [], 16
    for i, width in enumerate(widths):
        blocks = []
        for j in range(n):
            blocks.append(PreActBlock(prev, width, 2 if (i > 0 and j == 0) else 1, dropout))
            prev = width
        stages.append(nn.Sequential(*blocks))
    # Pre-activation nets end with BN-ReLU before pooling; it belongs to the last stage so
    # that its map (what the head, BYOT and FRSKD see) is activated like the others.
    stages[-1].append(nn.BatchNorm2d(widths[-1]))
    stages[-1].append(nn.ReLU(inplace=True))
    return Net(arch, stem, stages, widths, EmbeddingHead(widths[-1], num_classes, None), in_channels)


@MODELS.register("wrn28_10")
def wrn28_10(num_classes: int, feature_dim, in_channels: int, dropout: float = 0.0) -> Net:
    """Wide ResNet 28-10 (pre-activation, 4 blocks per stage, widths 160/320/640)."""
    return _wide_resnet("wrn28_10", 28, 10, num_classes, in_channels, dropout)


# ------------------------------------------------------------- DenseNet-BC (Huang et al.)
@MODELS.register("densenet_bc_190_40")
def densenet_bc_190_40(num_classes: int, feature_dim, in_channels: int) -> Net:
    """DenseNet-BC, L=190, k=40, compression 0.5: 3 dense blocks of 31 bottleneck layers.

    The dense blocks and transitions are torchvision's (bottleneck width 4k, transitions
    halve the channels and average-pool by 2); only the stem differs: CIFAR DenseNets start
    with a single 3x3 convolution to 2k channels, no pooling.
    """
    growth, layers = 40, (190 - 4) // 6
    f = DenseNet(growth_rate=growth, block_config=(layers,) * 3, num_init_features=2 * growth, bn_size=4).features
    stem = nn.Conv2d(in_channels, 2 * growth, 3, padding=1, bias=False)
    stages = [
        nn.Sequential(OrderedDict(denseblock1=f.denseblock1, transition1=f.transition1)),
        nn.Sequential(OrderedDict(denseblock2=f.denseblock2, transition2=f.transition2)),
        nn.Sequential(OrderedDict(denseblock3=f.denseblock3, norm5=f.norm5, relu5=nn.ReLU(inplace=True))),
    ]
    c1 = (2 * growth + layers * growth) // 2
    c2 = (c1 + layers * growth) // 2
    c3 = c2 + layers * growth
    return Net(
        "densenet_bc_190_40",
        stem,
        stages,
        [c1, c2, c3],
        EmbeddingHead(c3, num_classes, None),
        in_channels,
    )
