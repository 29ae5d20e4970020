"""Models: published sizes, shapes, the stem/stages/head contract, spec, init, ImageNet weights."""

import copy
import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml

from reid_srdl.core.registry import UnknownNameError
from reid_srdl.models import (
    EmbeddingHead,
    Net,
    WeightsMismatchError,
    build_model,
    list_models,
    load_imagenet_weights,
)
from reid_srdl.models.cifar import ZeroPadShortcut

REID = ("resnet50", "densenet121", "mobilenet_v2", "small_reid")
CIFAR = ("resnet8", "resnet20", "resnet32", "resnet110", "wrn28_10", "densenet_bc_190_40")

# Test inputs: re-id nets get a small person-shaped image, CIFAR nets the smallest size they
# promise to support (big nets stay cheap on CPU).
INPUT_HW = {**{n: (64, 32) for n in REID}, **{n: (28, 28) for n in CIFAR}}

# Embedding size of each CIFAR net = channels of its last stage (worked out from the papers):
# ResNets 64; WRN-28-10 64*10; DenseNet-BC-190-40: 80 -> +31*40 = 1320 -> /2 = 660 ->
# +1240 = 1900 -> /2 = 950 -> +1240 = 2190.
CIFAR_EMBED = {
    "resnet8": 64,
    "resnet20": 64,
    "resnet32": 64,
    "resnet110": 64,
    "wrn28_10": 640,
    "densenet_bc_190_40": 2190,
}

# Spatial size of every stage output for the inputs above.
STAGE_HW = {
    # 64x32 -> stem /4 -> 16x8; layer2, layer3 halve; layer4 keeps it (last stride 1).
    "resnet50": [(16, 8), (8, 4), (4, 2), (4, 2)],
    # stem /4; each transition halves: 8x4, 4x2, 2x1; block4 has no transition.
    "densenet121": [(8, 4), (4, 2), (2, 1), (2, 1)],
    # stem /2 -> 32x16; stages 2-4 halve.
    "small_reid": [(32, 16), (16, 8), (8, 4), (4, 2)],
    # stem /2, stages 1-3 halve: 16x8, 8x4, 4x2; stage 4 keeps it (last stride 1).
    "mobilenet_v2": [(16, 8), (8, 4), (4, 2), (4, 2)],
    **{n: [(28, 28), (14, 14), (7, 7)] for n in ("resnet8", "resnet20", "resnet32", "resnet110", "wrn28_10")},
    # transitions 1 and 2 (closing stages 1 and 2) halve: 14, 7; stage 3 keeps 7.
    "densenet_bc_190_40": [(14, 14), (7, 7), (7, 7)],
}
STAGE_CHANNELS = {
    "resnet50": [256, 512, 1024, 2048],
    "densenet121": [128, 256, 512, 1024],
    "small_reid": [16, 32, 64, 128],
    "mobilenet_v2": [24, 32, 96, 1280],
    **{n: [16, 32, 64] for n in ("resnet8", "resnet20", "resnet32", "resnet110")},
    "wrn28_10": [160, 320, 640],
    "densenet_bc_190_40": [660, 950, 2190],
}

NUM_CLASSES = 7
FEATURE_DIM = 24


@pytest.fixture(scope="module")
def nets():
    """One net per architecture, built once (the big ones take a moment)."""
    torch.manual_seed(0)
    return {name: build_model(name, NUM_CLASSES, feature_dim=FEATURE_DIM) for name in REID + CIFAR}


def count(module):
    return sum(p.numel() for p in module.parameters())


# torchreid's architectures registered behind our head (tests/test_backbones.py checks them).
TORCHREID = (
    "osnet_x1_0",
    "osnet_x0_75",
    "osnet_x0_5",
    "osnet_x0_25",
    "osnet_ibn_x1_0",
    "osnet_ain_x1_0",
    "osnet_ain_x0_75",
    "osnet_ain_x0_5",
    "osnet_ain_x0_25",
    "resnet50_fc512",
    "resnet50_ibn_a",
    "resnet50_ibn_b",
    "se_resnet50",
    "se_resnext50_32x4d",
    "mlfn",
)


def test_registry_lists_every_architecture():
    assert list_models() == sorted(REID + CIFAR + TORCHREID)


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as e:
        build_model("resnet51", 10)
    for name in REID + CIFAR:
        assert name in str(e.value)


