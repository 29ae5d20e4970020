"""Load ImageNet weights from a local file into a re-id backbone (torchvision files into our
re-organised nets; torchreid / timm files into those libraries' own modules).

Nothing is downloaded: the file must already be on disk.  The whole file is checked against
the net before any tensor is copied, so a wrong file never leaves the net half-loaded.
The head (feature layer + ID classifier) keeps its fresh initialisation.
"""

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple

import torch
from torch import Tensor
from torchvision import models as tvm

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.torch_files import UnreadableFileError, load_torch_file
from reid_srdl.models.base import MODELS, Net


@dataclass(frozen=True)
class ImageNetLayout:
    """Where a torchvision ImageNet checkpoint's tensors go in our re-organised net."""

    # Published weights, for the "how to obtain the file" message (metadata only, no download).
    weights: tvm.WeightsEnum
    # (torchvision key prefix, our key prefix) for every backbone tensor.
    prefixes: Tuple[Tuple[str, str], ...]
    # Keys of the ImageNet classifier, deliberately not loaded (our head is new).
    skipped: Tuple[str, ...]


# How many offending keys an error message names.
_SHOWN = 5


class WeightsMismatchError(ReidSrdlError, ValueError):
    """A weights file does not fit the architecture it is loaded into."""


def _read_state_dict(path: str) -> Dict[str, Tensor]:
    try:
        # Safe loader: a file referring to Python objects is refused (UnsafeFileError, naming
        # the conversion tool); it is never unpickled.
        obj = load_torch_file(path, "ImageNet weights file")
    except UnreadableFileError as e:
        raise WeightsMismatchError(f"could not read {path} as a PyTorch state dict: {e.reason}") from None
    # Training scripts often save {'state_dict': ..., 'epoch': ...}.
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise WeightsMismatchError(
            f"{path} does not hold a state dict (a mapping of parameter names to tensors, "
            f"possibly under 'state_dict'); got {type(obj).__name__}"
        )
    return dict(obj)


def _canonical_key(key: str) -> str:
    """torchvision's current name for a key of an older or DataParallel-saved checkpoint."""
    if key.startswith("module."):
        key = key[len("module.") :]
    # The published DenseNet files predate torchvision's renaming of 'norm.1' to 'norm1'
    # (same for relu/conv, 1 and 2) inside dense layers.
    return re.sub(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.", r"\1\2.", key)


def _describe(items: List[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _SHOWN else "")


def _map_keys(state: Dict[str, Tensor], layout: ImageNetLayout):
    """Our key for every backbone tensor of the file; and the keys that fit nowhere."""
    mapped, unexpected = {}, []
    for key, value in state.items():
        key = _canonical_key(key)
        if key.startswith(layout.skipped):
            continue
        for theirs, ours in layout.prefixes:
            if key.startswith(theirs):
                mapped[ours + key[len(theirs) :]] = (key, value)
                break
        else:
            unexpected.append(key)
    return mapped, unexpected


def load_imagenet_weights(model: Net, path: str) -> None:
    """Copy a torchvision ImageNet state dict (file at `path`) into ``model.stem``/``stages``.

    Accepts the files torchvision publishes (e.g. resnet50-0676ba61.pth,
    densenet121-a639ec97.pth with its old 'norm.1' key names), a plain
    ``torchvision.models.X().state_dict()``, or either wrapped in ``{'state_dict': ...}``.
    """
    layout = MODELS.info(model.arch).get("imagenet")
    if layout is None:
        with_layout = [name for name in MODELS.list() if MODELS.info(name).get("imagenet") is not None]
        raise WeightsMismatchError(
            f"model '{model.arch}' has no ImageNet weights layout; ImageNet weights can be "
            f"loaded into: {', '.join(with_layout)}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ImageNet weights file for {model.arch} not found: {path}. Nothing is downloaded "
            f"here: fetch {layout.weights.url} (torchvision {type(layout.weights).__name__}."
            f"{layout.weights.name}) on a machine with internet access and copy it to that path, "
            f"or set model.weights='' to train from random initialisation."
        )
    mapped, unexpected = _map_keys(_read_state_dict(path), layout)

    target = {k: v for k, v in model.state_dict().items() if k.startswith(("stem.", "stages."))}
    # BN batch counters are absent from the older published files and unused in training.
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    unexpected += [theirs for ours, (theirs, _) in mapped.items() if ours not in target]
    wrong_shape = [
        f"{theirs} {tuple(value.shape)} vs {ours} {tuple(target[ours].shape)}"
        for ours, (theirs, value) in mapped.items()
        if ours in target and value.shape != target[ours].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"{len(missing)} backbone tensors missing from the file: {_describe(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} keys of the file fit no backbone tensor: {_describe(unexpected)}")
        if wrong_shape:
            problems.append(f"{len(wrong_shape)} shape mismatches (file vs model): {_describe(wrong_shape)}")
        raise WeightsMismatchError(
            f"{path} does not hold torchvision ImageNet weights for {model.arch} "
            f"(in_channels={model.in_channels}): " + "; ".join(problems)
        )
    model.load_state_dict({ours: value for ours, (_, value) in mapped.items()}, strict=False)


def read_weights_file(path: str, arch: str, how_to_get: str) -> Dict[str, Tensor]:
    """The state dict in a local weights file (``.pth``/``.pt``/``.bin`` through
    ``torch.load(weights_only=True)``, or ``.safetensors``), keys in their canonical names.

    A missing file is a one-line error telling where such a file comes from (``how_to_get``);
    nothing is ever downloaded.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ImageNet weights file for {arch} not found: {path}. Nothing is downloaded here: {how_to_get} "
            f"on a machine with internet access and copy it to that path, or set model.weights='' to train "
            f"from random initialisation."
        )
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover - safetensors comes with timm
            raise WeightsMismatchError(f"{path}: reading .safetensors files needs `pip install safetensors`") from None
        try:
            state = load_file(path)
        except Exception as e:  # any unreadable file ends here, with the path named
            raise WeightsMismatchError(f"could not read {path} as a safetensors file: {e}") from None
    else:
        state = _read_state_dict(path)
    return {_canonical_key(k): v for k, v in state.items()}


def load_backbone_state(
    module: torch.nn.Module, state: Mapping[str, Tensor], path: str, arch: str, skipped: Tuple[str, ...] = ()
) -> None:
    """Copy ``state`` into ``module`` by its own key names, all or nothing.

    Keys starting with one of ``skipped`` (the library's classifier / projection layers, which
    our head replaces) are ignored on both sides; every other tensor of the module must be in
    the file with its shape, and the file may hold nothing else.
    """
    target = {k: v for k, v in module.state_dict().items() if not k.startswith(skipped)}
    given = {k: v for k, v in state.items() if not k.startswith(skipped)}
    missing = [k for k in target if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in target]
    wrong_shape = [
        f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in given.items()
        if k in target and v.shape != target[k].shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"{len(missing)} backbone tensors missing from the file: {_describe(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} keys of the file fit no backbone tensor: {_describe(unexpected)}")
        if wrong_shape:
            problems.append(f"{len(wrong_shape)} shape mismatches (file vs model): {_describe(wrong_shape)}")
        raise WeightsMismatchError(f"{path} does not hold weights for {arch}: " + "; ".join(problems))
    module.load_state_dict(given, strict=False)
