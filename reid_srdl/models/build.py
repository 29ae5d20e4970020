"""``build_model``: a registered architecture, initialised, optionally with ImageNet weights."""
import inspect
from typing import List, Optional

from reid_srdl.models.base import MODELS, Net, init_weights
from reid_srdl.models.weights import load_imagenet_weights

# Arguments every builder receives from `build_model`; anything else is an architecture option.
_COMMON_ARGS = ("num_classes", "feature_dim", "in_channels")


def list_models() -> List[str]:
    """Names accepted by :func:`build_model`."""
    return MODELS.list()


def build_model(
    name: str,
    num_classes: int,
    *,
    feature_dim: Optional[int] = 512,
    weights: str = "",
    in_channels: int = 3,
    **options,
) -> Net:
    """Build a registered architecture, initialise it, and optionally load ImageNet weights.

    ``feature_dim`` is the size of the re-id feature layer (``None``: no feature layer, the
    pooled map is the embedding); the CIFAR nets never have a feature layer and ignore it.
    ``options`` are architecture-specific (e.g. ``last_stride`` for resnet50, ``dropout``
    for wrn28_10).  ``weights`` is a local torchvision ImageNet state-dict file for the
    backbone.  The returned net's ``spec`` rebuilds the same architecture; it leaves
    ``weights`` out because a checkpoint carries its own tensors.
    """
    builder = MODELS.get(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"model '{name}': num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"model '{name}': in_channels must be a positive int, got {in_channels!r}")
    signature = inspect.signature(builder)
    valid_options = [p for p in signature.parameters if p not in _COMMON_ARGS]
    unknown = sorted(set(options) - set(valid_options))
    if unknown:
        raise ValueError(
            f"model '{name}' has no option(s) {', '.join(unknown)}; "
            f"its options: {', '.join(valid_options) or 'none'}"
        )
    net = builder(
        num_classes=num_classes, feature_dim=feature_dim, in_channels=in_channels, **options
    )
    init_weights(net)
    # Record every option with its effective value (defaults included) so the spec still
    # rebuilds the same net if a default changes later.
    bound = signature.bind(
        num_classes=num_classes, feature_dim=feature_dim, in_channels=in_channels, **options
    )
    bound.apply_defaults()
    net.spec = {
        "name": name,
        "num_classes": num_classes,
        "feature_dim": net.head.feature_dim,
        "in_channels": in_channels,
        **{k: bound.arguments[k] for k in valid_options},
    }
    if weights:
        load_imagenet_weights(net, weights)
    return net
