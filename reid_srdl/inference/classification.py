"""Top-k accuracy of a classifier."""

from typing import Dict, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.inference.features import batch_images, check_model_device, evaluation_mode


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise EvaluationInputError(f"logits: expected (N, classes), got shape {tuple(logits.shape)}")
    if labels.dim() != 1 or len(labels) != len(logits):
        raise EvaluationInputError(
            f"labels: expected ({len(logits)},) to match the logits, got shape {tuple(labels.shape)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise EvaluationInputError(
            f"labels must lie in 0..{logits.shape[1] - 1} (the number of logit columns); "
            f"got {int(labels.min())}..{int(labels.max())}"
        )


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> Dict[int, int]:
    """How many samples have their label among the ``k`` highest logits, for each ``k``.

    ``k`` larger than the number of classes is clamped to it (then every sample counts).
    """
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
    _check_logits_labels(logits, labels)
    if any(int(k) < 1 for k in ks):
        raise EvaluationInputError(f"ks must be positive; got {tuple(ks)}")
    kmax = min(max(int(k) for k in ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # (N, kmax), best first
    hit = top == labels.view(-1, 1)
    return {int(k): int(hit[:, : min(int(k), kmax)].any(dim=1).sum()) for k in ks}


def topk_accuracy(logits, labels, ks: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """``{"top1": ..., "top5": ...}``: fractions in [0, 1] of samples whose label is in the top k."""
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
    if len(labels) == 0:
        raise EvaluationInputError("topk_accuracy: no sample (empty labels)")
    correct = topk_correct(logits, labels, ks)
    return {f"top{k}": correct[k] / len(labels) for k in correct}


def evaluate_classifier(
    model: nn.Module, loader, device="cpu", ks: Sequence[int] = (1, 5), progress: bool = False
) -> Dict[str, float]:
    """Top-k accuracy over a loader of ``(images, labels, ...)`` batches.

    ``model(x)`` returns the logits, or a tuple whose first element is the logits.  The model
    runs in eval mode and gets its previous modes back afterwards.
    """
    device = torch.device(device)
    check_model_device(model, device)
    totals = {int(k): 0 for k in ks}
    seen = 0
    with evaluation_mode(model), torch.inference_mode():
        for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise EvaluationInputError("the loader must yield (images, labels, ...) tuples")
            images, labels = batch_images(batch).to(device), torch.as_tensor(batch[1]).to(device)
            out = model(images)
            logits = out[0] if isinstance(out, (tuple, list)) else out
            for k, n in topk_correct(logits, labels, ks).items():
                totals[k] += n
            seen += len(labels)
    if seen == 0:
        raise EvaluationInputError("the loader yielded no sample; nothing to evaluate")
    return {f"top{k}": totals[k] / seen for k in totals}
