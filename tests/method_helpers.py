"""Shared by the ONE, BYOT and FRSKD tests: the two nets, tiny batches, and the
cross-entropy / KL written out by hand (the independent side of every loss check)."""

import functools

import torch
from torch.utils.data import Dataset
from trainer_helpers import tiny_overrides

from reid_srdl.config import load_config
from reid_srdl.models import EmbeddingHead, build_model

NUM_CLASSES = 5

# A CIFAR-style net (3 stages, no feature layer) and a re-id net (4 stages, BN feature layer).
NETS = {
    "resnet8": (functools.partial(build_model, "resnet8", NUM_CLASSES, in_channels=1), (1, 28, 28)),
    "small_reid": (functools.partial(build_model, "small_reid", NUM_CLASSES, feature_dim=32), (3, 64, 32)),
}


def batch(name, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *NETS[name][1], generator=g)
    y = torch.arange(n) % NUM_CLASSES
    return x, y, torch.arange(n)


def spread_classifiers(module, std=0.3):
    """The init draws classifiers with std 0.001 (all logits ~0, every KL ~0): widen them so
    that the hand computations compare non-trivial numbers."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, EmbeddingHead):
                m.classifier.weight.normal_(0.0, std)
                if m.classifier.bias is not None:  # BNNeck's classifier has none
                    m.classifier.bias.normal_(0.0, std)


def hand_ce(logits, labels):
    z = logits.double()
    log_norm = torch.log(torch.exp(z).sum(dim=1))
    return (log_norm - z[torch.arange(len(labels)), labels]).mean().item()


def hand_kl(student, teacher, T):
    """T^2 * mean over the batch of sum_c p_t (log p_t - log p_s), softmaxes written out."""
    ps = torch.exp(student.double() / T)
    ps = ps / ps.sum(dim=1, keepdim=True)
    pt = torch.exp(teacher.double() / T)
    pt = pt / pt.sum(dim=1, keepdim=True)
    return T * T * (pt * (pt.log() - ps.log())).sum(dim=1).mean().item()


class OneSample(Dataset):
    """One random image: what the FLOP counter needs (it reads dataset[0])."""

    def __init__(self, shape):
        self.x = torch.randn(1, *shape)

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self.x[i], 0, i


def tiny_trainer_config(root, out, *method_overrides):
    """One epoch of two batches of small_reid on the tiny synthetic set, run folder out/run."""
    overrides = tiny_overrides(root, out, epochs=1, max_batches=2)
    # method overrides last, so that they may also replace the settings above
    return load_config(None, [*overrides, "eval.multi_query=false", *method_overrides])
