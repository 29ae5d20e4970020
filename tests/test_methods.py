"""Vanilla, KD and SRDL: losses against hand computations, the logit bank, the restart,
the frozen teacher."""

import os

import pytest
import torch
import torch.nn.functional as F
from method_helpers import hand_kl
from tiny_runs import NETS, NUM_CLASSES, TinySet, stage_context

from reid_srdl import load_config
from reid_srdl.core.checkpoint import CheckpointError, save_model_file
from reid_srdl.core.registry import UnknownNameError
from reid_srdl.core.seeding import SRDL_STAGE2_INIT, derive_seed
from reid_srdl.methods import METHODS, build_method
from reid_srdl.methods.kd import KnowledgeDistillation, load_teacher
from reid_srdl.methods.srdl import SRDL, EnsembleNet
from reid_srdl.models import build_model

factory = NETS["resnet8"][0]


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="valid methods: .*kd.*srdl.*vanilla"):
        METHODS.get("magic")


def test_srdl_stages_are_two_halves_with_their_own_schedule():
    m = SRDL.create(factory, total_epochs=9)
    assert [s.epochs for s in m.stages()] == [4, 5]
    assert m.per_stage_schedule is True
    assert SRDL.create(factory, 8, schedule="incomplete").per_stage_schedule is False


