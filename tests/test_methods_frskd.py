"""FRSKD: the BiFPN self-teacher (fusion weights, resizing, wiring, parameter count), every loss
term against a hand computation, which gradients the teacher side gets, options, a run's
teacher accuracy.  What every method satisfies (deploy, training, FLOPs, resume, the trainer)
is in tests/test_method_contract.py."""

import functools
import json
import os

import pytest
import torch
import torch.nn.functional as F

from reid_srdl import load_config
from reid_srdl.config import ConfigError
from reid_srdl.methods import build_method
from reid_srdl.methods.frskd import FRSKD, BiFPNcTeacher, FRSKDOptions, FusionNode, resize_to, same_max_pool
from reid_srdl.models import build_model

WIDTH = 16
from method_helpers import hand_ce, hand_kl, spread_classifiers
from tiny_runs import NETS, NUM_CLASSES, batch

pytestmark = pytest.mark.usefixtures("single_thread")


def hand_attention(student, teacher):
    """Zagoruyko & Komodakis: a = mean_c F^2, flattened, divided by its L2 norm; mean squared gap."""

    def a(fmap):
        m = (fmap.double() ** 2).mean(dim=1).reshape(fmap.shape[0], -1)
        return m / torch.sqrt((m**2).sum(dim=1, keepdim=True))

    return ((a(student) - a(teacher)) ** 2).mean().item()


# ----------------------------------------------------------------------------- BiFPN parts
def test_fusion_weights_are_relu_normalised_and_applied():
    torch.manual_seed(0)
    node = FusionNode(3, 4).eval()
    with torch.no_grad():
        node.weight.copy_(torch.tensor([2.0, -1.0, 1.0]))
    # relu -> (2, 0, 1), divided by 3 + eps.
    expected = torch.tensor([2.0, 0.0, 1.0]) / (3.0 + 1e-4)
    assert torch.allclose(node.fusion_weights(), expected)
    xs = [torch.randn(2, 4, 5, 5) for _ in range(3)]
    with torch.no_grad():
        out = node(xs)
        hand = node.conv(expected[0] * xs[0] + expected[2] * xs[2])
    assert torch.allclose(out, hand, atol=1e-6)
    # Depthwise-separable: a depthwise 3x3 (one filter per channel), then a pointwise 1x1.
    dw, pw = node.conv[0], node.conv[1]
    assert dw.groups == 4 and dw.kernel_size == (3, 3) and pw.kernel_size == (1, 1)


