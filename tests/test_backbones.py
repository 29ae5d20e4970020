"""torchreid and timm backbones behind our head, on tiny inputs: parameter counts and outputs
against the libraries' own builds, stage shapes, local weight files only, clear errors."""

import pytest
import torch
from tiny_runs import TinySet
from torch.utils.flop_counter import FlopCounterMode

from reid_srdl.config import ConfigError
from reid_srdl.core.registry import UnknownNameError
from reid_srdl.core.torch_files import UnsafeFileError
from reid_srdl.engine.flops import parameter_count, training_forward_flops
from reid_srdl.methods import METHODS
from reid_srdl.models import WeightsMismatchError, build_model

pytestmark = pytest.mark.usefixtures("single_thread")

C = 5
X = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(0))


def torchreid_model(name):
    from torchreid.reid.models import build_model as torchreid_build

    return torchreid_build(name, num_classes=C, pretrained=False, use_gpu=False).eval()


def no_download(monkeypatch):
    """Every way torchreid and timm fetch weights raises: a build that reaches one fails."""

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    import gdown
    import timm.models._builder as timm_builder
    import torch.hub
    from torchreid.reid.models import osnet

    monkeypatch.setattr(gdown, "download", refuse)
    monkeypatch.setattr(osnet, "init_pretrained_weights", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    for name in ("load_state_dict_from_url", "load_state_dict_from_hf", "download_cached_file"):
        monkeypatch.setattr(timm_builder, name, refuse)


# ---------------------------------------------------------------- torchreid
def test_osnet_x0_25_has_torchreid_parameters_and_outputs(tmp_path, monkeypatch):
    no_download(monkeypatch)
    theirs = torchreid_model("osnet_x0_25")
    torch.save(theirs.state_dict(), tmp_path / "osnet.pth")
    net = build_model("osnet_x0_25", C, feature_dim=None, weights=str(tmp_path / "osnet.pth")).eval()
    backbone = sum(p.numel() for n, p in theirs.named_parameters() if not n.startswith(("fc.", "classifier.")))
    assert parameter_count(net.stem) + parameter_count(net.stages) == backbone
    assert parameter_count(net) == backbone + 128 * C + C  # + our classifier on the 128-d pooled map
    with torch.no_grad():
        maps = net.stage_maps(X)
        assert torch.allclose(maps[-1], theirs.featuremaps(X), atol=1e-5)
    # Stages conv2 / conv3 / conv4+conv5: 64x32 -> conv1 /2, maxpool /2, conv2 and conv3 halve.
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 8, 4), (96, 4, 2), (128, 4, 2)]
    assert net.stage_channels == [64, 96, 128] and net.spec["name"] == "osnet_x0_25"


def test_osnet_flops_are_torchreids_plus_the_head():
    method = METHODS.get("vanilla").create(lambda: build_model("osnet_x0_25", C, feature_dim=32), 1)
    ours = training_forward_flops(method, TinySet((3, 64, 32), n=1), "cpu")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        torchreid_model("osnet_x0_25").featuremaps(X)
    # Per sample: the backbone, then Linear(128 -> 32) and the classifier (2 FLOPs per MAC).
    assert ours == counter.get_total_flops() // 2 + 2 * (128 * 32 + 32 * C)


def test_mlfn_is_one_body_with_torchreids_embedding():
    torch.manual_seed(0)
    theirs = torchreid_model("mlfn")
    net = build_model("mlfn", C, feature_dim=None).eval()
    net.stages[0].load_state_dict({k: v for k, v in theirs.state_dict().items() if not k.startswith("classifier.")})
    with torch.no_grad():
        assert torch.allclose(net(X)[1], theirs(X), atol=1e-4)
    assert len(net.stages) == 1  # no stage-wise access (see the timm body test for the errors)


