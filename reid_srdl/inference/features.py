"""Embedding extraction: run a re-id network over a loader and keep its feature layer.

The network's ``forward`` returns ``(logits, features)``; the features are the embedding.

Two paths share one loop:

* the exact path (the default): eval mode, ``torch.inference_mode``, float32;
* the fast path (``fast=True``, or the options one by one): BatchNorm folded into the
  convolutions (:func:`reid_srdl.models.fold.fold_batchnorm`, on a copy), channels-last
  memory layout (what oneDNN's convolutions want), and bf16 autocast on CPUs with native
  bf16 (AVX512_BF16 / AMX), fp16/bf16 autocast on CUDA.  Features always come back float32.

Images are decoded where the loader decodes them: give it ``num_workers`` to decode in
worker processes (see :func:`image_files_loader`).
"""

import contextlib
import logging
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.core.distributed import sharded_map
from reid_srdl.core.precision import PRECISIONS, autocast_for, cpu_supports_bf16, resolve_precision  # noqa: F401
from reid_srdl.inference.options import ExtractionOptions

log = logging.getLogger(__name__)
DEFAULT_OPTIONS = ExtractionOptions()


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


# ----------------------------------------------------------------------------- precision
def inference_copy(model: nn.Module, fold_bn: bool, channels_last: bool) -> nn.Module:
    """The network the fast path runs: the caller's model when no option is on, otherwise a
    copy (BN folded and/or channels-last weights), made in one pass over the weights: the
    caller's model is never changed."""
    from reid_srdl.models.fold import fold_batchnorm, has_batchnorm, private_copy
    from reid_srdl.models.fuse_onednn import fuse_for_cpu_inference

    channels_last = channels_last and any(p.dim() == 4 for p in model.parameters())
    if fold_bn and has_batchnorm(model):
        run = fold_batchnorm(model, channels_last=channels_last)
        if channels_last:
            # On a CPU, each conv + ReLU (+ residual add) of the folded net as one oneDNN
            # primitive (models/fuse_onednn.py); elsewhere nothing is fused.
            fused = fuse_for_cpu_inference(run)
            log.info("fast path: BN folded, %d convolutions fused with their ReLU / residual addition", fused)
        return run
    if channels_last:
        return private_copy(model, channels_last=True)
    return model


# ----------------------------------------------------------------------------- extraction
def extract_features(
    model: nn.Module, loader, options: ExtractionOptions = DEFAULT_OPTIONS, *, inference_net: Optional[nn.Module] = None
) -> np.ndarray:
    """Features of every image the loader yields, in order: float32 ``(N, D)``.

    Args:
        model: ``model(x)`` returns ``(logits, features)``.
        loader: iterable of batches; a batch is a tuple/list whose first element is the
            image tensor ``(B, C, H, W)`` (the rest -- pids, camids, paths -- is ignored).
        options: device (the model must already be there), flip, normalize, progress and the
            fast path's fast, precision, channels_last, fold_bn
            (:class:`~reid_srdl.inference.options.ExtractionOptions`; batch size, workers and
            image size belong to the loader here).
        inference_net: the copy :func:`inference_copy` made of ``model`` with these options,
            kept by a caller that extracts many times (an :class:`Embedder`), so that the
            folding and copying are not redone at each call.

    The model is put in eval mode for the extraction; every submodule gets its previous
    training/eval mode back afterwards.
    """
    device = torch.device(options.device)
    check_model_device(model, device)
    precision = options.resolved_precision()
    channels_last, flip, normalize = options.use_channels_last, options.flip, options.normalize
    chunks = []
    with evaluation_mode(model), torch.inference_mode():
        # After evaluation_mode: folding needs eval-mode BatchNorm.
        run = inference_net if inference_net is not None else inference_copy(model, options.use_fold_bn, channels_last)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        # One autocast region for the whole loop: weight casts are cached across batches.
        with autocast_for(precision, device):
            for batch in tqdm(loader, desc="features", disable=not options.progress, leave=False):
                images = batch_images(batch).to(device, non_blocking=True)
                if images.dim() == 4:
                    images = images.contiguous(memory_format=layout)
                feats = embed(run, images).float()
                if flip:
                    feats = (feats + embed(run, torch.flip(images, dims=[3])).float()) / 2
                if normalize:
                    feats = torch.nn.functional.normalize(feats, p=2, dim=1)
                chunks.append(feats.cpu())
    if not chunks:
        raise EvaluationInputError("the loader yielded no batch; nothing to extract features from")
    return torch.cat(chunks).numpy().astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- image files
class UnreadableImageError(EvaluationInputError):
    """An image file is missing or cannot be decoded (the message names the path)."""


def read_image(path: str):
    """The RGB PIL image at ``path``; :class:`UnreadableImageError` naming it otherwise (also
    for an image over ``limits.MAX_IMAGE_PIXELS``, refused before its pixels are decoded)."""
    from reid_srdl.core.images import ImageRejected, decode_rgb

    try:
        return decode_rgb(path)
    except ImageRejected as e:
        raise UnreadableImageError(f"cannot read image {path}: {e.reason}") from None
    except OSError as e:
        raise UnreadableImageError(f"cannot read image {path}: {e.strerror or e}") from None


class ImageFiles(Dataset):
    """Image files as ``(transformed image, index)``, decoded in whichever process asks
    (DataLoader workers).  An unreadable file gives its error message instead of an image:
    raising inside a worker would reach the user wrapped in the worker's stack trace, so the
    main process decides (see :func:`embed_image_files`)."""

    def __init__(self, paths: Sequence[str], transform):
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = read_image(self.paths[i])
        except UnreadableImageError as e:
            return str(e), i
        return self.transform(image), i


