"""Soft KL with temperature against a hand computation."""

import math

import pytest
import torch

from reid_srdl.methods.losses import accuracy, soft_kl


def softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_soft_kl_matches_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    T = 3.0
    expected = 0.0
    for si, ti in zip(s.tolist(), t.tolist()):
        p = softmax([x / T for x in ti])
        q = softmax([x / T for x in si])
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected = T * T * expected / 2
    assert soft_kl(s, t, T).item() == pytest.approx(expected, rel=1e-6)


def test_soft_kl_is_zero_for_equal_logits_and_grad_flows_to_student_only():
    s = torch.randn(4, 5, requires_grad=True)
    t = s.detach().clone()
    assert soft_kl(s, t, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    soft_kl(s, t + torch.randn(4, 5), 3.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_accuracy():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(logits, torch.tensor([1, 1, 1])).item() == pytest.approx(2 / 3)
