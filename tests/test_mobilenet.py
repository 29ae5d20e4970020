"""MobileNetV2 as a re-id backbone: torchvision's layers as stem + four stages, ImageNet files in
torchvision's layout, grey input, and every training method on tiny inputs."""

import functools

import pytest
import torch
import torchvision

from reid_srdl.core.checkpoint import save_model_file
from reid_srdl.methods import METHODS
from reid_srdl.models import WeightsMismatchError, build_model, load_imagenet_weights

pytestmark = pytest.mark.usefixtures("single_thread")

C = 5
X = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """torchvision's mobilenet_v2 with every float tensor away from any initialisation, saved
    as torchvision publishes it (classifier included)."""
    torch.manual_seed(1)
    tv = torchvision.models.mobilenet_v2(weights=None)
    for v in tv.state_dict().values():
        if v.is_floating_point():
            v.copy_(torch.rand_like(v) * 0.5 + 0.75)
    path = tmp_path_factory.mktemp("mnv2") / "mobilenet_v2.pth"
    torch.save(tv.state_dict(), path)
    return str(path), tv.eval()


def test_stages_are_torchvisions_layers(imagenet_file):
    path, tv = imagenet_file
    net = build_model("mobilenet_v2", C, feature_dim=None, last_stride=2, weights=path).eval()
    f = tv.features
    with torch.no_grad():
        maps = net.stage_maps(X)
        x = f[1](f[0](X))
        expected = []
        for layers in ((2, 3), (4, 5, 6), range(7, 14), range(14, 19)):
            for i in layers:
                x = f[i](x)
            expected.append(x)
    for ours, theirs in zip(maps, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # The pooled last map is torchvision's pre-classifier feature (its classifier: dropout + Linear).
    torch.testing.assert_close(net(X)[1], maps[-1].mean(dim=(2, 3)), rtol=1e-6, atol=1e-6)
    # Parameters: torchvision's minus its 1280 x 1000 classifier, plus ours (1280 x C + C).
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(net) == count(tv) - (1280 * 1000 + 1000) + 1280 * C + C


def test_last_stride_one_keeps_the_resolution_of_stage_three():
    # 64x32: the stem halves (32x16), stages 1-3 halve (16x8, 8x4, 4x2); block 14's depthwise
    # conv at stride 1 keeps 4x2 (2x1 with last_stride=2).
    shapes = lambda net: [tuple(m.shape[1:]) for m in net.eval().stage_maps(X)]
    with torch.no_grad():
        assert shapes(build_model("mobilenet_v2", C)) == [(24, 16, 8), (32, 8, 4), (96, 4, 2), (1280, 4, 2)]
        assert shapes(build_model("mobilenet_v2", C, last_stride=2))[-1] == (1280, 2, 1)
    net = build_model("mobilenet_v2", C, feature_dim=16)
    assert net.stage_channels == [24, 32, 96, 1280] and net.feature_dim == 16
    assert net.spec == {
        "name": "mobilenet_v2",
        "num_classes": C,
        "feature_dim": 16,
        "in_channels": 3,
        "neck": "plain",
        "last_stride": 1,
    }
    with pytest.raises(ValueError, match="mobilenet_v2 last_stride must be 1 or 2, got 4"):
        build_model("mobilenet_v2", C, last_stride=4)


def test_bnneck_head_from_the_recipe():
    net = build_model("mobilenet_v2", C, feature_dim=0, neck="bnneck")
    assert net.head.neck == "bnneck" and net.head.bn.num_features == 1280 and net.head.classifier.bias is None


def test_grey_input_gets_the_first_convolution_summed_over_colour(imagenet_file):
    """A grey image g through the grey net equals (g, g, g) through the RGB net: exactly what
    summing the RGB filters computes."""
    path, _ = imagenet_file
    torch.manual_seed(2)
    rgb = build_model("mobilenet_v2", C, feature_dim=8, weights=path).eval()
    torch.manual_seed(2)
    grey = build_model("mobilenet_v2", C, feature_dim=8, weights=path, in_channels=1).eval()
    g = torch.randn(2, 1, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            grey.stage_maps(g)[-1], rgb.stage_maps(g.repeat(1, 3, 1, 1))[-1], rtol=1e-4, atol=1e-5
        )
    assert grey.stem[0][0].weight.shape == (32, 1, 3, 3)
    # Two input channels have no such reading: the shape check names the mismatch, nothing is loaded.
    two = build_model("mobilenet_v2", C, in_channels=2)
    before = {k: v.clone() for k, v in two.state_dict().items()}
    with pytest.raises(
        WeightsMismatchError, match=r"features.0.0.weight \(32, 3, 3, 3\) vs stem.0.0.weight \(32, 2, 3, 3\)"
    ):
        load_imagenet_weights(two, path)
    assert all(torch.equal(before[k], v) for k, v in two.state_dict().items())


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    torch.manual_seed(3)
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.pt")
    save_model_file(build_model("mobilenet_v2", C, feature_dim=16), path)
    return path


@pytest.mark.parametrize("method", METHODS.list())
def test_every_method_trains_a_step_on_it(method, teacher_path):
    """Build, one SGD step, deploy: the stage-wise methods (ONE, BYOT, FRSKD) find four stages."""
    options = {"teacher": teacher_path} if method == "kd" else {}
    torch.manual_seed(0)
    factory = functools.partial(build_model, "mobilenet_v2", C, feature_dim=16)
    m = METHODS.get(method).create(factory, total_epochs=2, num_classes=C, **options)
    m.train()
    params = [p for p in m.trainable.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    out = m(X, torch.tensor([0, 3]), torch.arange(2))
    assert torch.isfinite(out["loss"]) and out["logits"].shape == (2, C)
    out["loss"].backward()
    torch.optim.SGD(params, lr=0.1).step()
    assert sum(not torch.equal(a, p) for a, p in zip(before, params)) > len(params) // 2
    deployed = m.deploy().eval()
    assert deployed.arch == "mobilenet_v2" and deployed(X)[0].shape == (2, C)


def test_srdl_stage_two_restarts_from_the_imagenet_weights_with_a_new_head(imagenet_file):
    path, tv = imagenet_file
    factory = functools.partial(build_model, "mobilenet_v2", C, feature_dim=16, weights=path)
    torch.manual_seed(0)
    m = METHODS.get("srdl").create(factory, total_epochs=2, num_classes=C)
    stage1, stage2 = m.trainable.state_dict(), m.fresh_model().state_dict()
    theirs = tv.state_dict()
    for ours, key in (
        ("stem.0.0.weight", "features.0.0.weight"),
        ("stages.3.18.1.running_var", "features.18.1.running_var"),
    ):
        assert torch.equal(stage1[ours], theirs[key]) and torch.equal(stage2[ours], theirs[key])
    # The head is drawn again, from SRDL's own stage-2 stream.
    assert not torch.equal(stage1["head.fc.weight"], stage2["head.fc.weight"])
