"""Load ImageNet weights into a re-id backbone (torchvision files into our re-organised nets;
torchreid / timm files into those libraries' own modules), from a local file, a URL, or the
file the architecture's library publishes (``pretrained="imagenet"``).

URLs and published files are fetched into torch's download cache by
:mod:`reid_srdl.core.download` (checksum verified, nothing left behind on failure).  The
whole file is checked against the net before any tensor is copied, so a wrong file never
leaves the net half-loaded.  The head (feature layer + ID classifier) keeps its fresh
initialisation.
"""

import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Tuple

import torch
from torch import Tensor
from torchvision import models as tvm

from reid_srdl.core.download import DownloadError, RemoteFile, fetch, is_url, remote_from_url
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.torch_files import UnreadableFileError, load_torch_file
from reid_srdl.models.base import FAMILY_WEIGHTS, MODEL_FAMILIES, MODELS, Net

#: ``model.pretrained`` values: "" (none) or the published ImageNet weights.
PRETRAINED = ("", "imagenet")


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


def _first_conv_key(model: Net) -> str:
    """State-dict key of the convolution that reads the image (the stem's first)."""
    return next(f"stem.{name}.weight" for name, m in model.stem.named_modules() if isinstance(m, torch.nn.Conv2d))


def _grey_first_conv(model: Net, mapped, target) -> None:
    """For a net on grey images (``in_channels=1``), the RGB filters of the file's first
    convolution summed over their colour channels, in place in ``mapped``.

    A grey image g fed to the RGB net as (g, g, g) gives sum_c W[:, c] * g: the summed filter
    on g, exactly (zero padding included).  So a grey net starts from the features the RGB
    net computes on the grey image (timm's ``adapt_input_conv`` does the same for one channel).
    Any other channel count is left to the shape check, which names the mismatch.
    """
    if model.in_channels != 1:
        return
    key = _first_conv_key(model)
    if key not in mapped or key not in target:
        return
    theirs, value = mapped[key]
    want = target[key].shape
    if (
        value.dim() == 4
        and value.shape[1] == 3
        and want[1] == 1
        and value.shape[:1] + value.shape[2:] == want[:1] + want[2:]
    ):
        mapped[key] = (theirs, value.sum(dim=1, keepdim=True))


def load_imagenet_weights(model: Net, path: str) -> None:
    """Copy a torchvision ImageNet state dict (file at `path`) into ``model.stem``/``stages``.

    Accepts the files torchvision publishes (e.g. resnet50-0676ba61.pth,
    densenet121-a639ec97.pth with its old 'norm.1' key names), a plain
    ``torchvision.models.X().state_dict()``, or either wrapped in ``{'state_dict': ...}``.
    A net built for grey images (``in_channels=1``) gets the first convolution's RGB filters
    summed over colour (see :func:`_grey_first_conv`).
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
            f"ImageNet weights file for {model.arch} not found: {path}. model.pretrained=imagenet (and "
            f"model.weights='') fetches torchvision's {type(layout.weights).__name__}.{layout.weights.name} "
            f"({layout.weights.url}) into torch's cache; model.weights='' alone trains from random initialisation."
        )
    mapped, unexpected = _map_keys(_read_state_dict(path), layout)

    target = {k: v for k, v in model.state_dict().items() if k.startswith(("stem.", "stages."))}
    _grey_first_conv(model, mapped, target)
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

    A missing file is a one-line error telling where such a file comes from (``how_to_get``).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ImageNet weights file for {arch} not found: {path}. {how_to_get}; model.weights='' trains from "
            f"random initialisation."
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


# ------------------------------------------------------------------ fetched weights
def published_weights(name: str) -> RemoteFile:
    """The ImageNet weights the library of architecture ``name`` publishes: torchvision's
    (``ImageNetLayout.weights``), torchreid's (registered as ``published``) or timm's
    (``FAMILY_WEIGHTS``).  An architecture without any is a one-line error listing those with."""
    if name not in MODELS:
        for prefix, published in FAMILY_WEIGHTS.items():
            if name.startswith(prefix):
                return published(name[len(prefix) :])
        MODELS.get(name)  # an unknown name: the registry's error lists the valid ones
    info = MODELS.info(name)
    if info.get("imagenet") is not None:
        return remote_from_url(info["imagenet"].weights.url)
    if info.get("published") is not None:
        return info["published"]()  # read from the library when asked (it may be slow to import)
    with_weights = [n for n in MODELS.list() if MODELS.info(n).get("imagenet") or MODELS.info(n).get("published")]
    families = ", ".join(f"{p}<name>" for p in MODEL_FAMILIES if p in FAMILY_WEIGHTS)
    raise WeightsMismatchError(
        f"model '{name}' has no published ImageNet weights (model.pretrained=imagenet); models with them: "
        f"{', '.join(with_weights)}" + (f", and {families}" if families else "")
    )


# First bytes of the files a weights loader reads: torch.save's zip archive, a legacy
# torch.save pickle (protocol 2+), a safetensors file (8-byte header length, then JSON).
_ZIP_MAGIC, _PICKLE_MAGIC = b"PK\x03\x04", b"\x80"


def _looks_like_weights(url: str) -> Callable[[str], None]:
    def check(path: str) -> None:
        with open(path, "rb") as f:
            head = f.read(16)
        if head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)) or (len(head) > 8 and head[8:9] == b"{"):
            return
        seen = "a web page" if head.lstrip()[:1] == b"<" else "not a PyTorch or safetensors file"
        raise DownloadError(
            f"{url} did not give a weights file ({seen}); nothing was kept in the cache. Some hosts (Google Drive) "
            f"answer large files with a confirmation page: download it in a browser and place it by hand at the "
            f"path this error names when the download fails"
        )

    return check


def resolve_weights(name: str, weights: str = "", pretrained: str = "", progress: bool = True) -> str:
    """The local file for ``model.weights`` / ``model.pretrained`` ("" for none): a path as
    given, or a URL / the published ImageNet weights fetched into torch's cache."""
    if pretrained not in PRETRAINED:
        raise WeightsMismatchError(
            f"model.pretrained={pretrained!r} is not one of: '' (none), imagenet (the published ImageNet weights)"
        )
    if pretrained and weights:
        raise WeightsMismatchError(
            f"model.pretrained={pretrained} and model.weights={weights} both choose the weights: give one of them"
        )
    if pretrained:
        remote = published_weights(name)
    elif weights and is_url(weights):
        remote = remote_from_url(weights)
    else:
        return weights
    return fetch(remote, progress=progress, check=_looks_like_weights(remote.url))