def test_bad_arguments_are_refused_with_the_valid_options():
    with pytest.raises(ValueError, match=r"no option\(s\) last_stride; its options: none"):
        build_model("resnet32", 10, last_stride=1)
    with pytest.raises(ValueError, match="its options: last_stride"):
        build_model("resnet50", 10, dropout=0.1)
    with pytest.raises(ValueError, match="last_stride must be 1 or 2"):
        build_model("resnet50", 10, last_stride=3)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_model("resnet8", 0)
    with pytest.raises(ValueError, match="dropout must be in"):
        build_model("wrn28_10", 10, dropout=1.5)


def test_cifar_resnet_parameter_counts_match_hand_counts():
    # ResNet-32, option-A shortcuts, 10 classes, counted by hand:
    #   stem conv 3*16*9 = 432, BN 2*16 = 32
    #   stage 1: 5 blocks * (2 * 16*16*9 + 2 * 2*16)                     =  23,360
    #   stage 2: (16*32*9 + 32*32*9 + 4*32) + 4 * (2*32*32*9 + 4*32)     =  88,192
    #   stage 3: (32*64*9 + 64*64*9 + 4*64) + 4 * (2*64*64*9 + 4*64)     = 351,488
    #   classifier 64*10 + 10 = 650                            total      = 464,154  (paper: 0.46M)
    assert count(build_model("resnet32", 10)) == 464_154
    # ResNet-110: the same with 18 blocks per stage:
    #   432 + 32 + 18*4,672 + (13,952 + 17*18,560) + (55,552 + 17*73,984) + 650 = 1,727,962 (1.7M)
    assert count(build_model("resnet110", 10)) == 1_727_962
    # ResNet-20 (3 blocks per stage), published 0.27M.
    assert abs(count(build_model("resnet20", 10)) - 0.27e6) / 0.27e6 < 0.02


def test_big_cifar_nets_match_published_sizes(nets):
    # With 10 classes, as in the papers' tables (36.5M for WRN-28-10, 25.6M for DenseNet-BC).
    for name, published in (("wrn28_10", 36.5e6), ("densenet_bc_190_40", 25.6e6)):
        n = count(nets[name]) - (NUM_CLASSES - 10) * (CIFAR_EMBED[name] + 1)
        assert abs(n - published) / published < 0.02, (name, n)


def test_reid_backbones_are_torchvision_nets_with_a_new_head(nets):
    # Oracle: torchvision's own nets. Backbone = everything but the ImageNet classifier.
    tv_resnet = torchvision.models.resnet50(weights=None)
    tv_densenet = torchvision.models.densenet121(weights=None)
    head = lambda c: c * FEATURE_DIM + 2 * FEATURE_DIM + FEATURE_DIM * NUM_CLASSES + NUM_CLASSES
    assert count(nets["resnet50"]) == count(tv_resnet) - count(tv_resnet.fc) + head(2048)
    assert count(nets["densenet121"]) == count(tv_densenet) - count(tv_densenet.classifier) + head(1024)
    # small_reid: "a few hundred thousand" parameters.
    assert 100_000 < count(nets["small_reid"]) < 600_000


@pytest.mark.parametrize("name", REID + CIFAR)
def test_forward_gives_logits_and_features_in_train_and_eval(nets, name):
    net = nets[name]
    x = torch.randn(2, 3, *INPUT_HW[name])
    feature_dim = FEATURE_DIM if name in REID else CIFAR_EMBED[name]
    assert net.feature_dim == feature_dim and net.num_classes == NUM_CLASSES and net.arch == name
    for train in (True, False):
        net.train(train)
        with torch.no_grad():
            logits, features = net(x)
        assert logits.shape == (2, NUM_CLASSES) and features.shape == (2, feature_dim)
        assert torch.isfinite(logits).all() and torch.isfinite(features).all()
    net.eval()


@pytest.mark.parametrize("name", REID + CIFAR)
def test_stage_maps_follow_stage_channels_and_make_the_whole_forward(nets, name):
    net = nets[name].eval()
    x = torch.randn(2, 3, *INPUT_HW[name])
    with torch.no_grad():
        maps = net.stage_maps(x)
        logits, features = net(x)
        # stem + stages + head is the whole forward: rebuilding it by hand gives the same output.
        h = net.stem(x)
        for stage in net.stages:
            h = stage(h)
        by_hand = net.head(h)
    assert net.stage_channels == STAGE_CHANNELS[name]
    assert [tuple(m.shape) for m in maps] == [(2, c, *hw) for c, hw in zip(STAGE_CHANNELS[name], STAGE_HW[name])]
    assert torch.equal(by_hand[0], logits) and torch.equal(by_hand[1], features)
    assert isinstance(net.head, EmbeddingHead) and isinstance(net.stages, torch.nn.ModuleList)