def test_srdl_stage2_loss_equals_hand_computation():
    torch.manual_seed(0)
    m = SRDL.create(factory, total_epochs=2, temperature=3.0)
    data = TinySet()
    m.bank = torch.randn(len(data), NUM_CLASSES) * 3
    m.stage = 1  # in stage 2, with this bank
    idx = torch.tensor([5, 0, 7, 2])
    images = data.x[idx]
    labels = data.y[idx]
    out = m(images, labels, idx)
    logits = out["logits"].detach()
    ce = F.cross_entropy(logits, labels).item()
    kl = hand_kl(logits, m.bank[idx], 3.0)
    assert out["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert out["loss"].item() == pytest.approx(ce + kl, rel=1e-5)


def test_srdl_stage1_is_plain_cross_entropy():
    m = SRDL.create(factory, total_epochs=2)
    data = TinySet()
    out = m(data.x[:4], data.y[:4], torch.arange(4))
    assert "kl" not in out
    assert out["loss"].item() == pytest.approx(F.cross_entropy(out["logits"], data.y[:4]).item(), rel=1e-6)


def test_logit_bank_equals_direct_eval_forward_and_stage2_restarts(tmp_path):
    torch.manual_seed(0)
    m = SRDL.create(factory, total_epochs=2, seed=11)
    data = TinySet()
    # Move BN statistics away from their init so that eval vs train mode matters.
    m.train()
    for _ in range(3):
        m(data.x, data.y, torch.arange(len(data)))["loss"].backward()
    stage1 = m.trainable
    stage1.eval()
    with torch.no_grad():
        direct = stage1(data.x)[0]
    m.on_stage_end(0, stage_context(tmp_path, data))
    assert torch.allclose(m.bank, direct, atol=1e-5)
    saved = torch.load(os.path.join(tmp_path, "stage1_logits.pt"))["logits"]
    assert torch.equal(saved, m.bank)
    # Stage 2 restarts: a different network object whose weights are a fresh initialisation...
    assert m.trainable is not stage1
    torch.manual_seed(derive_seed(11, SRDL_STAGE2_INIT))  # its own stream of the run seeded 11
    expected = factory().state_dict()
    for k, v in m.trainable.state_dict().items():
        assert torch.equal(v, expected[k]), k
    # ...and not the trained stage-1 weights.
    conv = "stem.0.weight" if "stem.0.weight" in expected else next(iter(expected))
    assert not torch.equal(m.trainable.state_dict()[conv], stage1.state_dict()[conv])
    assert m.stage == 1 and m.extra_state() == {"stage": 1, "bank_stats": m.bank_stats}
    assert set(m.bank_stats) == {"bank_train_acc", "bank_entropy", "bank_entropy_max"}
    assert os.path.isfile(tmp_path / "stage1.pt")


def test_srdl_without_restart_continues_from_stage1(tmp_path):
    m = SRDL.create(factory, total_epochs=2, restart=False)
    before = {k: v.clone() for k, v in m.trainable.state_dict().items()}
    m.on_stage_end(0, stage_context(tmp_path, TinySet()))
    for k, v in m.trainable.state_dict().items():
        assert torch.equal(v, before[k])


def test_srdl_resume_reloads_the_bank(tmp_path):
    data = TinySet()
    m = SRDL.create(factory, total_epochs=2)
    m.on_stage_end(0, stage_context(tmp_path, data))
    again = SRDL.create(factory, total_epochs=2)
    again.load_extra_state(m.extra_state(), str(tmp_path))
    assert again.stage == 1 and torch.equal(again.bank, m.bank.cpu())
    with pytest.raises(FileNotFoundError, match="stage1_logits.pt"):
        SRDL.create(factory, total_epochs=2).load_extra_state({"stage": 1}, str(tmp_path / "elsewhere"))


def test_ensemble_averages_probabilities_and_concatenates_normalised_features():
    torch.manual_seed(0)
    a, b = factory().eval(), factory().eval()
    x = TinySet().x[:4]
    logits, feats = EnsembleNet([a, b])(x)
    (la, fa), (lb, fb) = a(x), b(x)
    probs = (F.softmax(la, 1) + F.softmax(lb, 1)) / 2
    assert torch.allclose(logits.exp(), probs, atol=1e-6)
    assert feats.shape == (4, fa.shape[1] + fb.shape[1])
    assert torch.allclose(feats[:, : fa.shape[1]].norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(feats[:, fa.shape[1] :], F.normalize(fb, dim=1), atol=1e-6)


# ---------------------------------------------------------------------------- KD
@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(5)
    teacher = build_model("resnet20", NUM_CLASSES, in_channels=1)
    path = str(tmp_path / "teacher.pt")
    save_model_file(teacher, path)
    return path, teacher


def test_kd_teacher_is_frozen_in_eval_mode_and_not_saved(teacher_file):
    path, teacher = teacher_file
    cfg = load_config(None, ["method.name=kd", f"method.kd.teacher={path}", "method.kd.teacher_model=resnet20"])
    m = build_method(cfg.method, factory, total_epochs=2, num_classes=NUM_CLASSES)
    assert isinstance(m, KnowledgeDistillation)
    m.train()
    assert m.trainable.training and not m.teacher.training
    assert all(not p.requires_grad for p in m.teacher.parameters())
    bn_before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    data = TinySet()
    out = m(data.x[:6], data.y[:6], torch.arange(6))
    out["loss"].backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    assert all(p.grad is not None for p in m.trainable.parameters())
    for k, v in m.teacher.state_dict().items():  # running statistics untouched
        assert torch.equal(v, bn_before[k]), k
    # The checkpointed module is the student alone.
    assert set(m.trainable.state_dict()) == set(factory().state_dict())
    # Loss against a hand computation with the loaded teacher's logits.
    with torch.no_grad():
        t_logits = teacher.eval()(data.x[:6])[0]
    s_logits = out["logits"].detach()
    ce = F.cross_entropy(s_logits, data.y[:6]).item()
    assert out["loss"].item() == pytest.approx(ce + hand_kl(s_logits, t_logits, 3.0), rel=1e-5)


def test_kd_refuses_a_teacher_with_another_class_count_naming_both(tmp_path):
    path = str(tmp_path / "t10.pt")
    save_model_file(build_model("resnet8", 10, in_channels=1), path)
    with pytest.raises(
        CheckpointError, match=rf"classifies 10 classes .*\[B, 10\].* has {NUM_CLASSES} .*\[B, {NUM_CLASSES}\]"
    ):
        load_teacher(path, NUM_CLASSES)


def test_kd_refuses_a_teacher_of_another_architecture(teacher_file):
    path, _ = teacher_file
    with pytest.raises(CheckpointError, match="'resnet20' network but method.kd.teacher_model is 'resnet110'"):
        load_teacher(path, NUM_CLASSES, "resnet110")


def test_kd_teacher_missing_or_not_a_model_file(tmp_path):
    with pytest.raises(CheckpointError, match="model file not found: .*nothing.pt"):
        load_teacher(str(tmp_path / "nothing.pt"), NUM_CLASSES)
    with pytest.raises(CheckpointError, match="folder without final.pt"):
        load_teacher(str(tmp_path), NUM_CLASSES)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="is not a reid_srdl model file"):
        load_teacher(str(tmp_path / "other.pt"), NUM_CLASSES)
