"""``build_model``: a registered architecture, initialised, optionally with ImageNet weights."""

import inspect
from typing import List, Optional

from reid_srdl.models.base import MODEL_FAMILIES, MODELS, NECKS, EmbeddingHead, Net, init_weights
from reid_srdl.models.errors import ModelConfigError
from reid_srdl.models.weights import load_imagenet_weights, resolve_weights

# Arguments every builder receives from `build_model`; anything else is an architecture option.
# A builder that also takes `weights` loads the weights file itself (foreign backbones, whose
# files use their library's own key names).
_COMMON_ARGS = ("num_classes", "feature_dim", "in_channels", "weights")


def list_models() -> List[str]:
    """The registered names :func:`build_model` accepts; the model families of
    ``MODEL_FAMILIES`` (``timm/<any timm model>``) come on top."""
    return MODELS.list()


def _builder(name: str):
    if name not in MODELS:
        for prefix, family in MODEL_FAMILIES.items():
            if name.startswith(prefix):
                return family(name[len(prefix) :])
    return MODELS.get(name)  # an unknown name: the registry's error lists the valid ones


def build_model(
    name: str,
    num_classes: int,
    *,
    feature_dim: Optional[int] = 512,
    weights: str = "",
    pretrained: str = "",
    in_channels: int = 3,
    neck: str = "plain",
    **options,
) -> Net:
    """Build a registered architecture, initialise it, and optionally load ImageNet weights.

    ``feature_dim`` is the size of the re-id feature layer (``None`` or 0: no feature layer,
    the pooled map is the embedding); the CIFAR nets never have a feature layer and ignore
    it.  ``neck``: ``plain`` or ``bnneck`` (see :class:`EmbeddingHead`).  ``options`` are
    architecture-specific (e.g. ``last_stride`` for resnet50, ``dropout`` for wrn28_10).
    ``weights`` is an ImageNet weights file for the backbone (torchvision's, or the library's
    own for torchreid / timm backbones): a local path, or a URL fetched into torch's cache;
    ``pretrained="imagenet"`` fetches the file the architecture's library publishes instead
    (see :func:`reid_srdl.models.weights.resolve_weights`).  The returned net's ``spec``
    rebuilds the same architecture; it leaves ``weights`` and ``pretrained`` out because a
    checkpoint carries its own tensors.
    """
    if neck not in NECKS:
        raise ModelConfigError(f"model '{name}': neck must be one of {', '.join(NECKS)}, got {neck!r}")
    feature_dim = feature_dim or None
    builder = _builder(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ModelConfigError(f"model '{name}': num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ModelConfigError(f"model '{name}': in_channels must be a positive int, got {in_channels!r}")
    signature = inspect.signature(builder)
    valid_options = [p for p in signature.parameters if p not in _COMMON_ARGS]
    unknown = sorted(set(options) - set(valid_options))
    if unknown:
        raise ModelConfigError(
            f"model '{name}' has no option(s) {', '.join(unknown)}; its options: {', '.join(valid_options) or 'none'}"
        )
    loads_weights = "weights" in signature.parameters
    # Fetched (or found in the cache) before anything is built: a download that fails
    # stops here, in one line.
    weights = resolve_weights(name, weights, pretrained)
    common = dict(num_classes=num_classes, feature_dim=feature_dim, in_channels=in_channels)
    net = builder(**common, **options, **({"weights": weights} if loads_weights else {}))
    if neck != "plain":
        net.set_head(EmbeddingHead(net.head.in_channels, net.num_classes, net.head.feature_dim, neck=neck))
    # A foreign backbone keeps its library's initialisation (and the weights it was given).
    init_weights(net.head if net.foreign_backbone else net)
    # Record every option with its effective value (defaults included) so the spec still
    # rebuilds the same net if a default changes later.
    bound = signature.bind_partial(**common, **options)
    bound.apply_defaults()
    net.spec = {
        "name": name,
        "num_classes": num_classes,
        "feature_dim": net.head.feature_dim,
        "in_channels": in_channels,
        "neck": neck,
        **{k: bound.arguments[k] for k in valid_options},
    }
    if weights and not loads_weights:
        load_imagenet_weights(net, weights)
    return net
