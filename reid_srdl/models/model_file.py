"""A deployable network from its model file: the spec rebuilds the architecture, the state
dict fills it.  The file itself (format, safe loading, atomic saving) is reid_srdl.core.checkpoint's."""

from typing import Any, Dict, Tuple

import torch.nn as nn

from reid_srdl.core.checkpoint import load_state_dict_checked, read_model_file
from reid_srdl.models.build import build_model


def load_model_file(path: str) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild a network saved by ``save_model_file`` (a file, or a run directory's final.pt);
    returns (model in eval mode, meta with its ``spec``)."""
    obj = read_model_file(path)
    model = build_model(**obj["spec"])
    load_state_dict_checked(model, obj["state_dict"], obj["path"])
    model.eval()
    return model, dict(obj.get("meta", {}), spec=obj["spec"])