def test_last_stride_option_controls_the_last_map():
    torch.manual_seed(0)
    net = build_model("resnet50", 3, last_stride=2).eval()
    with torch.no_grad():
        maps = net.stage_maps(torch.randn(1, 3, 64, 32))
    assert maps[-1].shape == (1, 2048, 2, 1)  # 4x2 halved once more
    assert net.spec["last_stride"] == 2


def test_embedding_is_the_bn_output_of_the_feature_layer():
    torch.manual_seed(0)
    head = EmbeddingHead(in_channels=6, num_classes=4, feature_dim=3)
    with torch.no_grad():
        head.bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        head.bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
        head.bn.weight.copy_(torch.tensor([2.0, 1.0, -1.0]))
        head.bn.bias.copy_(torch.tensor([0.0, 3.0, 1.0]))
    x = torch.randn(5, 6, 3, 2)
    pooled = x.mean(dim=(2, 3))
    z = pooled @ head.fc.weight.T
    eps = head.bn.eps
    expected = (z - torch.tensor([0.5, -1.0, 2.0])) / torch.sqrt(torch.tensor([4.0, 0.25, 1.0]) + eps)
    expected = expected * torch.tensor([2.0, 1.0, -1.0]) + torch.tensor([0.0, 3.0, 1.0])
    head.eval()
    with torch.no_grad():
        logits, features = head(x)
    torch.testing.assert_close(features, expected)
    torch.testing.assert_close(logits, expected @ head.classifier.weight.T + head.classifier.bias)
    assert head.out_dim == 3 and head.classifier.in_features == 3
    # In training mode the embedding is normalised over the batch (BN weight 1, bias 0 fresh).
    fresh = EmbeddingHead(6, 4, 3).train()
    with torch.no_grad():
        _, features = fresh(x)
    z = x.mean(dim=(2, 3)) @ fresh.fc.weight.T
    torch.testing.assert_close(features, (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps))


def test_without_feature_layer_the_pooled_map_is_the_embedding():
    head = EmbeddingHead(in_channels=4, num_classes=2, feature_dim=None).train()
    x = torch.arange(2 * 4 * 2 * 2, dtype=torch.float32).reshape(2, 4, 2, 2)
    with torch.no_grad():
        logits, features = head(x)
    # Mean of each 2x2 block of consecutive numbers 4k..4k+3 is 4k + 1.5.
    assert features.tolist() == [[1.5, 5.5, 9.5, 13.5], [17.5, 21.5, 25.5, 29.5]]
    assert head.out_dim == 4 and head.fc is None
    torch.testing.assert_close(logits, features @ head.classifier.weight.T + head.classifier.bias)


@pytest.mark.parametrize("name", REID + CIFAR)
def test_spec_rebuilds_the_same_architecture(nets, name):
    net = nets[name]
    spec = yaml.safe_load(yaml.safe_dump(net.spec))  # what a checkpoint stores survives YAML/JSON
    assert spec == net.spec
    assert spec["name"] == name and spec["num_classes"] == NUM_CLASSES and spec["in_channels"] == 3
    assert spec["feature_dim"] == (FEATURE_DIM if name in REID else None)
    if name in ("resnet8", "resnet32"):  # the cheap ones: rebuild and compare everything
        again = build_model(**spec)
        assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
        assert again.spec == net.spec


def test_spec_rebuilds_big_nets_with_identical_state_dict_layout(nets):
    for name in ("resnet50", "densenet121", "wrn28_10", "densenet_bc_190_40"):
        again = build_model(**nets[name].spec)
        assert [(k, v.shape) for k, v in again.state_dict().items()] == [
            (k, v.shape) for k, v in nets[name].state_dict().items()
        ], name


@pytest.mark.parametrize("name", ["resnet50", "small_reid", "resnet20", "wrn28_10"])
def test_deep_copied_last_stage_and_head_make_an_independent_branch(nets, name):
    # What ONE does: copy the last stage and head, feed them the second-to-last map.
    net = nets[name].eval()
    branch = torch.nn.Sequential(copy.deepcopy(net.stages[-1]), copy.deepcopy(net.head)).eval()
    x = torch.randn(2, 3, *INPUT_HW[name])
    with torch.no_grad():
        maps = net.stage_maps(x)
        logits, features = net.head(maps[-1])
        b_logits, b_features = branch(maps[-2])
    assert torch.equal(b_logits, logits) and torch.equal(b_features, features)
    own = {id(p) for p in net.parameters()}
    assert not any(id(p) in own for p in branch.parameters())
    with torch.no_grad():
        branch[1].classifier.bias.add_(1.0)
        assert not torch.equal(branch[1].classifier.bias, net.head.classifier.bias)


