"""How features are extracted: the one set of extraction options every caller shares.

:func:`~reid_srdl.inference.features.extract_features`, :func:`~reid_srdl.inference.features.embed_image_files`,
the search layer's ``Embedder`` and the tools take one :class:`ExtractionOptions` instead of
repeating a dozen keywords; its fields are checked here, once, when it is made.

Options that change the features (``normalize``, ``flip``, ``precision`` as resolved,
``height``, ``width``) are what a gallery records (:meth:`ExtractionOptions.as_record`); the
others (``batch_size``, ``workers``, ``device``, ``progress``, ``fast``'s BN folding and
channels-last layout) only change speed.
"""

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import torch

from reid_srdl.core import limits
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.precision import PRECISIONS, PrecisionError, resolve_precision


class ExtractionOptionsError(ReidSrdlError, ValueError):
    """An extraction option of the wrong type or out of range (the message names it)."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class ExtractionOptions:
    """Extraction options, checked when made (:class:`ExtractionOptionsError`,
    :class:`~reid_srdl.core.precision.PrecisionError`, or
    :class:`~reid_srdl.core.limits.LimitExceededError` for an input side over the limit).

    device: where the images go (the model must already be there).
    flip: average each image's features with those of its mirror image.
    normalize: L2-normalise each final feature.
    progress: show a tqdm progress bar.
    fast: the defaults of ``precision``, ``channels_last``, ``fold_bn`` become "auto", True, True.
    precision: "fp32" (default), "bf16", "fp16" (CUDA only) or "auto" (bf16 where native).
    channels_last: run a channels-last copy of the network on channels-last images.
    fold_bn: fold BatchNorm into the preceding conv/linear layers (on a copy).
    batch_size: images per forward pass when the extractor makes the batches (image files).
    workers: DataLoader processes decoding image files through a custom transform.
    height, width: the input size of the standard transform (None: the model's own).
    """

    device: Union[str, torch.device] = "cpu"
    flip: bool = False
    normalize: bool = False
    progress: bool = False
    fast: bool = False
    precision: Optional[str] = None
    channels_last: Optional[bool] = None
    fold_bn: Optional[bool] = None
    batch_size: int = 64
    workers: int = 0
    height: Optional[int] = None
    width: Optional[int] = None

    def __post_init__(self):
        for name in ("flip", "normalize", "progress", "fast"):
            self._check(name, isinstance(getattr(self, name), bool), "True or False")
        for name in ("channels_last", "fold_bn"):
            self._check(name, getattr(self, name) in (None, True, False), "True, False or None")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        self._check("batch_size", _is_int(self.batch_size) and self.batch_size >= 1, "a positive integer")
        self._check("workers", _is_int(self.workers) and self.workers >= 0, "an integer >= 0")
        for name in ("height", "width"):
            value = getattr(self, name)
            self._check(name, value is None or _is_int(value) and value >= 1, "a positive integer")
            if value is not None and value > limits.MAX_INPUT_SIDE:
                # Every image is resized to this before the network runs (a gallery's recorded
                # settings come here too).
                raise limits.LimitExceededError(
                    f"{name} {value} is over the limit of {limits.MAX_INPUT_SIDE} pixels "
                    f"(reid_srdl.core.limits.MAX_INPUT_SIDE)"
                )
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ExtractionOptionsError(
                f"device must be a torch device such as 'cpu' or 'cuda:0'; got {self.device!r}"
            ) from None
        # Plain ints: numpy integers would not survive a JSON record.
        for name in ("batch_size", "workers", "height", "width"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))

    def _check(self, name: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ExtractionOptionsError(f"extraction option {name} must be {expected}; got {getattr(self, name)!r}")

    @classmethod
    def names(cls):
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes) -> "ExtractionOptions":
        """A copy with ``changes`` (checked like a new one)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ resolved values
    def resolved_precision(self) -> str:
        """ "fp32", "bf16" or "fp16": what the forward passes run at on this device."""
        return resolve_precision(self.precision or ("auto" if self.fast else "fp32"), self.device)

    @property
    def use_channels_last(self) -> bool:
        return self.fast if self.channels_last is None else self.channels_last

    @property
    def use_fold_bn(self) -> bool:
        return self.fast if self.fold_bn is None else self.fold_bn

    def as_record(self, transform: str) -> Dict[str, Any]:
        """The settings that change the features, as a gallery records and compares them
        (``transform``: the name of the transform the images went through)."""
        return {
            "normalize": self.normalize,
            "flip": self.flip,
            "precision": self.resolved_precision(),
            "height": self.height,
            "width": self.width,
            "transform": transform,
        }
