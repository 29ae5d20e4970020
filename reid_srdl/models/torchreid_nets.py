"""torchreid's re-id architectures (OSNet, OSNet-AIN, IBN-ResNets, SE-ResNets, MLFN, ...) behind
our head.

Each is built by torchreid with ``pretrained=False`` (its builders would otherwise download
weights), then re-organised into stem + stages + :class:`EmbeddingHead`: torchreid's own
pooling, feature layer (e.g. OSNet's fc512) and classifier are replaced by ours.  A local
weights file (``model.weights``, e.g. torchreid's ``osnet_x1_0_imagenet.pth``) is loaded into
torchreid's module by its own key names before the split, so no key mapping is involved.
The backbone keeps torchreid's initialisation; only the head gets ours.

Stages follow the architecture's own blocks: OSNet conv2 / conv3 / conv4+conv5 (the 1x1
conv5 changes no resolution, so it closes the last stage), the ResNets layer1-4.  MLFN's
embedding mixes the pooled last map with the factor selections of every block, so it has no
well-defined last stage: it is one stage (ONE, BYOT and FRSKD stop with an error).
"""

import copy
import functools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from reid_srdl.config import ConfigError
from reid_srdl.core.download import RemoteFile, remote_from_url
from reid_srdl.models.base import MODELS, EmbeddingHead, Net
from reid_srdl.models.weights import load_backbone_state, read_weights_file

_RESNET_STEM = ("conv1", "bn1", "relu", "maxpool")
_RESNET_STAGES = (("layer1",), ("layer2",), ("layer3",), ("layer4",))
# Tensors of torchreid's own head: replaced by ours, never loaded.
_HEAD_KEYS = ("fc.", "classifier.")
_WHERE = "model.pretrained=imagenet (and model.weights='') fetches torchvision's or torchreid's ImageNet file"


@dataclass(frozen=True)
class Layout:
    """Which children of the torchreid model form the stem and each stage (each in order)."""

    stem: Tuple[str, ...]
    stages: Tuple[Tuple[str, ...], ...]


_OSNET = Layout(("conv1", "maxpool"), (("conv2",), ("conv3",), ("conv4", "conv5")))
_OSNET_AIN = Layout(("conv1", "maxpool"), (("conv2", "pool2"), ("conv3", "pool3"), ("conv4", "conv5")))
_RESNET = Layout(_RESNET_STEM, _RESNET_STAGES)
_SENET = Layout(("layer0",), _RESNET_STAGES)

#: torchreid name -> layout (None: no stage-wise access, one body).  torchreid's resnet50 and
#: densenet121 are left out: ours (torchvision's) have those names.
ARCHITECTURES = {
    **{n: _OSNET for n in ("osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "osnet_ibn_x1_0")},
    **{n: _OSNET_AIN for n in ("osnet_ain_x1_0", "osnet_ain_x0_75", "osnet_ain_x0_5", "osnet_ain_x0_25")},
    **{n: _RESNET for n in ("resnet50_fc512", "resnet50_ibn_a", "resnet50_ibn_b")},
    **{n: _SENET for n in ("se_resnet50", "se_resnext50_32x4d")},
    "mlfn": None,
}


class MLFNBody(nn.Module):
    """MLFN up to its embedding, as torchreid's forward computes it: the mean of the projected
    pooled last map and the projected factor selections of all blocks, as a [B, 1024, 1, 1] map."""

    def __init__(self, mlfn: nn.Module):
        super().__init__()
        for name in ("conv1", "bn1", "maxpool", "feature", "fc_x", "fc_s"):
            setattr(self, name, getattr(mlfn, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        selections = []
        for block in self.feature:
            x, s = block(x)
            selections.append(s)
        pooled = self.fc_x(F.adaptive_avg_pool2d(x, 1))
        return (pooled + self.fc_s(torch.cat(selections, 1))) * 0.5


def _children(model: nn.Module, names: Tuple[str, ...]) -> nn.Sequential:
    return nn.Sequential(OrderedDict((n, getattr(model, n)) for n in names))


def _stage_channels(stem: nn.Module, stages, in_channels: int):
    """Output channels of every stage, read from shapes on the meta device (no arithmetic)."""
    x = torch.empty(1, in_channels, 128, 64, device="meta")
    chain = copy.deepcopy(nn.Sequential(stem, *stages)).to("meta").eval()
    channels = []
    with torch.no_grad():
        x = chain[0](x)
        for stage in chain[1:]:
            x = stage(x)
            channels.append(int(x.shape[1]))
    return channels


def torchreid_net(arch: str, num_classes: int, feature_dim: Optional[int], in_channels: int, weights: str = "") -> Net:
    """Build torchreid's ``arch`` (random init, or ``weights``) as a :class:`Net`."""
    if in_channels != 3:
        raise ConfigError(f"model '{arch}' (torchreid) takes RGB images (3 channels), got in_channels={in_channels}")
    from torchreid.reid.models import build_model as torchreid_build

    model = torchreid_build(arch, num_classes=1, loss="softmax", pretrained=False, use_gpu=False)
    if weights:
        load_backbone_state(model, read_weights_file(weights, arch, _WHERE), weights, arch, _HEAD_KEYS)
    layout = ARCHITECTURES[arch]
    if layout is None:
        stem, stages = nn.Sequential(), [MLFNBody(model)]
    else:
        stem, stages = _children(model, layout.stem), [_children(model, s) for s in layout.stages]
    channels = _stage_channels(stem, stages, in_channels)
    net = Net(arch, stem, stages, channels, EmbeddingHead(channels[-1], num_classes, feature_dim), in_channels)
    net.foreign_backbone = True
    return net


def _drive_file(module: str, arch: str) -> RemoteFile:
    """torchreid's ImageNet file of an OSNet: the Google Drive link of its ``pretrained_urls``,
    cached under the name torchreid gives it (``<arch>_imagenet.pth``).  Drive publishes no
    checksum; the file is checked by loading it (every tensor by name and shape)."""
    import importlib

    url = importlib.import_module(f"torchreid.reid.models.{module}").pretrained_urls[arch]
    file_id = parse_qs(urlsplit(url).query)["id"][0]
    return RemoteFile(f"https://drive.google.com/uc?export=download&id={file_id}", f"{arch}_imagenet.pth")


#: torchreid name -> where ``model.pretrained=imagenet`` fetches its backbone's weights from.
#: resnet50_fc512's backbone is torchvision's ResNet-50 under the same names (torchreid loads
#: that file too).  The IBN and SE nets have none: torchreid fills only the layers that
#: happen to match a plain ResNet file, which a strict loader cannot do.
PUBLISHED = {
    **{
        n: functools.partial(_drive_file, "osnet", n)
        for n in ARCHITECTURES
        if n.startswith("osnet_") and "ain" not in n
    },
    **{n: functools.partial(_drive_file, "osnet_ain", n) for n in ARCHITECTURES if n.startswith("osnet_ain")},
    "resnet50_fc512": lambda: remote_from_url(tvm.ResNet50_Weights.IMAGENET1K_V1.url),
}


def _register(arch: str) -> None:
    def builder(num_classes: int, feature_dim: Optional[int], in_channels: int, weights: str = "") -> Net:
        return torchreid_net(arch, num_classes, feature_dim, in_channels, weights)

    builder.__doc__ = f"torchreid's {arch} with a re-id head (see reid_srdl.models.torchreid_nets)."
    MODELS.register(arch, published=PUBLISHED.get(arch))(builder)


for _arch in ARCHITECTURES:
    _register(_arch)