def collate_readable(items):
    """``(images or None, indices, error messages)``: the readable items collated, the
    unreadable ones reported."""
    good = [item for item in items if not isinstance(item[0], str)]
    errors = [item[0] for item in items if isinstance(item[0], str)]
    images, indices = default_collate(good) if good else (None, torch.zeros(0, dtype=torch.long))
    return images, indices, errors


def image_files_loader(paths: Sequence[str], transform, batch_size: int = 64, workers: int = 0) -> DataLoader:
    """A loader of ``(images, indices, errors)`` over image files, decoded in ``workers``
    processes."""
    return DataLoader(
        ImageFiles(paths, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_readable,
    )


class _ResizedPixels:
    """Decode + resize of one file as ``reid_test_transform`` does it (its PIL ``Resize``),
    kept as uint8 HWC pixels; an unreadable file gives its error message instead."""

    def __init__(self, height: int, width: int):
        import torchvision.transforms as T

        self.resize = T.Resize((height, width))

    def __call__(self, path: str):
        try:
            return np.asarray(self.resize(read_image(path)), dtype=np.uint8)
        except UnreadableImageError as e:
            return str(e)


def normalized_batch(pixels: np.ndarray) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> the ``(B, 3, H, W)`` float32 batch ``reid_test_transform``
    plus ``default_collate`` would give (``to_tensor``'s ``/255``, ImageNet normalisation:
    the same float operations, element by element), in channels-last memory -- the layout the
    fast path's convolutions want, without a copy."""
    from reid_srdl.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32).view(1, -1, 1, 1)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
    return images.to(dtype=torch.float32).div_(255).sub_(mean).div_(std)


def decoded_batches(
    paths: Sequence[str], height: int, width: int, batch_size: int = 64, threads: Optional[int] = None
) -> Iterator[Tuple[Optional[torch.Tensor], torch.Tensor, List[str]]]:
    """``(images or None, indices, error messages)`` per batch of image files, like
    :func:`image_files_loader` with ``reid_test_transform(height, width)``, the same values.

    The files are decoded and resized by ``threads`` threads of this process (default: the
    usable cores; PIL releases the GIL while it works), the next batch while the caller runs
    the network on this one; each batch is normalised as one tensor (:func:`normalized_batch`).
    No worker processes: no start-up, and no batch copied through shared memory.
    """
    from concurrent.futures import ThreadPoolExecutor

    from reid_srdl.data.decoded import usable_cores

    paths = [str(p) for p in paths]
    decode = _ResizedPixels(height, width)
    starts = list(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(threads or usable_cores()) as pool:

        def submit(start):
            return [pool.submit(decode, p) for p in paths[start : start + batch_size]]

        pending = submit(starts[0]) if starts else []
        for n, start in enumerate(starts):
            current = pending
            pending = submit(starts[n + 1]) if n + 1 < len(starts) else []
            results = [f.result() for f in current]
            good = [i for i, r in enumerate(results) if not isinstance(r, str)]
            errors = [r for r in results if isinstance(r, str)]
            images = normalized_batch(np.stack([results[i] for i in good])) if good else None
            yield images, torch.tensor([start + i for i in good], dtype=torch.long), errors


def embed_image_files(
    model: nn.Module,
    paths: Sequence[str],
    transform,
    options: ExtractionOptions = DEFAULT_OPTIONS,
    skip_unreadable: bool = False,
    *,
    inference_net: Optional[nn.Module] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """``(features (N, D), kept)``: the features of the readable files and their indices in
    ``paths``.  An unreadable file is an :class:`UnreadableImageError` naming it, unless
    ``skip_unreadable``: then it is reported on stderr and left out.  ``options``: those of
    :func:`extract_features`, with ``batch_size`` and ``workers`` for the loader.

    ``transform=None``: the standard ``reid_test_transform`` at ``options.height`` x
    ``options.width``, run as :func:`decoded_batches` (threads; ``workers`` unused) -- the
    same features as passing the transform itself, which decodes in ``workers`` processes."""
    paths = [str(p) for p in paths]
    if not paths:
        raise EvaluationInputError("no image paths given")
    if transform is None:
        if options.height is None or options.width is None:
            raise EvaluationInputError(
                "embed_image_files: give a transform, or options with height and width for the standard one"
            )
        loader = decoded_batches(paths, options.height, options.width, options.batch_size)
    else:
        loader = image_files_loader(paths, transform, options.batch_size, options.workers)
    kept: List[torch.Tensor] = []
    finished = []  # set once every batch was read: "no batch" then means "nothing readable"

    def readable_batches():
        for images, indices, errors in loader:
            for message in errors:
                if not skip_unreadable:
                    raise UnreadableImageError(message + " (pass skip_unreadable=True to leave such files out)")
                log.warning("skipped: %s", message)
            if images is not None:
                kept.append(indices)
                yield images, indices
        finished.append(True)

    try:
        feats = extract_features(model, readable_batches(), options, inference_net=inference_net)
    except EvaluationInputError:
        if kept or not finished:  # a bad option or a named file: the error says it already
            raise
        raise UnreadableImageError(f"none of the {len(paths)} images could be read (first: {paths[0]})") from None
    return feats, torch.cat(kept).numpy()


def sharded_feature_extractor() -> Callable:
    """A drop-in for :func:`extract_features` that, under torchrun, splits the images across
    ranks and returns every feature, in loader order, on every rank."""

    def extract(model, loader, options: ExtractionOptions = DEFAULT_OPTIONS):
        def run(part):
            return torch.from_numpy(extract_features(model, part, options))

        return sharded_map(run, loader).numpy()

    return extract
