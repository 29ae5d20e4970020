"""The embedding side of a gallery search: one network, one transform, one set of options.

An :class:`Embedder` turns image files (or decoded images) into features exactly the way its
gallery was built, and says how (:attr:`Embedder.settings`, :attr:`Embedder.fingerprint`),
so that a gallery file can refuse query features made another way.

Settings that change the features, recorded in a gallery and compared on load:
``normalize``, ``flip``, ``precision`` (as resolved: fp32, bf16 or fp16), ``height``,
``width`` and ``transform`` (``reid_test_transform`` or the class of a custom one).  Options
that only change speed (``batch_size``, ``workers``, ``device``, ``fast``'s BN folding and
channels-last layout, ``progress``) are not compared.
"""

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from reid_srdl.search.errors import SearchError

DEFAULT_HEIGHT, DEFAULT_WIDTH = 256, 128
DEFAULT_TRANSFORM = "reid_test_transform"
FEATURE_SETTINGS = ("normalize", "flip", "precision", "height", "width", "transform")
OPTIONS = (
    "transform",
    "batch_size",
    "device",
    "height",
    "width",
    "flip",
    "normalize",
    "workers",
    "progress",
    "fast",
    "precision",
)


def check_option_names(options: Dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise SearchError(f"unknown embedding option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")


def resolve_model(model, trust_torchscript: bool = False) -> Tuple[Any, Dict[str, Any]]:
    """``(network, meta)``: a network as given (meta empty), or the one saved at a path -- a run
    directory or its final.pt (safe loading, engine.checkpoint), or an exported embedding
    (.onnx, or TorchScript from tools/export.py: a program, loaded only under a ``.ts`` name or
    with ``trust_torchscript``).  ``meta`` may hold the trained image size."""
    if not isinstance(model, (str, os.PathLike)):
        return model, {}
    from reid_srdl.export import exported_format, load_exported
    from reid_srdl.models.model_file import load_model_file

    if exported_format(model) is not None:
        net = load_exported(model, trust_torchscript=trust_torchscript)
        return net, dict(net.meta)
    return load_model_file(os.fspath(model))


def transform_kind(transform: Optional[Callable]) -> str:
    if transform is None:
        return DEFAULT_TRANSFORM
    cls = type(transform)
    return f"custom:{cls.__module__}.{cls.__qualname__}"


class Embedder:
    """A network with its transform and extraction options (see the module docstring).

    ``model``: ``model(x)`` returns ``(logits, features)``, or the path of a trained / exported
    network (then its training image size is the default ``height``/``width``, else 256 x 128;
    a TorchScript file loads only under a ``.ts`` name or with ``trust_torchscript=True``).
    ``transform`` defaults to ``reid_test_transform(height, width)``; ``flip``, ``normalize``,
    ``fast`` and ``precision`` are those of :func:`reid_srdl.inference.features.extract_features`.
    With the default transform, files are decoded and resized by threads of this process and
    normalised a batch at a time (:func:`~reid_srdl.inference.features.decoded_batches`: the
    same values); ``workers`` (DataLoader processes) applies to a custom ``transform``.
    """

    def __init__(
        self,
        model,
        transform: Optional[Callable] = None,
        batch_size: int = 64,
        device="cpu",
        height: Optional[int] = None,
        width: Optional[int] = None,
        flip: bool = False,
        normalize: bool = False,
        workers: int = 0,
        progress: bool = False,
        fast: bool = False,
        precision: Optional[str] = None,
        trust_torchscript: bool = False,
    ):
        from reid_srdl.core import limits
        from reid_srdl.inference.features import resolve_precision
        from reid_srdl.search.fingerprint import model_fingerprint

        self.model, meta = resolve_model(model, trust_torchscript=trust_torchscript)
        self.source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        height = height if height is not None else int(meta.get("height") or DEFAULT_HEIGHT)
        width = width if width is not None else int(meta.get("width") or DEFAULT_WIDTH)
        for name, value in (("height", height), ("width", width), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise SearchError(f"{name} must be a positive integer; got {value!r}")
        for name, value in (("height", height), ("width", width)):
            # Every image is resized to this before the network runs (a gallery's recorded
            # settings come here too).
            if value > limits.MAX_INPUT_SIDE:
                raise limits.LimitExceededError(
                    f"{name} {value} is over the limit of {limits.MAX_INPUT_SIDE} pixels "
                    f"(reid_srdl.core.limits.MAX_INPUT_SIDE)"
                )
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
            raise SearchError(f"workers must be an integer >= 0; got {workers!r}")
        self.options: Dict[str, Any] = dict(
            transform=transform,
            batch_size=int(batch_size),
            device=device,
            height=int(height),
            width=int(width),
            flip=bool(flip),
            normalize=bool(normalize),
            workers=int(workers),
            progress=bool(progress),
            fast=bool(fast),
            precision=precision,
        )
        # Resolved once: "auto" picks per machine, and the gallery must record what was used.
        self.precision = resolve_precision(precision or ("auto" if fast else "fp32"), device)
        self.fingerprint = model_fingerprint(self.model)
        self._prepared = None  # the fast path's folded copy, made on first use
        if transform is None:
            from reid_srdl.data.transforms import reid_test_transform

            transform = reid_test_transform(int(height), int(width))
        self.transform = transform

    @property
    def settings(self) -> Dict[str, Any]:
        """The options that change the features (what a gallery records and compares)."""
        o = self.options
        return {
            "normalize": o["normalize"],
            "flip": o["flip"],
            "precision": self.precision,
            "height": o["height"],
            "width": o["width"],
            "transform": transform_kind(o["transform"]),
        }

    def _inference_net(self):
        """The fast path's network (BN folded, channels-last), made once: a search server
        embeds every upload with it instead of folding and copying the model per request.
        None when nothing is folded (the model runs as it is)."""
        if not self.options["fast"] or not hasattr(self.model, "modules"):
            return None
        if self._prepared is None:
            from reid_srdl.inference.features import evaluation_mode, inference_copy

            with evaluation_mode(self.model):  # folding reads eval-mode BatchNorm statistics
                self._prepared = inference_copy(self.model, fold_bn=True, channels_last=True)
        return self._prepared

    def _extract_options(self) -> Dict[str, Any]:
        o = self.options
        return dict(
            device=o["device"],
            flip=o["flip"],
            normalize=o["normalize"],
            progress=o["progress"],
            fast=o["fast"],
            precision=self.precision,
            inference_net=self._inference_net(),
        )

    def embed_files(self, paths: Sequence[str], skip_unreadable: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """``(features (N, D), kept)``: features of the readable files and their positions in
        ``paths``.  An unreadable file is an error naming it, unless ``skip_unreadable`` (then
        it is reported on stderr and left out)."""
        from reid_srdl.inference.features import embed_image_files

        o = self.options
        standard = o["transform"] is None  # reid_test_transform: batched tensors, decoded by threads
        return embed_image_files(
            self.model,
            [os.fspath(p) for p in paths],
            None if standard else self.transform,
            batch_size=o["batch_size"],
            workers=o["workers"],
            skip_unreadable=skip_unreadable,
            size=(o["height"], o["width"]) if standard else None,
            **self._extract_options(),
        )

    def embed_pil(self, images: List) -> np.ndarray:
        """Features ``(N, D)`` of decoded RGB PIL images (e.g. uploads), in one batch per
        ``batch_size``."""
        import torch

        from reid_srdl.inference.features import extract_features

        if not images:
            raise SearchError("no image given")
        size = self.options["batch_size"]
        batches = [
            (torch.stack([self.transform(im) for im in images[i : i + size]]),) for i in range(0, len(images), size)
        ]
        return extract_features(self.model, batches, **{**self._extract_options(), "progress": False})