def test_resize_shrinks_by_max_pooling_grows_by_nearest_and_keeps_equal_sizes():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert resize_to(x, (4, 4)) is x
    # 4x4 -> 2x2: max of each 2x2 block.
    assert resize_to(x, (2, 2)).flatten().tolist() == [5.0, 7.0, 13.0, 15.0]
    # 2x2 -> 4x4: each value repeated over a 2x2 block.
    small = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert resize_to(small, (4, 4))[0, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    # Not halving: 7x7 -> 3x3 and 3x3 -> 7x7 (odd sizes, as in CIFAR nets on 28x28).
    assert resize_to(torch.randn(1, 2, 7, 7), (3, 3)).shape == (1, 2, 3, 3)
    assert resize_to(torch.randn(1, 2, 3, 3), (7, 7)).shape == (1, 2, 7, 7)
    # 7x7 -> 3x3 uses adaptive windows: rows/cols {0-2, 2-4, 4-6}; the max of the first.
    odd = torch.arange(49.0).reshape(1, 1, 7, 7)
    assert resize_to(odd, (3, 3))[0, 0].tolist() == [[16, 18, 20], [30, 32, 34], [44, 46, 48]]
    # Whole ratios in each direction separately (8x6 -> 4x3: 2x2 blocks; 8x6 -> 2x6: 4x1).
    wide = torch.arange(48.0).reshape(1, 1, 8, 6)
    assert resize_to(wide, (4, 3))[0, 0, 0].tolist() == [7.0, 9.0, 11.0]
    assert resize_to(wide, (2, 6))[0, 0, 1].tolist() == [42.0, 43.0, 44.0, 45.0, 46.0, 47.0]


def test_uniform_self_teacher_wiring_matches_a_hand_written_bifpn():
    """Top-down then bottom-up over resnet8's 28/14/7 maps, written out level by level."""
    torch.manual_seed(0)
    m = FRSKD.create(NETS["resnet8"][0], total_epochs=2, bifpn="uniform", width=WIDTH).eval()
    spread_classifiers(m.trainable)
    t = m.trainable.teacher
    with torch.no_grad():  # distinct fusion weights, so that swapped inputs would show
        for node in list(t.top_down) + list(t.bottom_up):
            node.weight.uniform_(0.2, 2.0)
    x, _, _ = batch("resnet8", n=3)
    with torch.no_grad():
        c0, c1, c2 = m.trainable.net.stage_maps(x)
        logits, refined = t([c0, c1, c2])
        up = lambda v: F.interpolate(v, scale_factor=2, mode="nearest")
        down = lambda v: F.max_pool2d(v, 2)
        l0, l1, l2 = (t.lateral[i](F.relu(c)) for i, c in enumerate((c0, c1, c2)))
        td1 = t.top_down[1]([l1, up(l2)])
        td0 = t.top_down[0]([l0, up(td1)])
        out0 = td0
        out1 = t.bottom_up[0]([l1, td1, down(out0)])
        out2 = t.bottom_up[1]([l2, down(out1)])
        hand_logits = t.head.classifier(out2.mean(dim=(2, 3)))
    for got, want in zip(refined, (out0, out1, out2)):
        assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(logits, hand_logits, atol=1e-5)
    assert [r.shape[1:] for r in refined] == [(WIDTH, 28, 28), (WIDTH, 14, 14), (WIDTH, 7, 7)]


# ----------------------------------------------------------------------------- BiFPNc (official default)
def test_same_padded_max_pool_matches_the_official_padding_by_hand():
    # h = 28: out 14, padding (14 - 1) * 2 + 3 - 28 = 1 -> 0 before, 1 after; windows rows {0-2, 2-4, ...}.
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # 4x4 -> 2x2: padding (2-1)*2+3-4 = 1 (0 before, 1 after): windows {0,1,2} and {2,3,pad}.
    assert same_max_pool(x)[0, 0].tolist() == [[10.0, 11.0], [14.0, 15.0]]
    odd = torch.arange(25.0).reshape(1, 1, 5, 5)
    # 5x5 -> 3x3: padding (3-1)*2+3-5 = 2 (1 before, 1 after): windows {pad,0,1}, {1,2,3}, {3,4,pad}.
    assert same_max_pool(odd)[0, 0].tolist() == [[6.0, 8.0, 9.0], [16.0, 18.0, 19.0], [21.0, 23.0, 24.0]]
    assert same_max_pool(torch.zeros(1, 3, 7, 7)).shape == (1, 3, 4, 4)


def _separable(block, v):
    """The official DepthConvBlock (kernel 3, depth 2) by hand: dw, pw, BN, ReLU, dw, pw, BN."""
    dw1, pw1, bn1, _relu, dw2, pw2, bn2 = block
    v = bn1(pw1(F.conv2d(v, dw1.weight, padding=1, groups=dw1.groups)))
    return bn2(pw2(F.conv2d(F.relu(v), dw2.weight, padding=1, groups=dw2.groups)))


def test_bifpnc_wiring_matches_the_official_layer_by_hand():
    """BiFPN_layer.forward (models/bifpnc.py) over resnet8's 28/14/7 maps, level by level:
    lateral 1x1s for both paths, up = nearest x2 then 1x1, down = same-padded 3x3/2 max pool
    then 1x1, weights relu(w)/(sum + 1e-6), ReLU on every fused input and on the outputs."""
    torch.manual_seed(0)
    m = FRSKD.create(NETS["resnet8"][0], total_epochs=2).eval()
    t = m.trainable.teacher
    assert isinstance(t, BiFPNcTeacher) and t.widths == [32, 64, 128]
    with torch.no_grad():  # distinct fusion weights, so that swapped inputs would show
        for w in list(t.top_down_weight) + list(t.bottom_up_weight):
            w.uniform_(0.2, 2.0)
        for mod in t.modules():  # non-trivial BN statistics
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    x, _, _ = batch("resnet8", n=3)
    relu = F.relu

    def nw(w):
        w = relu(w)
        return w / (w.sum() + 1e-6)

    with torch.no_grad():
        c = m.trainable.net.stage_maps(x)
        logits, refined = t(c)
        lat = [t.lateral[i](relu(c[i])) for i in range(3)]
        trans = [t.lateral_up[i - 1](relu(c[i])) for i in (1, 2)]
        up = lambda v: F.interpolate(v, scale_factor=2, mode="nearest")
        pool = lambda v: F.max_pool2d(F.pad(v, [0, 1, 0, 1]), 3, 2)  # 28->14, 14->7: pad 1 after
        w = nw(t.top_down_weight[1])
        td1 = _separable(t.top_down[1], w[0] * relu(lat[1]) + w[1] * t.down_resample[1](up(relu(lat[2]))))
        w = nw(t.top_down_weight[0])
        td0 = _separable(t.top_down[0], w[0] * relu(lat[0]) + w[1] * t.down_resample[0](up(relu(td1))))
        w = nw(t.bottom_up_weight[0])
        out1 = _separable(
            t.bottom_up[0], w[0] * relu(trans[0]) + w[1] * relu(td1) + w[2] * t.up_resample[0](pool(relu(td0)))
        )
        w = nw(t.bottom_up_weight[1])
        out2 = _separable(t.bottom_up[1], w[0] * relu(trans[1]) + w[1] * t.up_resample[1](pool(relu(out1))))
        expected = [relu(td0), relu(out1), relu(out2)]
        hand_logits = t.head.classifier(expected[-1].mean(dim=(2, 3)))
    for got, want in zip(refined, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, hand_logits, atol=1e-5, rtol=1e-5)
    assert [tuple(r.shape[1:]) for r in refined] == [(32, 28, 28), (64, 14, 14), (128, 7, 7)]


def test_bifpnc_parameter_count_on_the_official_cifar_resnet18_by_hand():
    """The official CIFAR ResNet-18 (network_channels 64/128/256/512), CIFAR-100, width 2,
    depth 2: widths W = 128/256/512/1024.  Counted by hand (conv c_in*c_out, BN 2c, a separable
    3x3 block of depth 2 = 2 (9W + W^2 + 2W)):
      lateral 1x1 (all 4 levels):      8,448 + 33,280 + 132,096 + 526,336 = 700,160
      bottom-up lateral (levels 2-4):  33,280 + 132,096 + 526,336        = 691,712
      top-down 1x1 after upsampling:   33,024 + 131,584 + 525,312        = 689,920
      bottom-up 1x1 after pooling:     33,280 + 132,096 + 526,336        = 691,712
      top-down nodes (W 128/256/512):  35,584 + 136,704 + 535,552        = 707,840
      bottom-up nodes (256/512/1024):  136,704 + 535,552 + 2,119,680     = 2,791,936
      fusion weights:                  3 x 2 + 2 x 3 + 2                 = 14
      classifier 1024 x 100 + 100                                        = 102,500
    total 6,375,794."""
    teacher = BiFPNcTeacher([64, 128, 256, 512], width_multiplier=2, depth=2, num_classes=100)
    assert sum(p.numel() for p in teacher.parameters()) == 6_375_794
    maps = [torch.randn(2, c, s, s) for c, s in zip((64, 128, 256, 512), (32, 16, 8, 4))]
    with torch.no_grad():
        logits, refined = teacher.eval()(maps)
    assert logits.shape == (2, 100)
    assert [tuple(r.shape[1:]) for r in refined] == [(128, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4)]


@pytest.mark.parametrize("teacher", [dict(bifpn="uniform", width=WIDTH), dict(bifpn="bifpnc", width_multiplier=1)])
@pytest.mark.parametrize("arch, options", [("resnet50", dict(last_stride=1)), ("densenet121", {})])
def test_stages_of_equal_resolution_are_fused_without_assuming_halving(arch, options, teacher):
    # ResNet-50 (last stride 1) and DenseNet-121: the last two stages share a resolution.
    torch.manual_seed(0)
    m = FRSKD.create(
        functools.partial(build_model, arch, NUM_CLASSES, feature_dim=16, **options), total_epochs=2, **teacher
    ).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        maps = m.trainable.net.stage_maps(x)
        logits, refined = m.trainable.teacher(maps)
    assert maps[-1].shape[-2:] == maps[-2].shape[-2:]
    assert [r.shape[-2:] for r in refined] == [mp.shape[-2:] for mp in maps]
    assert logits.shape == (2, NUM_CLASSES)


# ----------------------------------------------------------------------------- loss
@pytest.mark.parametrize("name", NETS)
def test_every_loss_term_matches_a_hand_computation(name):
    torch.manual_seed(0)
    T, alpha, beta = 3.0, 1.5, 50.0
    m = FRSKD.create(NETS[name][0], total_epochs=2, temperature=T, alpha=alpha, beta=beta)
    spread_classifiers(m.trainable)
    m.train()
    x, y, idx = batch(name)
    out = m(x, y, idx)
    with torch.no_grad():
        maps = m.trainable.net.stage_maps(x)
        z = m.trainable.net.head(maps[-1])[0]
        zt, refined = m.trainable.teacher(maps)
    ce, ce_t = hand_ce(z, y), hand_ce(zt, y)
    kd = hand_kl(z, zt, T)
    att = sum(hand_attention(s, r) for s, r in zip(maps, refined))
    assert len(refined) == len(maps) == len(m.trainable.net.stages)
    assert kd > 1e-3 and att > 1e-6
    assert out["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["ce_teacher"].item() == pytest.approx(ce_t, rel=1e-5)
    assert out["kd"].item() == pytest.approx(kd, rel=1e-4)
    assert out["attention"].item() == pytest.approx(att, rel=1e-4)
    assert out["loss"].item() == pytest.approx(ce + ce_t + alpha * kd + beta * att, rel=1e-5)
    assert torch.allclose(out["logits"], z, atol=1e-6)
    assert out["acc_teacher"].item() == pytest.approx((zt.argmax(1) == y).float().mean().item())


def test_teacher_side_is_a_target_only_in_the_distillation_terms():
    torch.manual_seed(0)
    m = FRSKD.create(NETS["resnet8"][0], total_epochs=2)
    spread_classifiers(m.trainable)
    x, y, idx = batch("resnet8")
    out = m(x, y, idx)
    (out["kd"] + out["attention"]).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.trainable.teacher.parameters())
    assert m.trainable.net.stem.conv.weight.grad.abs().sum() > 0


def test_trainable_is_the_classifier_and_its_self_teacher():
    m = FRSKD.create(NETS["resnet8"][0], total_epochs=2)
    assert {n.split(".")[0] for n, _ in m.trainable.named_parameters()} == {"net", "teacher"}


def test_teacher_cross_entropy_also_trains_the_backbone():
    # The self-teacher reads the classifier's maps without detaching them ("teaching myself").
    torch.manual_seed(0)
    m = FRSKD.create(NETS["resnet8"][0], total_epochs=2)
    x, y, idx = batch("resnet8")
    m(x, y, idx)["ce_teacher"].backward()
    assert m.trainable.net.stem.conv.weight.grad.abs().sum() > 0
    assert m.trainable.net.head.classifier.weight.grad is None


# ----------------------------------------------------------------------------- config, errors
def test_built_from_its_config_section():
    cfg = load_config(
        None,
        [
            "method.name=frskd",
            "method.frskd.bifpn=uniform",
            "method.frskd.width=8",
            "method.frskd.alpha=1",
            "method.frskd.beta=10",
        ],
    )
    m = build_method(cfg.method, NETS["resnet8"][0], total_epochs=3, num_classes=NUM_CLASSES)
    assert isinstance(m, FRSKD)
    assert (m.options.temperature, m.options.alpha, m.options.beta, m.options.width) == (4.0, 1.0, 10.0, 8)
    assert m.trainable.teacher.head.in_channels == 8
    # The defaults are the official code's: README's CIFAR-100 command (alpha 2, beta 100),
    # main.py (T 4, --bifpn BiFPNc, --width 2, --depth 2).
    assert FRSKDOptions() == FRSKDOptions(
        temperature=4.0, alpha=2.0, beta=100.0, bifpn="bifpnc", width_multiplier=2, depth=2, width=64
    )
    default = build_method(
        load_config(None, ["method.name=frskd"]).method, NETS["resnet8"][0], total_epochs=3, num_classes=NUM_CLASSES
    )
    assert isinstance(default.trainable.teacher, BiFPNcTeacher)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bifpn="uniform", width=0), r"^method.frskd.width must be >= 1, got 0$"),
        (dict(width_multiplier=0), r"^method.frskd.width_multiplier must be >= 1, got 0$"),
        (dict(bifpn="bifpn"), r"^method.frskd.bifpn='bifpn' is not one of: bifpnc, uniform$"),
        (dict(temperature=0.0), r"^method.frskd.temperature must be > 0, got 0.0$"),
        (dict(beta=-1.0), r"^method.frskd.beta must be >= 0, got -1.0$"),
    ],
)
def test_bad_options_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FRSKD.create(NETS["resnet8"][0], total_epochs=2, **kwargs)


# ----------------------------------------------------------------------------- a run
def test_a_run_logs_the_self_teachers_accuracy(tiny_run):
    with open(os.path.join(tiny_run("frskd"), "metrics.jsonl")) as f:
        record = json.loads(f.readline())
    assert 0.0 <= record["acc_teacher"] <= 1.0
