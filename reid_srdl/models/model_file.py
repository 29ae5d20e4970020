"""A deployable network from its model file: the spec rebuilds the architecture, the state
dict fills it.  The file itself (format, safe loading, atomic saving) is reid_srdl.core.checkpoint's.

The spec is built first on PyTorch's ``meta`` device (shapes only, no memory) and its
parameters compared with the tensors the file holds: a spec that describes a network the
file has no weights for (``num_classes=10**9`` with a few KB of weights) is refused before
a byte of it is allocated.  The file's tensors were bounded by its size when it was read.
"""

from typing import Any, Dict, Tuple

import torch
import torch.nn as nn

from reid_srdl.core.checkpoint import CheckpointError, load_state_dict_checked, read_model_file, state_dict_problems
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.models.build import build_model


def check_spec_fits(spec: Dict[str, Any], state: Dict[str, torch.Tensor], source: str) -> None:
    """Build ``spec`` on the meta device and refuse it (:class:`CheckpointError`) unless its
    parameters and buffers are exactly the tensors of ``state``."""
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build_model(**spec).state_dict().items()}
    except (ReidSrdlError, ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{source}: its spec does not describe a network this version builds ({e})") from None
    problems = state_dict_problems(shapes, state)
    if problems:
        raise CheckpointError(f"{source}: its weights do not fit the network its spec describes: {problems}")


def load_model_file(path: str) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild a network saved by ``save_model_file`` (a file, or a run directory's final.pt);
    returns (model in eval mode, meta with its ``spec``)."""
    obj = read_model_file(path)
    check_spec_fits(obj["spec"], obj["state_dict"], obj["path"])
    model = build_model(**obj["spec"])
    load_state_dict_checked(model, obj["state_dict"], obj["path"])
    model.eval()
    return model, dict(obj.get("meta", {}), spec=obj["spec"])
