"""Conv + ReLU (+ residual add) fused into one oneDNN primitive for CPU inference."""

import pytest
import torch
from model_helpers import with_random_bn_statistics
from torch import fx, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from reid_srdl.inference.features import inference_copy
from reid_srdl.models import build_model, fuse_onednn
from reid_srdl.models.fold import fold_batchnorm
from reid_srdl.models.fuse_onednn import FusedConv2d, fuse_conv_relu, fuse_for_cpu_inference, fusion_available

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.skipif(not fusion_available(), reason="this torch has no oneDNN fused convolutions"),
]


def images(n=3, h=64, w=32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, h, w, generator=gen).contiguous(memory_format=torch.channels_last)


def count_fused(module):
    return sum(isinstance(m, FusedConv2d) for m in module.modules())


def test_small_reid_fuses_every_conv_relu_and_gives_the_exact_features():
    torch.manual_seed(0)
    net = with_random_bn_statistics(build_model("small_reid", num_classes=4, feature_dim=16))
    x = images()
    with torch.inference_mode():
        fused = inference_copy(net, fold_bn=True, channels_last=True)
        exact = net(x)
        got = fused(x)
    # By hand: the stem's conv+ReLU, and in each of the 4 BasicBlocks conv1+ReLU and
    # conv2+shortcut+ReLU: 1 + 4 x 2 = 9.  The shortcuts' 1x1 convs feed an add, not a ReLU.
    assert count_fused(fused) == 9
    for want, have in zip(exact, got):
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5)
    assert count_fused(net) == 0  # the caller's network is untouched


def test_a_bottleneck_fuses_three_convs_and_matches_the_unfused_block_in_fp32():
    torch.manual_seed(0)
    block = with_random_bn_statistics(nn.Sequential(Bottleneck(64, 16), BasicBlock(64, 64)))
    folded = fold_batchnorm(block, channels_last=True)
    plain = fold_batchnorm(block, channels_last=True)
    assert isinstance(folded, fx.GraphModule)
    # Bottleneck: conv1+ReLU, conv2+ReLU, conv3+identity+ReLU; BasicBlock: conv1+ReLU, conv2+identity+ReLU.
    assert fuse_conv_relu(folded) == 5
    x = torch.randn(2, 64, 16, 8).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), plain(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(folded(x), block(x), rtol=1e-4, atol=1e-4)


def _bf16_block_case():
    torch.manual_seed(0)
    block = with_random_bn_statistics(nn.Sequential(Bottleneck(64, 16)))
    x = torch.randn(2, 64, 16, 8).contiguous(memory_format=torch.channels_last)
    return block, fold_batchnorm(block, channels_last=True), x


def test_bf16_fused_block_stays_close_to_fp32():
    block, plain, x = _bf16_block_case()
    fused = fold_batchnorm(block, channels_last=True)
    fuse_conv_relu(fused)
    with torch.inference_mode():
        want = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, unfused = fused(x), plain(x)
    if fuse_onednn.fusion_runs_in(torch.bfloat16):
        assert got.dtype == torch.bfloat16  # one primitive, in the autocast dtype
    else:  # an AVX2 CPU: oneDNN refuses bf16 convolutions, the plain modules ran
        torch.testing.assert_close(got, unfused, rtol=0, atol=0)
    # bf16 keeps 8 bits of mantissa: relative error ~2^-8 per rounding, a few roundings.
    assert ((got.float() - want).abs().max() / want.abs().max()).item() < 0.03


def test_a_dtype_this_cpu_cannot_fuse_runs_the_plain_modules(monkeypatch):
    block, plain, x = _bf16_block_case()
    fused = fold_batchnorm(block, channels_last=True)
    assert fuse_conv_relu(fused) == 3  # the graph is rewritten; the dtype is decided per call
    monkeypatch.setattr(fuse_onednn, "fusion_runs_in", lambda dtype: dtype == torch.float32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(fused(x), plain(x), rtol=0, atol=0)


def test_the_bf16_probe_agrees_with_torchs_own_cpu_check():
    # torch's check (what inductor asks before it emits these operators) is the oracle.
    assert fuse_onednn.fusion_runs_in(torch.bfloat16) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert fuse_onednn.fusion_runs_in(torch.float32)


class ConvUsedTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        return self.relu(y), y * 2


class BroadcastAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x, bias):
        return torch.relu(self.conv(x) + bias)


def test_a_conv_whose_output_is_used_twice_is_not_fused():
    gm = fx.symbolic_trace(ConvUsedTwice().eval())
    assert fuse_conv_relu(gm) == 0


def test_an_add_that_broadcasts_runs_the_plain_modules_with_the_same_result():
    torch.manual_seed(0)
    module = BroadcastAdd().eval()
    gm = fx.symbolic_trace(module)
    assert fuse_conv_relu(gm) == 1
    x = images(2, 8, 4)
    bias = torch.randn(1, 4, 1, 1)  # broadcasts: not the conv output's shape
    with torch.inference_mode():
        torch.testing.assert_close(gm(x, bias), module(x, bias))


def test_with_gradients_on_the_plain_modules_run_and_backpropagate():
    torch.manual_seed(0)
    block = with_random_bn_statistics(nn.Sequential(BasicBlock(8, 8)))
    fused = fold_batchnorm(block)
    assert fuse_conv_relu(fused) == 2
    x = torch.randn(2, 8, 8, 4, requires_grad=True)
    fused(x).sum().backward()  # the oneDNN operators have no backward: the plain path ran
    with torch.no_grad():
        torch.testing.assert_close(fused(x), block(x), rtol=1e-5, atol=1e-5)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_without_the_fused_operators_nothing_is_rewritten(monkeypatch):
    monkeypatch.setattr(fuse_onednn, "fusion_available", lambda: False)
    torch.manual_seed(0)
    net = with_random_bn_statistics(build_model("small_reid", num_classes=4, feature_dim=16))
    folded = fold_batchnorm(net, channels_last=True)
    assert fuse_for_cpu_inference(folded) == 0 and count_fused(folded) == 0
