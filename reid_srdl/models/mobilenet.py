"""torchvision's MobileNetV2 as a re-id backbone: stem + four stages + our head.

torchvision numbers its layers ``features.0`` ... ``features.18``: a stride-2 3x3 convolution,
seventeen inverted-residual blocks, and a 1x1 convolution to 1280 channels.  The stages end
where the resolution is next halved (as ResNet-50's layer1-4 do), so BYOT, FRSKD and ONE see
a familiar shape:

=========  ==================  ==========  ==============================
part       torchvision layers  channels    stride (last_stride=1 / 2)
=========  ==================  ==========  ==============================
stem       features.0-1        16          2
stage 1    features.2-3        24          4
stage 2    features.4-6        32          8
stage 3    features.7-13       96          16
stage 4    features.14-18      1280        16 / 32
=========  ==================  ==========  ==============================

Each stage keeps torchvision's layer numbers as its children's names (``stages.3.14`` is
``features.14``), so the ImageNet checkpoint maps by prefix alone.
"""

from collections import OrderedDict
from typing import Optional

from torch import nn
from torchvision import models as tvm

from reid_srdl.models.base import MODELS, EmbeddingHead, Net
from reid_srdl.models.errors import ModelConfigError
from reid_srdl.models.reid import first_conv
from reid_srdl.models.weights import ImageNetLayout

# torchvision layer numbers of the stem and of each stage.
STEM_LAYERS = (0, 1)
STAGE_LAYERS = ((2, 3), (4, 5, 6), tuple(range(7, 14)), tuple(range(14, 19)))
STAGE_CHANNELS = (24, 32, 96, 1280)
# The block that halves the resolution of the last stage (its depthwise convolution).
LAST_DOWNSAMPLING = 14

MOBILENET_V2_IMAGENET = ImageNetLayout(
    weights=tvm.MobileNet_V2_Weights.IMAGENET1K_V1,
    prefixes=tuple((f"features.{i}.", f"stem.{i}.") for i in STEM_LAYERS)
    + tuple((f"features.{i}.", f"stages.{s}.{i}.") for s, layers in enumerate(STAGE_LAYERS) for i in layers),
    skipped=("classifier.",),
)


def _layers(features: nn.Sequential, numbers) -> nn.Sequential:
    return nn.Sequential(OrderedDict((str(i), features[i]) for i in numbers))


@MODELS.register("mobilenet_v2", imagenet=MOBILENET_V2_IMAGENET)
def mobilenet_v2(num_classes: int, feature_dim: Optional[int], in_channels: int, last_stride: int = 1) -> Net:
    """MobileNetV2 (torchvision, width 1.0) with a re-id head.

    ``last_stride=1`` (the re-id default, as for resnet50) gives block 14's depthwise
    convolution stride 1: the last map keeps twice the resolution (8x4 at 128x64 input)
    with the same parameters, so ImageNet weights still load.  Block 14 has no residual
    connection either way (96 -> 160 channels), so only the resolution changes.
    """
    if last_stride not in (1, 2):
        raise ModelConfigError(f"mobilenet_v2 last_stride must be 1 or 2, got {last_stride!r}")
    features = tvm.mobilenet_v2(weights=None).features
    if last_stride == 1:
        depthwise = features[LAST_DOWNSAMPLING].conv[1][0]
        assert depthwise.groups == depthwise.in_channels and depthwise.stride == (2, 2), depthwise
        depthwise.stride = (1, 1)
    features[0][0] = first_conv(features[0][0], in_channels)
    stem = _layers(features, STEM_LAYERS)
    stages = [_layers(features, layers) for layers in STAGE_LAYERS]
    return Net(
        "mobilenet_v2",
        stem,
        stages,
        list(STAGE_CHANNELS),
        EmbeddingHead(STAGE_CHANNELS[-1], num_classes, feature_dim),
        in_channels,
    )
