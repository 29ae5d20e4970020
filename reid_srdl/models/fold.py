"""Fold inference-mode BatchNorm into the convolution or linear layer that feeds it.

In eval mode a BatchNorm is a fixed per-channel affine map, so ``bn(conv(x))`` equals one
convolution with rescaled weights and a bias.  Folding removes a full pass over every
activation map (one read and one write per BN), which is pure memory traffic on a CPU.

The pattern is torch.fx's (``torch.fx.experimental.optimization.fuse``): only a BN whose
input is a conv/linear output used nowhere else is folded, so the result is exact up to float
rounding, with torch's own formulas (``torch.nn.utils.fusion``).  A module that fx cannot
trace as a whole (e.g. :class:`Net`, whose forward checks the input shape) is folded child by
child.

Why not ``fuse`` itself: it deep-copies every convolution it folds (torch's
``fuse_conv_bn_eval``) after the caller's copy of the whole network, then allocates the
folded weights a third time -- about 1 s for ResNet-50 on a 2-core CPU, an eighth of
extracting 300 images.  Here the network is copied once (already in the layout the caller
wants, :func:`private_copy`) and each folded weight is rescaled in place in that copy.
"""

import copy
from collections import Counter
from typing import Optional

import torch
from torch import fx, nn

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_PATTERNS = (
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
    (nn.Linear, nn.BatchNorm1d),
)


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, _BATCHNORMS) for m in module.modules())


def private_copy(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """A deep copy of ``model`` whose 4-D parameters and buffers are channels-last when asked:
    every tensor is copied once, straight into its final layout (no second copy by
    ``.to(memory_format=...)``).  Tensors shared inside ``model`` stay shared in the copy."""
    memo = {}
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if id(tensor) in memo:
                continue
            fmt = torch.channels_last if channels_last and tensor.dim() == 4 else torch.preserve_format
            clone = tensor.detach().clone(memory_format=fmt)
            if isinstance(tensor, nn.Parameter):
                clone = nn.Parameter(clone, requires_grad=tensor.requires_grad)
            memo[id(tensor)] = clone
    return copy.deepcopy(model, memo)


def fold_batchnorm(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` with every foldable BatchNorm folded in (and, with
    ``channels_last``, its 4-D weights in that layout).

    The caller's model is never modified.  A model without BatchNorm is returned as it is
    (nothing to fold, no copy).  BNs that cannot be folded (one that normalises a pooled
    or concatenated map, as in DenseNet's pre-activation layers) stay, in eval mode.
    Only for inference: the folded copy has no running statistics to update.
    """
    if not has_batchnorm(model):
        return model
    folded = private_copy(model, channels_last).eval()
    shared = {k for k, n in Counter(id(p) for _, p in folded.named_parameters(remove_duplicate=False)).items() if n > 1}
    with torch.no_grad():
        return _fold_in_place(folded, shared)


def _fold_in_place(module: nn.Module, shared: set) -> nn.Module:
    if not has_batchnorm(module):
        return module
    try:
        return _fold_traced(module, shared)
    except Exception:  # fx raises several kinds on untraceable Python
        # Not traceable as a whole (data-dependent checks, ModuleList without forward...):
        # fold each child separately; the parent's own forward keeps calling them.
        for name, child in module.named_children():
            setattr(module, name, _fold_in_place(child, shared))
        return module


def _is_module(node, kind, modules) -> bool:
    return (
        isinstance(node, fx.Node)
        and node.op == "call_module"
        and isinstance(node.target, str)
        and type(modules.get(node.target)) is kind
    )


def _fold_traced(module: nn.Module, shared: set) -> fx.GraphModule:
    """``fuse``'s pattern search on the traced ``module``; the folding done in place."""
    traced = fx.symbolic_trace(module)
    modules = dict(traced.named_modules())
    graph = traced.graph
    for layer_kind, bn_kind in _PATTERNS:
        for node in list(graph.nodes):
            if not (node.args and _is_module(node, bn_kind, modules) and _is_module(node.args[0], layer_kind, modules)):
                continue
            source = node.args[0]
            if len(source.users) > 1:  # the conv/linear output is used elsewhere too
                continue
            layer, bn = modules[source.target], modules[node.target]
            if not bn.track_running_stats:
                continue
            _fold_into(layer, bn, shared)
            node.replace_all_uses_with(source)
            graph.erase_node(node)
    return fx.GraphModule(traced, graph)


def _scaled(weight: nn.Parameter, scale: torch.Tensor, shared: set) -> Optional[nn.Parameter]:
    """``weight * scale`` in place when that gives torch's value (same dtype, not shared);
    otherwise a new parameter (returned)."""
    if weight.dtype == scale.dtype and id(weight) not in shared:
        weight.mul_(scale)
        return None
    return nn.Parameter((weight * scale).to(dtype=weight.dtype), weight.requires_grad)


def _fold_into(layer: nn.Module, bn: nn.Module, shared: set) -> None:
    """``layer``'s weight and bias become those of ``bn(layer(x))``, with the formulas of
    torch.nn.utils.fusion.fuse_conv_bn_weights / fuse_linear_bn_weights (same rounding)."""
    mean, var, eps = bn.running_mean, bn.running_var, bn.eps
    gamma = bn.weight if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(mean)
    weight = layer.weight
    bias_dtype = layer.bias.dtype if layer.bias is not None else weight.dtype
    bias = layer.bias if layer.bias is not None else torch.zeros_like(mean)
    rsqrt = torch.rsqrt(var + eps)
    if isinstance(layer, nn.Linear):
        scale = gamma * rsqrt
        new_weight = _scaled(weight, scale.unsqueeze(-1).to(dtype=weight.dtype), shared)
        new_bias = ((bias - mean) * scale + beta).to(dtype=bias_dtype)
    else:
        scale = (gamma * rsqrt).reshape([-1, 1] + [1] * (weight.dim() - 2))
        new_weight = _scaled(weight, scale, shared)
        new_bias = ((bias - mean) * rsqrt * gamma + beta).to(dtype=bias_dtype)
    if new_weight is not None:
        layer.weight = new_weight
    layer.bias = nn.Parameter(new_bias, bias.requires_grad)
