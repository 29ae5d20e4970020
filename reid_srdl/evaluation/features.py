"""Embedding extraction: run a re-id network over a loader and keep its feature layer.

The network's ``forward`` returns ``(logits, features)``; the features are the embedding.
This is the simple, always-correct path (eval mode, ``torch.inference_mode``, float32).
"""
import contextlib
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from reid_srdl.evaluation.metrics import EvaluationInputError


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own previous mode.

    ``model.train(previous)`` would not do: it would also switch submodules that were
    deliberately kept in eval mode (e.g. a frozen teacher) into training mode.
    """
    previous = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in previous.items():
            module.training = training


def check_model_device(model: nn.Module, device: torch.device) -> None:
    """A clear error instead of a device mismatch deep inside the first layer."""
    param = next(model.parameters(), None)
    if param is not None and param.device.type != device.type:
        raise EvaluationInputError(
            f"the model is on {param.device} but features were asked on {device}; "
            f"move it first (model.to({str(device)!r}))"
        )


def batch_images(batch) -> torch.Tensor:
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(images, torch.Tensor):
        raise EvaluationInputError(
            f"the loader must yield tuples whose first element is an image tensor; got {type(images).__name__}"
        )
    return images


def embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The feature part of ``model(images)``, which must return ``(logits, features)``."""
    out = model(images)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise EvaluationInputError(
            f"model(x) must return (logits, features); {type(model).__name__} returned "
            f"{type(out).__name__}{'' if not isinstance(out, (tuple, list)) else f' of length {len(out)}'}"
        )
    feats = out[1]
    if feats.dim() != 2:
        feats = feats.flatten(1)
    return feats


def extract_features(
    model: nn.Module,
    loader,
    device="cpu",
    flip: bool = False,
    normalize: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Features of every image the loader yields, in order: float32 ``(N, D)``.

    Args:
        model: ``model(x)`` returns ``(logits, features)``.
        loader: iterable of batches; a batch is a tuple/list whose first element is the
            image tensor ``(B, C, H, W)`` (the rest -- pids, camids, paths -- is ignored).
        device: where the images are sent; the model must already be there.
        flip: average each image's features with those of its horizontal mirror image.
        normalize: L2-normalise each final feature.
        progress: show a tqdm progress bar.

    The model is put in eval mode for the extraction; every submodule gets its previous
    training/eval mode back afterwards.
    """
    device = torch.device(device)
    check_model_device(model, device)
    chunks = []
    with evaluation_mode(model), torch.inference_mode():
        for batch in tqdm(loader, desc="features", disable=not progress, leave=False):
            images = batch_images(batch).to(device, non_blocking=True)
            feats = embed(model, images).float()
            if flip:
                feats = (feats + embed(model, torch.flip(images, dims=[3])).float()) / 2
            if normalize:
                feats = torch.nn.functional.normalize(feats, p=2, dim=1)
            chunks.append(feats.cpu())
    if not chunks:
        raise EvaluationInputError("the loader yielded no batch; nothing to extract features from")
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)
