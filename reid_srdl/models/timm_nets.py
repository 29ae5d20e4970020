"""Any timm model as a re-id backbone: ``model.name=timm/<timm model name>`` (optional extra ``timm``).

The model is created with ``pretrained=False``; a weights file (``model.weights``, the file
timm publishes for that model, ``.safetensors`` or ``.pth``; ``model.pretrained=imagenet``
fetches it, see :func:`published_weights`) is read here and handed to timm as a state dict,
so timm's own loading (checkpoint filters, input-channel adaptation) applies and timm itself
downloads nothing.  The backbone keeps timm's initialisation; the head is ours.

Stages: where timm extracts features by running the model's top-level modules in order
(``features_only`` gives a ``FeatureListNet``: ResNets, ConvNeXts, RegNets, DenseNets, ...),
those modules are split at timm's feature levels of stride 4 and more (the stride-2 stem
output is part of the stem), which gives ONE, BYOT and FRSKD their stage-wise access.  Note
that ``features_only`` ends at the last feature level (e.g. without a classification-only
1x1 head convolution).  Any other model (timm uses hooks or its own feature class: ViTs,
EfficientNets, ...) is one body that returns timm's pooled pre-logits features as a 1x1 map:
plain and distillation-from-logits methods train it, ONE / BYOT / FRSKD stop with an error.
"""

import copy
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from reid_srdl.config import ConfigError
from reid_srdl.core.download import RemoteFile, remote_from_url
from reid_srdl.core.registry import UnknownNameError
from reid_srdl.models.base import FAMILY_WEIGHTS, MODEL_FAMILIES, EmbeddingHead, Net
from reid_srdl.models.weights import WeightsMismatchError, _describe, read_weights_file

PREFIX = "timm/"


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError("model.name=timm/... needs timm: pip install 'reid_srdl[timm]' (or timm)") from None
    return timm


class PooledBody(nn.Module):
    """A timm model without its classifier, returning its pooled features as a [B, C, 1, 1] map."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, :, None, None]


def _pooled_width(body: PooledBody, in_channels: int) -> int:
    """Width of the pooled features (after e.g. MobileNetV3's head convolution, so not always
    ``num_features``), read from shapes on the meta device at the model's own input size."""
    _c, h, w = body.model.pretrained_cfg.get("input_size", (3, 224, 224))
    probe = copy.deepcopy(body).to("meta").eval()
    with torch.no_grad():
        return int(probe(torch.empty(1, in_channels, h, w, device="meta")).shape[1])


def _split(features: nn.Module) -> Tuple[nn.Module, List[nn.Module], List[int]]:
    """Stem, stages and stage channels of a timm ``FeatureListNet`` (its modules, in order)."""
    info = features.feature_info
    levels = [i for i, r in enumerate(info.reduction()) if r >= 4]
    if len(levels) < 2:
        levels = list(range(len(info.reduction())))
    # FeatureListNet maps the module closing each level to the level's position.
    closing = {name: int(position) for name, position in features.return_layers.items()}
    modules = list(features.items())
    ends = [next(i for i, (name, _m) in enumerate(modules) if closing.get(name) == level) for level in levels]
    # The stem: everything before the module that closes the first stage level.
    stem = nn.Sequential(OrderedDict(modules[: ends[0]]))
    stages, start = [], ends[0]
    for end in ends:
        stages.append(nn.Sequential(OrderedDict(modules[start : end + 1])))
        start = end + 1
    channels = [int(info.channels()[level]) for level in levels]
    return stem, stages, channels


def _probe(timm, name: str, **kwargs) -> nn.Module:
    """A randomly initialised copy of the model for reading its structure: on the meta device
    (no memory, no arithmetic), or on the CPU for a model whose initialisation needs real
    tensors."""
    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, **kwargs)
    except Exception:  # whatever the meta device cannot run
        return timm.create_model(name, pretrained=False, **kwargs)


