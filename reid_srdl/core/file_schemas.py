"""The schemas of the fields the project reads from files, in one place.

Each reader checks what it read against one of these (``reid_srdl.core.schema.check``)
before using any field, so a crafted or damaged file is one line naming the field rather
than a traceback (or an allocation) deep inside.  Sizes are bounded by
``reid_srdl.core.limits``; the bounds are read when a file is checked, so raising a limit
at run time takes effect.
"""

import torch

from reid_srdl.core import limits
from reid_srdl.core.schema import (
    JSON,
    Bool,
    Dict,
    Float,
    Int,
    List,
    Null,
    OneOf,
    Optional,
    Predicate,
    Scalar,
    Spec,
    Str,
)


class _Bounded(Spec):
    """An :class:`Int` whose upper bound is the named attribute of ``limits`` at check time."""

    def __init__(self, lo: int, limit: str, symmetric: bool = False):
        self.lo, self.limit, self.symmetric = lo, limit, symmetric

    def _int(self) -> Int:
        hi = getattr(limits, self.limit)
        return Int(-hi if self.symmetric else self.lo, hi)

    def describe(self) -> str:
        return self._int().describe()

    def check(self, value, where, walk):
        return self._int().check(value, where, walk)


def _tensor_problem(value) -> str:
    """What is wrong with a state-dict value ('' for a dense CPU tensor)."""
    if not isinstance(value, torch.Tensor):
        return f"a {type(value).__module__}.{type(value).__qualname__}"
    if value.layout != torch.strided:
        return f"a {value.layout} tensor"
    if value.device.type != "cpu":
        return f"a tensor on {value.device}"
    return ""


INPUT_SIDE = _Bounded(1, "MAX_INPUT_SIDE")
TENSOR = Predicate(_tensor_problem, "a dense tensor")
# What else plain data saved by the project may hold (reid_srdl.core.torch_files.plain_data).
_TORCH_VALUE = Predicate(
    lambda v: "" if isinstance(v, (torch.dtype, torch.device, torch.Size)) or not _tensor_problem(v) else "it",
    "a tensor, dtype, device or size",
)
PLAIN = JSON(leaf=_TORCH_VALUE)
NAME = Str(max_chars=200)

# The options of a registered architecture besides the common ones: numbers, switches and
# short names (last_stride, dropout...), whole numbers bounded.
_SPEC_OPTION = OneOf(
    Bool(),
    _Bounded(0, "MAX_SPEC_INTEGER", symmetric=True),
    Float(-float(limits.MAX_SPEC_INTEGER), float(limits.MAX_SPEC_INTEGER)),
    Str(max_chars=200),
    List(Scalar(), max_items=64),
    Null(),
)

# ``net.spec`` (reid_srdl.models.build_model): what rebuilds the architecture.
MODEL_SPEC = Dict(
    {
        "name": NAME,
        "num_classes": _Bounded(1, "MAX_NUM_CLASSES"),
        "feature_dim": Optional(_Bounded(0, "MAX_FEATURE_DIM")),
        "in_channels": _Bounded(1, "MAX_IN_CHANNELS"),
        "neck": NAME,
    },
    required=("name", "num_classes"),
    extra=_SPEC_OPTION,
    max_items=64,
)

# Descriptive metadata saved with a network (reid_srdl.core.checkpoint.save_model_file).
MODEL_META = Dict(
    {"task": NAME, "data": Str(max_chars=1000), "method": NAME, "height": INPUT_SIDE, "width": INPUT_SIDE},
    extra=PLAIN,
)

# A model file (final.pt, stage1.pt): format tag, spec, weights, metadata.
MODEL_FILE = Dict(
    {
        "format": Str(max_chars=100),
        "spec": MODEL_SPEC,
        "state_dict": Dict(extra=TENSOR, max_items=1_000_000),
        "meta": MODEL_META,
    },
    required=("format", "spec", "state_dict"),
    extra=PLAIN,
)

# The description stored in an exported embedding (ONNX metadata_props, TorchScript extra
# file): reid_srdl.export.
EXPORT_DESCRIPTION = Dict(
    {
        "format": Str(max_chars=100),
        "height": INPUT_SIDE,
        "width": INPUT_SIDE,
        "in_channels": _Bounded(1, "MAX_IN_CHANNELS"),
        "feature_dim": Optional(_Bounded(1, "MAX_FEATURE_DIM")),
        "spec": OneOf(MODEL_SPEC, Dict(max_items=0)),
        "source": Str(max_chars=4096),
        "task": NAME,
    },
    required=("format", "height", "width"),
    extra=JSON(),
)
