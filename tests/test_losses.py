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


def test_soft_kl_is_zero_for_equal_logits_and_its_gradient_is_the_hand_formula():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 5, generator=g, requires_grad=True)
    assert soft_kl(s, s.detach().clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    t = s.detach() + torch.randn(4, 5, generator=g)  # a teacher's logits (detached by the callers)
    soft_kl(s, t, 3.0).backward()
    # d/ds [T^2/N sum KL(p_t || softmax(s/T))] = T (softmax(s/T) - p_t) / N
    T, N = 3.0, 4
    expected = T * (torch.softmax(s.detach() / T, 1) - torch.softmax(t / T, 1)) / N
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_accuracy():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(logits, torch.tensor([1, 1, 1])).item() == pytest.approx(2 / 3)
