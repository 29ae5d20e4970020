"""Re-id networks: torchvision's ResNet-50 / DenseNet-121 re-organised into stem + stages,
and a small residual CNN for CPU demos.  Each ends in a feature layer (the embedding) and
an ID classifier (see :class:`EmbeddingHead`).
"""

from collections import OrderedDict
from typing import Optional

from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock

from reid_srdl.models.base import MODELS, EmbeddingHead, Net
from reid_srdl.models.errors import ModelConfigError
from reid_srdl.models.weights import ImageNetLayout


def first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same first convolution for `in_channels` inputs (e.g. 1 for grey images)."""
    if in_channels == conv.in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )


# Where torchvision's ImageNet checkpoint tensors go in our re-organised net.
RESNET50_IMAGENET = ImageNetLayout(
    weights=tvm.ResNet50_Weights.IMAGENET1K_V1,
    prefixes=(("conv1.", "stem.conv1."), ("bn1.", "stem.bn1."))
    + tuple((f"layer{i + 1}.", f"stages.{i}.") for i in range(4)),
    skipped=("fc.",),
)


@MODELS.register("resnet50", imagenet=RESNET50_IMAGENET)
def resnet50(num_classes: int, feature_dim: Optional[int], in_channels: int, last_stride: int = 1) -> Net:
    """ResNet-50 (torchvision) with a re-id head.

    ``last_stride=1`` removes the downsampling of layer4, the standard re-id choice: the last
    map keeps twice the resolution (16x8 at 256x128 input) for a finer embedding, with the
    same parameters, so ImageNet weights still load.
    """
    if last_stride not in (1, 2):
        raise ModelConfigError(f"resnet50 last_stride must be 1 or 2, got {last_stride!r}")
    tv = tvm.resnet50(weights=None)
    if last_stride == 1:
        block = tv.layer4[0]
        block.conv2.stride = (1, 1)
        block.downsample[0].stride = (1, 1)
    stem = nn.Sequential(
        OrderedDict(conv1=first_conv(tv.conv1, in_channels), bn1=tv.bn1, relu=tv.relu, maxpool=tv.maxpool)
    )
    stages = [tv.layer1, tv.layer2, tv.layer3, tv.layer4]
    channels = [256, 512, 1024, 2048]
    return Net(
        "resnet50",
        stem,
        stages,
        channels,
        EmbeddingHead(channels[-1], num_classes, feature_dim),
        in_channels,
    )


DENSENET121_IMAGENET = ImageNetLayout(
    weights=tvm.DenseNet121_Weights.IMAGENET1K_V1,
    prefixes=(
        ("features.conv0.", "stem.conv0."),
        ("features.norm0.", "stem.norm0."),
    )
    + tuple((f"features.denseblock{i + 1}.", f"stages.{i}.denseblock{i + 1}.") for i in range(4))
    + tuple((f"features.transition{i + 1}.", f"stages.{i}.transition{i + 1}.") for i in range(3))
    + (("features.norm5.", "stages.3.norm5."),),
    skipped=("classifier.",),
)


@MODELS.register("densenet121", imagenet=DENSENET121_IMAGENET)
def densenet121(num_classes: int, feature_dim: Optional[int], in_channels: int) -> Net:
    """DenseNet-121 (torchvision) with a re-id head; stage i = dense block i + transition i.

    The last stage ends with norm5 and a ReLU, exactly what torchvision applies before its
    pooling, so the head sees the same activations the ImageNet classifier saw.
    """
    f = tvm.densenet121(weights=None).features
    stem = nn.Sequential(
        OrderedDict(conv0=first_conv(f.conv0, in_channels), norm0=f.norm0, relu0=f.relu0, pool0=f.pool0)
    )
    stages = [
        nn.Sequential(
            OrderedDict(
                [
                    (f"denseblock{i}", f.get_submodule(f"denseblock{i}")),
                    (f"transition{i}", f.get_submodule(f"transition{i}")),
                ]
            )
        )
        for i in (1, 2, 3)
    ]
    stages.append(nn.Sequential(OrderedDict(denseblock4=f.denseblock4, norm5=f.norm5, relu5=nn.ReLU(inplace=True))))
    channels = [128, 256, 512, 1024]
    return Net(
        "densenet121",
        stem,
        stages,
        channels,
        EmbeddingHead(channels[-1], num_classes, feature_dim),
        in_channels,
    )


@MODELS.register("small_reid")
def small_reid(num_classes: int, feature_dim: Optional[int], in_channels: int) -> Net:
    """A small residual CNN (~0.3M backbone parameters) that trains in minutes on a CPU.

    A stride-2 3x3 stem, then one torchvision BasicBlock per stage with widths 16/32/64/128;
    stages 2-4 halve the resolution (128x64 input -> 64x32, 64x32, 32x16, 16x8, 8x4).
    Keeping the first stage at half resolution is what makes it cheap; four stages keep the
    same shape of network as ResNet-50 for BYOT/FRSKD.
    """
    widths = (16, 32, 64, 128)
    stem = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False),
            bn=nn.BatchNorm2d(widths[0]),
            relu=nn.ReLU(inplace=True),
        )
    )
    stages = []
    prev = widths[0]
    for i, width in enumerate(widths):
        stride = 1 if i == 0 else 2
        downsample = None
        if stride != 1 or prev != width:
            # Projection shortcut (option B): a 1x1 conv + BN where the shape changes.
            downsample = nn.Sequential(nn.Conv2d(prev, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))
        stages.append(BasicBlock(prev, width, stride=stride, downsample=downsample))
        prev = width
    return Net(
        "small_reid",
        stem,
        stages,
        list(widths),
        EmbeddingHead(widths[-1], num_classes, feature_dim),
        in_channels,
    )