def _check_names(timm, name: str, state: Dict[str, torch.Tensor], path: str) -> None:
    """The file must name exactly the model's tensors (its classifier aside).  timm itself
    loads non-strictly once it drops the classifier, which would let a wrong file through."""
    plain = _probe(timm, name)
    classifier = plain.pretrained_cfg.get("classifier") or ()
    head = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    own = {k for k in plain.state_dict() if not k.startswith(head) and not k.endswith("num_batches_tracked")}
    given = {k for k in state if not k.startswith(head) and not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(own - given), sorted(given - own)
    if missing or unexpected:
        problems = [f"{len(missing)} tensors missing from the file: {_describe(missing)}"] if missing else []
        if unexpected:
            problems.append(f"{len(unexpected)} keys of the file fit no tensor: {_describe(unexpected)}")
        raise WeightsMismatchError(f"{path} does not hold timm weights for {PREFIX}{name}: " + "; ".join(problems))


def _weights_kwargs(timm, name: str, path: str) -> Dict[str, object]:
    """timm.create_model arguments that load the state dict of the local file `path`."""
    if not path:
        return {"pretrained": False}
    state = read_weights_file(path, PREFIX + name, "model.pretrained=imagenet (and model.weights='') fetches timm's")
    _check_names(timm, name, state, path)
    # source='' and a state dict: timm's highest-priority source, no hub or URL is consulted.
    return {"pretrained": True, "pretrained_cfg_overlay": {"source": "", "state_dict": state}}


def _create(timm, name: str, in_channels: int, weights: str, **kwargs) -> nn.Module:
    try:
        return timm.create_model(name, in_chans=in_channels, **_weights_kwargs(timm, name, weights), **kwargs)
    except RuntimeError as e:
        if not weights:
            raise
        first = str(e).strip().splitlines()[0]
        raise WeightsMismatchError(f"{weights} does not hold timm weights for {PREFIX}{name}: {first}") from None


def timm_net(name: str, num_classes: int, feature_dim: Optional[int], in_channels: int, weights: str = "") -> Net:
    """Build timm's ``name`` (random init, or ``weights``) as a :class:`Net`."""
    timm = _timm()
    if not timm.is_model(name):
        raise UnknownNameError(
            f"unknown timm model '{name}' (model.name={PREFIX}{name}); timm.list_models() names them"
        )
    from timm.models import FeatureListNet

    # Which feature extractor timm picks for this model.
    try:
        stagewise = isinstance(_probe(timm, name, features_only=True, in_chans=in_channels), FeatureListNet)
    except Exception:  # timm raises several kinds for models without features_only
        stagewise = False
    if stagewise:
        stem, stages, channels = _split(_create(timm, name, in_channels, weights, features_only=True))
    else:
        body = PooledBody(_create(timm, name, in_channels, weights, num_classes=0))
        stem, stages, channels = nn.Sequential(), [body], [_pooled_width(body, in_channels)]
    net = Net(PREFIX + name, stem, stages, channels, EmbeddingHead(channels[-1], num_classes, feature_dim), in_channels)
    net.foreign_backbone = True
    return net


def _family(name: str):
    def builder(num_classes: int, feature_dim: Optional[int], in_channels: int, weights: str = "") -> Net:
        return timm_net(name, num_classes, feature_dim, in_channels, weights)

    return builder


def published_weights(name: str) -> RemoteFile:
    """timm's ImageNet weights for ``name`` (``model.pretrained=imagenet``), from its
    ``pretrained_cfg``: the Hugging Face hub file timm itself loads first (safetensors, in
    the current key names; the hub declares its sha256), else the release URL (whose file
    name carries the sha256 prefix)."""
    timm = _timm()
    if not timm.is_model(name):
        raise UnknownNameError(f"unknown timm model '{name}' (model.name={PREFIX}{name})")
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
        filename = cfg.hf_hub_filename or "model.safetensors"
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{filename}"
        return RemoteFile(url, f"{cfg.hf_hub_id.replace('/', '--')}--{filename}")
    if cfg is not None and cfg.url:
        return remote_from_url(cfg.url)
    raise WeightsMismatchError(f"timm publishes no pretrained weights for {PREFIX}{name}")


MODEL_FAMILIES[PREFIX] = _family
FAMILY_WEIGHTS[PREFIX] = published_weights
