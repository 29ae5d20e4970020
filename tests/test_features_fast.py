"""The fast feature-extraction path: BN folding, channels-last, bf16 autocast, image files."""

import os

import numpy as np
import pytest
import torch
from model_helpers import with_random_bn_statistics
from torch import nn

from reid_srdl.core.precision import PrecisionError
from reid_srdl.evaluation.metrics import evaluate_reid
from reid_srdl.inference.features import (
    UnreadableImageError,
    embed_image_files,
    extract_features,
    resolve_precision,
)
from reid_srdl.inference.options import ExtractionOptions
from reid_srdl.models import build_model
from reid_srdl.models.fold import fold_batchnorm

pytestmark = pytest.mark.usefixtures("single_thread")


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return with_random_bn_statistics(build_model("small_reid", num_classes=4, feature_dim=16), seed)


def batches(n_batches=2, size=5, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 64, 32, generator=gen),) for _ in range(n_batches)]


def count_bn(module):
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


# ----------------------------------------------------------------------------- folding
def test_folding_one_conv_bn_gives_the_hand_computed_weight_and_bias():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    conv.weight.data.fill_(2.0)
    bn = nn.BatchNorm2d(1, eps=0.0)
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    bn.weight.data.fill_(3.0)
    bn.bias.data.fill_(0.5)
    folded = fold_batchnorm(nn.Sequential(conv, bn).eval())
    (only_conv,) = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    # scale = gamma / sqrt(var + eps) = 3 / 2;  w' = 2 * 3/2 = 3;  b' = beta - mean * scale = 0.5 - 1.5 = -1
    assert only_conv.weight.item() == pytest.approx(3.0)
    assert only_conv.bias.item() == pytest.approx(-1.0)
    assert count_bn(folded) == 0
    # x = 2: conv -> 4, bn -> (4 - 1) / 2 * 3 + 0.5 = 5
    assert folded(torch.full((1, 1, 1, 1), 2.0)).item() == pytest.approx(5.0)


