"""Pure loss functions shared by the methods and the strong-baseline recipe."""

from typing import Optional

import torch
import torch.nn.functional as F


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch.

    The T^2 factor keeps the gradient magnitude of the soft term comparable to the hard
    cross-entropy when T changes (Hinton et al., 2015).  Teacher logits are used as given:
    detach them at the call site when no gradient must flow into the teacher.
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of the batch whose arg-max is the label (a detached scalar)."""
    with torch.no_grad():
        return (logits.argmax(dim=1) == labels).float().mean()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against the targets ``(1 - eps) * one_hot + eps / C`` (Szegedy et al. 2016;
    BoT's CrossEntropyLabelSmooth), averaged over the batch; ``eps = 0`` is the plain CE."""
    if label_smoothing == 0:
        return F.cross_entropy(logits, labels)
    return F.cross_entropy(logits, labels, label_smoothing=float(label_smoothing))


def pairwise_distances(features: torch.Tensor) -> torch.Tensor:
    """[B, D] -> [B, B] Euclidean distances, as BoT's ``euclidean_dist``: the squares are
    expanded (one matrix product) and clamped at 1e-12 before the square root, so that a
    zero distance has a finite gradient."""
    squares = features.pow(2).sum(dim=1, keepdim=True)
    d2 = squares + squares.t() - 2.0 * features @ features.t()
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: Optional[float] = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans, Beyer & Leibe 2017), BoT's ``TripletLoss``.

    For every anchor: its farthest positive and its nearest negative in the batch;
    ``mean(relu(d_ap - d_an + margin))``, or with ``margin=None`` the soft margin
    ``mean(log(1 + exp(d_ap - d_an)))``.  Distances are computed in float32 (outside autocast).
    Anchors without another image of their identity, or without any other identity, in the
    batch are left out of the mean (BoT assumes P x K batches, where there are none); a batch
    with no valid anchor gives 0.
    """
    with torch.autocast(features.device.type, enabled=False):
        dist = pairwise_distances(features.float())
        same = labels.view(-1, 1) == labels.view(1, -1)
        positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        negative = ~same
        valid = positive.any(dim=1) & negative.any(dim=1)
        if not bool(valid.any()):
            return dist.sum() * 0.0  # keeps the graph: every caller can backpropagate through it
        hardest_positive = dist.masked_fill(~positive, float("-inf")).amax(dim=1)[valid]
        hardest_negative = dist.masked_fill(~negative, float("inf")).amin(dim=1)[valid]
        gap = hardest_positive - hardest_negative
        if margin is None:
            return F.softplus(gap).mean()
        return F.relu(gap + float(margin)).mean()