@pytest.mark.parametrize("name", ["small_reid", "resnet20", "resnet50", "densenet121"])
def test_in_channels_one_for_grey_images(name):
    torch.manual_seed(0)
    net = build_model(name, 10, feature_dim=16, in_channels=1).eval()
    first_conv = next(m for m in net.stem.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1 and first_conv.weight.shape[1] == 1
    with torch.no_grad():
        logits, _ = net(torch.randn(2, 1, *INPUT_HW[name]))
    assert logits.shape == (2, 10) and net.spec["in_channels"] == 1


def test_wrong_input_channels_are_refused_naming_the_model(nets):
    with pytest.raises(
        ValueError,
        match=r"resnet32 expects images of shape \(batch, 3, height, width\), got \(2, 1, 28, 28\)",
    ):
        nets["resnet32"](torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"got \(3, 28, 28\)"):
        nets["small_reid"].stage_maps(torch.randn(3, 28, 28))


def test_reid_net_without_feature_layer_embeds_the_pooled_map():
    torch.manual_seed(0)
    net = build_model("small_reid", 5, feature_dim=None).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        _, features = net(x)
        expected = net.stage_maps(x)[-1].mean(dim=(2, 3))
    assert features.shape == (2, 128) and net.spec["feature_dim"] is None
    torch.testing.assert_close(features, expected)


def test_zero_pad_shortcut_subsamples_and_pads_with_zeros():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    y = ZeroPadShortcut(2, 4, stride=2)(x)
    assert y.shape == (1, 4, 2, 2)
    assert y[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]
    assert y[0, 1].tolist() == [[16.0, 18.0], [24.0, 26.0]]
    assert y[0, 2:].abs().sum().item() == 0.0


def test_same_seed_gives_identical_initial_weights():
    def build(seed):
        torch.manual_seed(seed)
        return build_model("resnet20", 10).state_dict()

    a, b, c = build(3), build(3), build(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stem.conv.weight"], c["stem.conv.weight"])


def test_initialisation_follows_the_reid_convention():
    torch.manual_seed(0)
    net = build_model("resnet50", 751, feature_dim=512)
    w = net.head.classifier.weight
    # 751*512 draws from N(0, 0.001^2): the sample std is within 1% of 0.001.
    assert abs(w.std().item() - 0.001) < 1e-5 and net.head.classifier.bias.abs().sum().item() == 0.0
    # Kaiming normal, fan_out: layer4's last 1x1 conv has fan_out 2048 -> std sqrt(2/2048).
    conv = net.stages[3][2].conv3.weight
    assert abs(conv.std().item() - (2 / 2048) ** 0.5) / (2 / 2048) ** 0.5 < 0.01
    bns = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)


# ------------------------------------------------------------------ ImageNet weights
def randomised_state(module):
    """A state dict in which every float tensor differs from any fresh initialisation."""
    state = module.state_dict()
    for v in state.values():
        if v.is_floating_point():
            v.copy_(torch.rand_like(v) + 0.5)  # positive: valid BN running variances
    return state


@pytest.fixture(scope="module")
def imagenet_files(tmp_path_factory):
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("imagenet")
    resnet = torchvision.models.resnet50(weights=None)
    resnet_state = randomised_state(resnet)
    torch.save(resnet_state, folder / "resnet50.pth")
    densenet = torchvision.models.densenet121(weights=None)
    densenet_state = randomised_state(densenet)
    # The published DenseNet file uses the old names 'norm.1', 'conv.2', ... inside dense
    # layers; write it that way, wrapped in {'state_dict': ...} as training scripts save.
    old_names = {
        re.sub(r"(denselayer\d+\.(norm|relu|conv))([12])\.", r"\1.\3.", k): v for k, v in densenet_state.items()
    }
    assert any(".norm.1." in k for k in old_names)
    torch.save({"state_dict": old_names, "epoch": 90}, folder / "densenet121.pth")
    return {"dir": folder, "resnet": resnet.eval(), "densenet": densenet.eval()}


def test_resnet50_imagenet_weights_are_loaded_exactly(imagenet_files):
    tv = imagenet_files["resnet"]
    torch.manual_seed(5)
    net = build_model(
        "resnet50",
        9,
        feature_dim=32,
        last_stride=2,
        weights=str(imagenet_files["dir"] / "resnet50.pth"),
    )
    torch.manual_seed(5)
    fresh = build_model("resnet50", 9, feature_dim=32, last_stride=2)
    ours = net.state_dict()
    theirs = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    backbone = [k for k in ours if not k.startswith("head.")]
    assert len(backbone) == len(theirs)
    # Key by key: torchvision layerN is our stages[N-1]; conv1/bn1 live in the stem.
    for k, v in theirs.items():
        mapped = re.sub(r"^layer(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.", k)
        mapped = mapped if mapped.startswith("stages.") else "stem." + mapped
        assert torch.equal(ours[mapped], v), k
    # Functionally: same backbone output as torchvision's (last stride 2 = torchvision's).
    x = torch.randn(2, 3, 64, 32)
    net.eval()
    with torch.no_grad():
        expected = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        torch.testing.assert_close(net.stage_maps(x)[-1], expected, rtol=0, atol=0)
    # The head keeps its fresh initialisation.
    for k, v in fresh.state_dict().items():
        if k.startswith("head."):
            assert torch.equal(ours[k], v), k


def test_densenet121_imagenet_weights_with_old_key_names(imagenet_files):
    tv = imagenet_files["densenet"]
    net = build_model("densenet121", 4, feature_dim=16, weights=str(imagenet_files["dir"] / "densenet121.pth")).eval()
    theirs = {k: v for k, v in tv.state_dict().items() if not k.startswith("classifier.")}
    ours = {k: v for k, v in net.state_dict().items() if not k.startswith("head.")}
    assert len(ours) == len(theirs)
    assert sorted(v.sum().item() for v in ours.values()) == sorted(v.sum().item() for v in theirs.values())
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.stage_maps(x)[-1], F.relu(tv.features(x)), rtol=0, atol=0)