def test_torchreid_weight_errors(tmp_path):
    missing = r"weights file for osnet_x0_25 not found: .*nowhere.pth. model.pretrained=imagenet \(and model.weights"
    with pytest.raises(FileNotFoundError, match=missing):
        build_model("osnet_x0_25", C, weights=str(tmp_path / "nowhere.pth"))
    torch.save(torchreid_model("osnet_x0_5").state_dict(), tmp_path / "other.pth")
    with pytest.raises(WeightsMismatchError, match="does not hold weights for osnet_x0_25: .*shape mismatches"):
        build_model("osnet_x0_25", C, weights=str(tmp_path / "other.pth"))
    with pytest.raises(ConfigError, match="takes RGB images"):
        build_model("osnet_x0_25", C, in_channels=1)


# ---------------------------------------------------------------- timm
def test_timm_resnet18_stages_are_timms_layers(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    no_download(monkeypatch)
    torch.manual_seed(3)
    plain = timm.create_model("resnet18", pretrained=False).eval()
    save_file(plain.state_dict(), str(tmp_path / "resnet18.safetensors"))
    net = build_model("timm/resnet18", C, feature_dim=16, weights=str(tmp_path / "resnet18.safetensors")).eval()
    with torch.no_grad():
        x = plain.maxpool(plain.act1(plain.bn1(plain.conv1(X))))
        expected = []
        for layer in (plain.layer1, plain.layer2, plain.layer3, plain.layer4):
            x = layer(x)
            expected.append(x)
        for ours, theirs in zip(net.stage_maps(X), expected, strict=True):
            assert torch.allclose(ours, theirs, atol=1e-5)
    assert net.stage_channels == [64, 128, 256, 512]
    assert parameter_count(net.stem) + parameter_count(net.stages) == parameter_count(plain) - 512 * 1000 - 1000
    assert net.spec == {"name": "timm/resnet18", "num_classes": C, "feature_dim": 16, "in_channels": 3, "neck": "plain"}


def test_timm_model_without_stages_is_one_pooled_body(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    no_download(monkeypatch)
    torch.manual_seed(4)
    plain = timm.create_model("mobilenetv3_small_050", pretrained=False).eval()
    torch.save(plain.state_dict(), tmp_path / "mnv3.pth")
    net = build_model("timm/mobilenetv3_small_050", C, feature_dim=None, weights=str(tmp_path / "mnv3.pth")).eval()
    with torch.no_grad():
        pre_logits = plain.forward_head(plain.forward_features(X), pre_logits=True)
        assert torch.allclose(net(X)[1], pre_logits, atol=1e-5)
    assert len(net.stages) == 1
    body = "timm/mobilenetv3_small_050"
    with pytest.raises(ConfigError, match=f"BYOT needs a net with at least 2 stages; {body} has 1"):
        METHODS.get("byot").create(lambda: build_model(body, C), 4)
    with pytest.raises(ConfigError, match=f"ONE needs a net with at least 2 stages to share the low ones; {body} has"):
        METHODS.get("one").create(lambda: build_model(body, C), 4, branches=2)
    with pytest.raises(ConfigError, match="FRSKD needs at least 2 stages for its BiFPN, got 1"):
        METHODS.get("frskd").create(lambda: build_model(body, C), 4)


def test_timm_errors(tmp_path):
    pytest.importorskip("timm")
    with pytest.raises(UnknownNameError, match="unknown timm model 'resnet5'"):
        build_model("timm/resnet5", C)
    with pytest.raises(UnknownNameError, match="unknown model 'resnet5'; valid models: densenet121"):
        build_model("resnet5", C)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsMismatchError, match="not hold timm weights for timm/resnet18: .* missing from the file"):
        build_model("timm/resnet18", C, weights=str(tmp_path / "wrong.pth"))


def test_a_pickle_is_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"conv1.weight": Boom()}, tmp_path / "evil.pth")
    # Refused by the safe loader (one line naming the conversion tool), never unpickled.
    with pytest.raises(UnsafeFileError, match="refusing to load .*evil.pth: it refers to the Python object print"):
        build_model("osnet_x0_25", C, weights=str(tmp_path / "evil.pth"))