def test_folded_net_is_exact_and_the_callers_net_is_untouched():
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = batches(1)[0][0]
    with torch.inference_mode():
        expected_logits, expected = net(x)
        folded = fold_batchnorm(net)
        logits, feats = folded(x)
    # small_reid: every BN follows a conv or the feature layer: all 13 fold away.
    assert count_bn(net) == 13 and count_bn(folded) == 0
    assert torch.allclose(feats, expected, atol=1e-4, rtol=0)
    assert torch.allclose(logits, expected_logits, atol=1e-4, rtol=0)
    assert count_bn(net) == 13
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_densenet_folds_conv_fed_bns_only_and_the_result_is_unchanged():
    torch.manual_seed(0)
    net = with_random_bn_statistics(build_model("densenet121", num_classes=3, feature_dim=8))
    folded = fold_batchnorm(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        expected, got = net(x)[1], folded(x)[1]
    # Only BNs fed directly by a conv/linear fold: norm2 (after conv1) of each of the
    # 6 + 12 + 24 + 16 = 58 dense layers, the stem's norm0 and the head's BN1d.  The
    # pre-activation norm1 of each layer, the transitions' and norm5 stay.
    assert count_bn(folded) == count_bn(net) - (58 + 2)
    assert torch.allclose(got, expected, atol=1e-4 * max(1.0, expected.abs().max().item()), rtol=0)


def test_a_net_without_batchnorm_is_returned_as_it_is():
    net = nn.Sequential(nn.Conv2d(3, 2, 1))
    assert fold_batchnorm(net) is net


# ----------------------------------------------------------------------------- extraction
def test_fold_and_channels_last_fp32_match_the_exact_path_and_keep_modes():
    net = small_net()
    net.train()
    net.head.bn.eval()  # a submodule deliberately in eval mode must stay so
    exact = extract_features(net, batches())
    fast32 = extract_features(net, batches(), ExtractionOptions(fold_bn=True, channels_last=True))
    assert np.abs(fast32 - exact).max() <= 1e-4
    assert net.training and not net.head.bn.training and net.stem.bn.training
    # The caller's weights keep their layout: channels-last ran on a copy.
    assert net.stem.conv.weight.is_contiguous()


def test_flip_and_normalize_on_the_fast_path_match_the_exact_path():
    net = small_net()
    exact = extract_features(net, batches(), ExtractionOptions(flip=True, normalize=True))
    fast32 = extract_features(
        net, batches(), ExtractionOptions(flip=True, normalize=True, fold_bn=True, channels_last=True, precision="fp32")
    )
    assert np.abs(fast32 - exact).max() <= 1e-5
    assert np.allclose(np.linalg.norm(fast32, axis=1), 1.0, atol=1e-5)


def test_bf16_features_keep_the_ranking_of_well_separated_identities():
    # Runs on every CPU: where oneDNN has no bf16 convolution (AVX2), the plain modules run.
    net = small_net()
    # 4 identities x 4 noisy copies: query = copy 0 of each, gallery = copies 1..3.
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(4, 3, 64, 32, generator=gen)
    images = torch.cat([base + 0.05 * torch.randn(4, 3, 64, 32, generator=gen) for _ in range(4)])
    pids = np.tile(np.arange(4), 4)
    exact = extract_features(net, [(images,)])
    bf16 = extract_features(net, [(images,)], ExtractionOptions(fast=True, precision="bf16"))
    assert bf16.dtype == np.float32
    # bf16 keeps 8 bits of mantissa: features agree to about 1% of their scale.
    assert np.abs(bf16 - exact).max() <= 0.02 * np.abs(exact).max()
    args = (pids[:4], pids[4:], np.zeros(4, int), np.ones(12, int))
    r32, r16 = evaluate_reid(exact[:4], exact[4:], *args), evaluate_reid(bf16[:4], bf16[4:], *args)
    assert r16.cmc[0] == r32.cmc[0] and abs(r16.mAP - r32.mAP) < 1e-3


def test_precision_choices():
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(PrecisionError, match="fp16.*CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(PrecisionError, match="fp32, bf16, fp16, auto.*'int8'"):
        extract_features(small_net(), batches(), ExtractionOptions(precision="int8"))


# ----------------------------------------------------------------------------- image files
def write_images(folder, n=3):
    from PIL import Image

    paths = []
    for i in range(n):
        path = os.path.join(folder, f"{i}.jpg")
        Image.fromarray(np.full((64, 32, 3), 40 * (i + 1), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_image_files_in_workers_match_the_decoded_tensors(tmp_path):
    from PIL import Image

    from reid_srdl.data.transforms import reid_test_transform

    net = small_net()
    paths = write_images(str(tmp_path))
    transform = reid_test_transform(64, 32)
    feats, kept = embed_image_files(net, paths, transform, ExtractionOptions(batch_size=2, workers=1))
    decoded = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    expected = extract_features(net, [(decoded,)])
    assert kept.tolist() == [0, 1, 2]
    assert np.abs(feats - expected).max() <= 1e-5


def test_an_unreadable_image_is_named_and_skipped_only_on_request(tmp_path, caplog):
    from reid_srdl.data.transforms import reid_test_transform

    net = small_net()
    paths = write_images(str(tmp_path))
    broken = os.path.join(str(tmp_path), "broken.jpg")
    with open(broken, "wb") as f:
        f.write(b"not a jpeg")
    paths.insert(1, broken)
    transform = reid_test_transform(64, 32)
    with pytest.raises(UnreadableImageError, match="broken.jpg.*skip_unreadable"):
        embed_image_files(net, paths, transform)
    feats, kept = embed_image_files(net, paths, transform, ExtractionOptions(batch_size=2), skip_unreadable=True)
    assert kept.tolist() == [0, 2, 3]
    assert "skipped: cannot read image" in caplog.text  # a warning of the library's logger
    alone, _ = embed_image_files(net, [paths[i] for i in (0, 2, 3)], transform)
    assert np.abs(feats - alone).max() <= 1e-5
    with pytest.raises(UnreadableImageError, match="none of the 1 images"):
        embed_image_files(net, [broken], transform, skip_unreadable=True)


def test_end_of_run_evaluation_passes_the_eval_section_fast_options():
    from types import SimpleNamespace

    from reid_srdl.config import EvalConfig
    from reid_srdl.engine.evaluate import evaluate_model

    net = small_net()
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(3, 3, 64, 32, generator=gen)
    q_images = base + 0.05 * torch.randn(3, 3, 64, 32, generator=gen)
    g_images = torch.cat([base + 0.05 * torch.randn(3, 3, 64, 32, generator=gen) for _ in range(2)])
    split = lambda images, pids, cam: SimpleNamespace(
        loader=[(images,)], pids=np.array(pids), camids=np.full(len(pids), cam)
    )
    data = SimpleNamespace(
        task="reid", query=split(q_images, [0, 1, 2], 0), gallery=split(g_images, [0, 1, 2] * 2, 1), multi_query=None
    )
    calls = []

    def recording_extract(model, loader, options):
        calls.append(options)
        return extract_features(model, loader, options)

    cfg = EvalConfig(plot=False, precision="fp32", channels_last=True, fold_bn=True)
    fast = evaluate_model(net, data, "cpu", cfg, "", "test", progress=False, extract=recording_extract)
    exact = evaluate_model(net, data, "cpu", EvalConfig(plot=False), "", "test", progress=False)
    assert [c.fold_bn and c.channels_last for c in calls] == [True, True]
    assert fast["single_query"]["mAP"] == pytest.approx(exact["single_query"]["mAP"], abs=1e-9)
    assert fast["single_query"]["rank1"] == exact["single_query"]["rank1"]


class TiedConvs(nn.Module):
    """Two convolutions sharing one weight, each followed by its own BatchNorm."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.b.weight = self.a.weight
        self.bn_a, self.bn_b = nn.BatchNorm2d(4), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn_a(self.a(x)) + self.bn_b(self.b(x))


def test_folding_tied_weights_rescales_each_use_apart_and_leaves_the_callers_weights():
    torch.manual_seed(0)
    net = with_random_bn_statistics(TiedConvs())
    before = net.a.weight.detach().clone()
    x = torch.randn(2, 3, 8, 4)
    folded = fold_batchnorm(net, channels_last=True)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    assert count_bn(folded) == 0
    assert torch.equal(net.a.weight, before) and net.b.weight is net.a.weight