def test_missing_weights_file_says_where_to_get_it(tmp_path):
    path = tmp_path / "nowhere" / "resnet50-0676ba61.pth"
    with pytest.raises(FileNotFoundError) as e:
        build_model("resnet50", 10, weights=str(path))
    message = str(e.value)
    assert str(path) in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message


def test_wrong_architecture_file_names_the_mismatching_keys(imagenet_files):
    with pytest.raises(WeightsMismatchError) as e:
        build_model("resnet50", 10, weights=str(imagenet_files["dir"] / "densenet121.pth"))
    message = str(e.value)
    assert "densenet121.pth" in message and "resnet50" in message
    assert "stem.conv1.weight" in message  # what the net needs and the file lacks
    assert "features.conv0.weight" in message  # what the file has and the net cannot take


def test_wrong_shapes_are_named_and_nothing_is_loaded(imagenet_files):
    torch.manual_seed(0)
    # Two input channels (one is adapted: see test_grey_net_sums_the_first_convolution_over_colour).
    net = build_model("resnet50", 10, in_channels=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(
        WeightsMismatchError,
        match=re.escape("conv1.weight (64, 3, 7, 7) vs stem.conv1.weight (64, 2, 7, 7)"),
    ):
        load_imagenet_weights(net, str(imagenet_files["dir"] / "resnet50.pth"))
    # The other 300-odd tensors fitted, yet none was copied: no half-loaded net.
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_grey_net_sums_the_first_convolution_over_colour(imagenet_files):
    tv = imagenet_files["resnet"]
    net = build_model("resnet50", 10, in_channels=1, last_stride=2, weights=str(imagenet_files["dir"] / "resnet50.pth"))
    torch.testing.assert_close(net.stem.conv1.weight, tv.conv1.weight.sum(dim=1, keepdim=True), rtol=0, atol=0)
    g = torch.randn(2, 1, 64, 32)
    with torch.no_grad():
        expected = tv.layer4(
            tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(g.repeat(1, 3, 1, 1))))))))
        )
        torch.testing.assert_close(net.eval().stage_maps(g)[-1], expected, rtol=1e-4, atol=1e-4)


def test_unreadable_or_non_state_dict_files_are_named(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsMismatchError, match="could not read .*garbage.pth"):
        build_model("densenet121", 10, weights=str(garbage))
    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], a_list)
    with pytest.raises(WeightsMismatchError, match="list.pth does not hold a state dict"):
        build_model("densenet121", 10, weights=str(a_list))


def test_nets_without_imagenet_layout_refuse_weights(imagenet_files):
    with pytest.raises(ValueError, match="loaded into: densenet121, mobilenet_v2, resnet50"):
        build_model("resnet32", 10, weights=str(imagenet_files["dir"] / "resnet50.pth"))


def test_net_refuses_inconsistent_parts():
    stem = torch.nn.Identity()
    with pytest.raises(ValueError, match="head expects 8 channels, last stage gives 4"):
        Net("toy", stem, [torch.nn.Identity()], [4], EmbeddingHead(8, 2))
    with pytest.raises(ValueError, match="2 stages but 1 stage_channels"):
        Net("toy", stem, [torch.nn.Identity(), torch.nn.Identity()], [4], EmbeddingHead(4, 2))
