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

from reid_srdl.inference.options import ExtractionOptions
from reid_srdl.search.errors import SearchError

DEFAULT_HEIGHT, DEFAULT_WIDTH = 256, 128
DEFAULT_TRANSFORM = "reid_test_transform"
FEATURE_SETTINGS = ("normalize", "flip", "precision", "height", "width", "transform")
# What an embedding keyword may name: an extraction option, or the transform.
OPTIONS = ("transform",) + ExtractionOptions.names()


def check_option_names(options: Dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise SearchError(f"unknown embedding option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")


def options_of(embedding: Dict[str, Any]) -> Tuple[ExtractionOptions, Optional[Callable]]:
    """``(options, transform)`` from embedding keywords (:data:`OPTIONS`), e.g. those of
    ``ReIDSearcher.load`` or ``from_images``."""
    check_option_names(embedding)
    kw = dict(embedding)
    transform = kw.pop("transform", None)
    return ExtractionOptions(**kw), transform


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
    network (then its training image size is the default ``height``/``width`` of ``options``,
    else 256 x 128; a TorchScript file loads only under a ``.ts`` name or with
    ``trust_torchscript=True``).  ``options``: an
    :class:`~reid_srdl.inference.options.ExtractionOptions`, or its fields as keywords.
    ``transform`` defaults to ``reid_test_transform(height, width)``.
    With the default transform, files are decoded and resized by threads of this process and
    normalised a batch at a time (:func:`~reid_srdl.inference.features.decoded_batches`: the
    same values); ``workers`` (DataLoader processes) applies to a custom ``transform``.
    """

    def __init__(
        self,
        model,
        options: Optional[ExtractionOptions] = None,
        transform: Optional[Callable] = None,
        trust_torchscript: bool = False,
        **keywords,
    ):
        from reid_srdl.search.fingerprint import model_fingerprint

        if options is None:
            options, given = options_of(keywords)
            transform = transform if given is None else given
        elif keywords:
            raise SearchError(f"give either options or keywords, not both; got options and {', '.join(keywords)}")
        self.model, meta = resolve_model(model, trust_torchscript=trust_torchscript)
        self.source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        self.options = options.replace(
            height=options.height if options.height is not None else int(meta.get("height") or DEFAULT_HEIGHT),
            width=options.width if options.width is not None else int(meta.get("width") or DEFAULT_WIDTH),
        )
        self.custom_transform = transform
        # Resolved once: "auto" picks per machine, and the gallery must record what was used.
        self.precision = self.options.resolved_precision()
        self.fingerprint = model_fingerprint(self.model)
        self._prepared = None  # the fast path's folded copy, made on first use
        if transform is None:
            from reid_srdl.data.transforms import reid_test_transform

            transform = reid_test_transform(self.options.height, self.options.width)
        self.transform = transform

    @property
    def settings(self) -> Dict[str, Any]:
        """The options that change the features (what a gallery records and compares)."""
        return self.options.as_record(transform_kind(self.custom_transform))

    def _inference_net(self):
        """The fast path's network (BN folded, channels-last), made once: a search server
        embeds every upload with it instead of folding and copying the model per request.
        None when nothing is folded (the model runs as it is)."""
        o = self.options
        if not (o.use_fold_bn or o.use_channels_last) or not hasattr(self.model, "modules"):
            return None
        if self._prepared is None:
            from reid_srdl.inference.features import evaluation_mode, inference_copy

            with evaluation_mode(self.model):  # folding reads eval-mode BatchNorm statistics
                self._prepared = inference_copy(self.model, o.use_fold_bn, o.use_channels_last)
        return self._prepared

    def _run_options(self) -> ExtractionOptions:
        """The options as run: the precision as resolved once for this embedder."""
        return self.options.replace(precision=self.precision)

    def embed_files(self, paths: Sequence[str], skip_unreadable: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """``(features (N, D), kept)``: features of the readable files and their positions in
        ``paths``.  An unreadable file is an error naming it, unless ``skip_unreadable`` (then
        it is reported on stderr and left out)."""
        from reid_srdl.inference.features import embed_image_files

        standard = self.custom_transform is None  # reid_test_transform: batched tensors, decoded by threads
        return embed_image_files(
            self.model,
            [os.fspath(p) for p in paths],
            None if standard else self.transform,
            self._run_options(),
            skip_unreadable,
            inference_net=self._inference_net(),
        )

    def embed_pil(self, images: List) -> np.ndarray:
        """Features ``(N, D)`` of decoded RGB PIL images (e.g. uploads), in one batch per
        ``batch_size``."""
        import torch

        from reid_srdl.inference.features import extract_features

        if not images:
            raise SearchError("no image given")
        size = self.options.batch_size
        batches = [
            (torch.stack([self.transform(im) for im in images[i : i + size]]),) for i in range(0, len(images), size)
        ]
        run = self._run_options().replace(progress=False)
        return extract_features(self.model, batches, run, inference_net=self._inference_net())
