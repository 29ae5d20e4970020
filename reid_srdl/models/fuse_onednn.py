"""Convolutions fused with the ReLU (and the residual addition) that follow them, for CPU
inference: one oneDNN primitive instead of a convolution and one or two passes over its output.

After BatchNorm folding (:mod:`reid_srdl.models.fold`) a ResNet block is ``relu(conv(x))``
twice and ``relu(conv(x) + identity)`` once; in eager PyTorch the ReLU and the addition are
each a pass over a full activation map.  oneDNN applies them as post-ops of the convolution,
on its accumulator: no extra pass, and in bf16 one rounding instead of three.  Measured on a
2-core AMD EPYC (2026-12-06, one thread, ResNet-50 256x128 bf16, batch 8): 7-10% less CPU
time per batch.  The fused operators are those torch.compile's CPU backend (inductor) emits
for the same pattern, ``torch.ops.mkldnn._convolution_pointwise`` (``.binary`` for the
addition), called eagerly here: no compilation (inductor took 25 s for ResNet-50 on that
machine, three times the extraction of 300 images).  They are private torch operators, so
:func:`fusion_available` checks that this build has them, :func:`fusion_runs_in` that this
CPU runs them in a dtype (oneDNN's bf16 convolution needs AVX-512 or AVX-NE-CONVERT: an AVX2
CPU refuses it), and anything unusual (such a dtype, another device, an addition that
broadcasts) runs the plain modules instead.

Inference only (no autograd through the fused operators), on the traced parts of a folded
network (the ``fx.GraphModule`` s :func:`reid_srdl.models.fold.fold_batchnorm` leaves).
"""

import functools
import logging
import operator
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

log = logging.getLogger(__name__)


def fusion_available() -> bool:
    """True when this torch build has oneDNN's fused convolution operators."""
    try:
        ops = torch.ops.mkldnn
        return bool(torch.backends.mkldnn.is_available()) and all(
            hasattr(ops._convolution_pointwise, overload) for overload in ("default", "binary")
        )
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=None)
def fusion_runs_in(dtype: torch.dtype) -> bool:
    """True when this CPU runs the fused convolution in ``dtype``: tried once per process on a
    1x1 convolution of a 1x8x2x2 input (oneDNN raises on a CPU without the instructions)."""
    if not fusion_available():
        return False
    x = torch.ones(1, 8, 2, 2, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.ones(8, 8, 1, 1, dtype=dtype).contiguous(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            y = torch.ops.mkldnn._convolution_pointwise(x, w, None, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
    except RuntimeError as e:
        log.info("fused convolutions: not in %s on this CPU (%s); the plain modules run", dtype, e)
        return False
    return bool((y == 8).all())


class FusedConv2d(nn.Module):
    """``relu(conv(x))`` or, given ``other``, ``relu(conv(x) + other)`` as one oneDNN
    primitive, in the autocast dtype when a CPU autocast region is on (as ``conv`` alone
    would run), else in the input's dtype."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv  # the weights stay visible (state_dict, .to) under their old name
        self._cast: Dict[torch.dtype, Tuple[torch.Tensor, Optional[torch.Tensor]]] = {}

    def _weights(self, dtype: torch.dtype):
        """The weight (channels-last) and bias in ``dtype``, cast once."""
        if dtype not in self._cast:
            with torch.no_grad():
                w = self.conv.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
                b = None if self.conv.bias is None else self.conv.bias.detach().to(dtype)
            self._cast[dtype] = (w, b)
        return self._cast[dtype]

    def _output_shape(self, x: torch.Tensor) -> Tuple[int, ...]:
        c = self.conv
        spatial = [
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip(x.shape[2:], c.padding, c.dilation, c.kernel_size, c.stride)
        ]
        return (x.shape[0], c.out_channels, *spatial)

    def _plain(self, x: torch.Tensor, other: Optional[torch.Tensor]) -> torch.Tensor:
        y = self.conv(x)
        return F.relu(y if other is None else y + other)

    def forward(self, x: torch.Tensor, other: Optional[torch.Tensor] = None) -> torch.Tensor:
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        usable = (
            x.device.type == "cpu"
            and x.dim() == 4
            and dtype in (torch.float32, torch.bfloat16)
            and not torch.is_grad_enabled()
            and fusion_runs_in(dtype)
            and (other is None or tuple(other.shape) == self._output_shape(x))
        )
        if not usable:
            return self._plain(x, other)
        w, b = self._weights(dtype)
        c = self.conv
        args = (list(c.padding), list(c.stride), list(c.dilation), c.groups)
        x = x.to(dtype)
        if other is None:
            return torch.ops.mkldnn._convolution_pointwise(x, w, b, *args, "relu", [], "")
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, other.to(dtype), w, b, *args, "add", None, "relu", [], ""
        )


def _fusable_conv(node, modules) -> Optional[nn.Conv2d]:
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs or len(node.users) != 1:
        return None
    conv = modules.get(node.target)
    if (
        type(conv) is not nn.Conv2d
        or conv.padding_mode != "zeros"
        or isinstance(conv.padding, str)
        or conv.weight.device.type != "cpu"
        or conv.weight.dtype != torch.float32
    ):
        return None
    return conv


def _is_relu(node, modules) -> bool:
    if node.op == "call_module":
        return type(modules.get(node.target)) is nn.ReLU
    return node.op == "call_function" and node.target in (torch.relu, F.relu) and len(node.args) == 1


def _is_add(node) -> bool:
    return (
        node.op == "call_function"
        and node.target in (operator.add, operator.iadd, torch.add)
        and len(node.args) == 2
        and not node.kwargs
        and all(isinstance(a, fx.Node) for a in node.args)
    )


def fuse_conv_relu(module: fx.GraphModule) -> int:
    """Rewrite ``module``'s graph in place: each ``relu(conv(x))`` and
    ``relu(conv(x) + y)`` whose intermediate values are used nowhere else becomes one
    :class:`FusedConv2d` call; returns how many were fused."""
    modules = dict(module.named_modules())
    graph = module.graph
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    fused = 0
    for node in list(graph.nodes):
        conv = _fusable_conv(node, modules)
        if conv is None or calls[node.target] != 1:  # a conv called twice keeps its module
            continue
        user = next(iter(node.users))
        if _is_relu(user, modules):
            last, args = user, (node.args[0],)
        elif _is_add(user) and len(user.users) == 1 and _is_relu(next(iter(user.users)), modules):
            other = user.args[1] if user.args[0] is node else user.args[0]
            if other is node:
                continue
            last, args = next(iter(user.users)), (node.args[0], other)
        else:
            continue
        name = f"{node.target.replace('.', '_')}_fused"
        module.add_submodule(name, FusedConv2d(conv))
        with graph.inserting_after(last):
            call = graph.call_module(name, args)
        last.replace_all_uses_with(call)
        for dead in [last, user, node] if last is not user else [last, node]:
            graph.erase_node(dead)
        fused += 1
    if fused:
        module.delete_all_unused_submodules()
        module.recompile()
    return fused


def fuse_for_cpu_inference(model: nn.Module) -> int:
    """:func:`fuse_conv_relu` on every traced part of ``model`` (in place); 0 when this torch
    has no fused operators."""
    if not fusion_available():
        return 0
    return sum(fuse_conv_relu(m) for m in list(model.modules()) if isinstance(m, fx.GraphModule))
