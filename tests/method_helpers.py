"""The independent side of the method tests' loss checks: cross-entropy and KL written out by
hand, and classifiers spread so that the compared numbers are not all ~0."""

import torch

from reid_srdl.models import EmbeddingHead


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
