"""BNNeck (model.neck=bnneck): which tensor each loss sees, the inference feature, the frozen
shift and bias-free classifier, and the wiring through every multi-branch method."""

import pytest
import torch
import torch.nn.functional as F
from method_helpers import spread_classifiers
from torch.utils.data import DataLoader, TensorDataset

from reid_srdl.core.checkpoint import save_model_file
from reid_srdl.inference.features import extract_features
from reid_srdl.methods import METHODS
from reid_srdl.methods.byot import BYOT
from reid_srdl.methods.frskd import FRSKD
from reid_srdl.methods.losses import batch_hard_triplet
from reid_srdl.methods.one import ONE
from reid_srdl.methods.recipe import Recipe
from reid_srdl.models import build_model
from reid_srdl.models.model_file import load_model_file

pytestmark = pytest.mark.usefixtures("single_thread")

C = 4
BOT = Recipe(label_smoothing=0.1, triplet_weight=1.0, triplet_margin=0.3)


def factory():
    return build_model("small_reid", C, feature_dim=None, neck="bnneck")


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 64, 32, generator=g), torch.arange(n) % C, torch.arange(n)


def pooled_last_map(net, x):
    """The pre-BN feature, from the stage maps (independently of the head's code)."""
    return net.stage_maps(x)[-1].mean(dim=(2, 3))


def bn_train(v, bn):
    """BatchNorm1d in training mode, written out: batch statistics (biased variance)."""
    return (v - v.mean(0)) / torch.sqrt(v.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias


def hand_smoothed_ce(logits, labels, eps):
    log_p = logits.double().log_softmax(dim=1)
    q = torch.full_like(log_p, eps / logits.shape[1])
    q[torch.arange(len(labels)), labels] += 1 - eps
    return float(-(q * log_p).sum(dim=1).mean())


def test_bnneck_head_layout():
    net = factory()
    head = net.head
    assert head.classifier.bias is None and not head.bn.bias.requires_grad and head.bn.weight.requires_grad
    assert torch.equal(head.bn.bias, torch.zeros(128)) and head.fc is None
    assert net.spec["neck"] == "bnneck" and net.spec["feature_dim"] is None
    # The frozen shift does not move in training (the optimizer never sees it).
    from reid_srdl import load_config
    from reid_srdl.engine.trainer import build_optimizer

    opt = build_optimizer(net, load_config(None, ["optim.name=adam"]).optim)
    x, y, _ = batch()
    F.cross_entropy(net(x)[0], y).backward()
    opt.step()
    assert torch.equal(head.bn.bias, torch.zeros(128))


def test_each_loss_sees_its_tensor_in_vanilla():
    torch.manual_seed(0)
    method = METHODS.get("vanilla").create(factory, 1, recipe=BOT)
    spread_classifiers(method.trainable)
    x, y, idx = batch()
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    method.train()
    out = method(x, y, idx)
    net = method.trainable
    with torch.no_grad():
        net.train()
        pre = pooled_last_map(net, x)
        post = bn_train(pre, net.head.bn)
        logits = post @ net.head.classifier.weight.t()
    assert out["ce"].item() == pytest.approx(hand_smoothed_ce(logits, y, 0.1), rel=1e-5)
    assert out["triplet"].item() == pytest.approx(batch_hard_triplet(pre, y, 0.3).item(), rel=1e-5)
    assert out["triplet"].item() != pytest.approx(batch_hard_triplet(post, y, 0.3).item(), rel=1e-3)
    assert out["loss"].item() == pytest.approx(out["ce"].item() + out["triplet"].item(), rel=1e-6)


def test_inference_uses_the_post_bn_feature_with_running_statistics(tmp_path):
    torch.manual_seed(1)
    net = factory()
    net.train()
    for seed in range(3):  # move the running statistics away from 0 / 1
        net(batch(seed=seed)[0])
    net.eval()
    x = batch(seed=9)[0]
    with torch.no_grad():
        pre = pooled_last_map(net, x)
        bn = net.head.bn
        expected = (pre - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight
    feats = extract_features(net, DataLoader(TensorDataset(x, torch.zeros(8)), batch_size=4))
    assert torch.allclose(torch.from_numpy(feats), expected, atol=1e-5)
    # A saved model rebuilds the same head and returns the same features.
    save_model_file(net, str(tmp_path / "m.pt"))
    again, meta = load_model_file(str(tmp_path / "m.pt"))
    assert meta["spec"]["neck"] == "bnneck"
    with torch.no_grad():
        assert torch.allclose(again(x)[1], expected, atol=1e-5)


@pytest.mark.parametrize("cls", [ONE, BYOT, FRSKD])
def test_multi_branch_methods_put_the_triplet_on_the_pre_bn_feature(cls):
    torch.manual_seed(2)
    method = cls.create(factory, 4, recipe=BOT)
    x, y, idx = batch()
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    method.train()
    out = method(x, y, idx)
    with torch.no_grad():
        if cls is ONE:
            net = method.trainable
            maps = net.net.stage_maps(x)
            shared = maps[-2]
            pres = [maps[-1].mean(dim=(2, 3))] + [b.stage(shared).mean(dim=(2, 3)) for b in net.branches]
            expected = sum(batch_hard_triplet(p, y, 0.3) for p in pres)
        else:
            # BYOT and FRSKD: the deployed classifier's feature only.
            expected = batch_hard_triplet(pooled_last_map(method.trainable.net, x), y, 0.3)
    assert out["triplet"].item() == pytest.approx(expected.item(), rel=1e-5)
    out["loss"].backward()  # the whole graph trains


def test_bnneck_net_folds_and_exports_with_the_same_features(tmp_path):
    from reid_srdl.export import export_torchscript, load_exported
    from reid_srdl.models.fold import fold_batchnorm

    torch.manual_seed(3)
    net = factory()
    net.train()
    net(batch(seed=1)[0])  # running statistics away from 0 / 1
    net.eval()
    x = batch(n=3, seed=2)[0]
    with torch.no_grad():
        expected = net(x)[1]
        assert torch.allclose(fold_batchnorm(net)(x)[1], expected, atol=1e-5)
        export_torchscript(net, str(tmp_path / "m.ts"), 64, 32)
        assert torch.allclose(load_exported(str(tmp_path / "m.ts"))(x)[1], expected, atol=1e-5)
