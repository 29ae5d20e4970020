"""Which network made a gallery: its architecture and a hash of its weights.

A gallery's features are only comparable with query features from the same network and
the same extraction settings; the gallery file records both (see
:mod:`reid_srdl.search.gallery`) so that a mismatch is an error instead of a silently wrong
ranking.

* a reid_srdl network (``build_model``): its ``spec`` (the build arguments) and the sha256
  of its ``state_dict`` -- every tensor in key order: key, dtype, shape, then the raw bytes;
* an exported embedding (ONNX / TorchScript from tools/export.py): its format, the spec
  stored in it, and the sha256 of the file (the weights are frozen inside);
* any other ``nn.Module``: its class and the sha256 of its ``state_dict``.
"""

import hashlib
import json
from typing import Any, Dict, Optional

import torch
import torch.nn as nn


def state_dict_sha256(state: Dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors of a state dict in key order (key, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(key.encode("utf-8"))
        digest.update(str(t.dtype).encode("ascii"))
        digest.update(str(tuple(t.shape)).encode("ascii"))
        # A uint8 view hashes every dtype (bf16 included) by its exact bytes.
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(model: nn.Module) -> Dict[str, Any]:
    """``{"kind", "architecture", "weights_sha256"}`` of a network, as it reads back from JSON
    (tuples as lists), so that a live fingerprint compares equal to a stored one."""
    return json.loads(json.dumps(_fingerprint(model), default=str))


def _fingerprint(model: nn.Module) -> Dict[str, Any]:
    from reid_srdl.export import ExportedEmbedding

    if isinstance(model, ExportedEmbedding):
        spec = model.meta.get("spec")
        return {
            "kind": model.kind,
            "architecture": spec if spec is not None else model.kind,
            "weights_sha256": file_sha256(model.path),
        }
    spec = getattr(model, "spec", None)
    if spec:
        return {
            "kind": "reid_srdl",
            "architecture": dict(spec),
            "weights_sha256": state_dict_sha256(model.state_dict()),
        }
    cls = type(model)
    return {
        "kind": "module",
        "architecture": f"{cls.__module__}.{cls.__qualname__}",
        "weights_sha256": state_dict_sha256(model.state_dict()),
    }


def same_model(a: Optional[Dict[str, Any]], b: Optional[Dict[str, Any]]) -> bool:
    return (
        a is not None
        and b is not None
        and a.get("architecture") == b.get("architecture")
        and a.get("weights_sha256") == b.get("weights_sha256")
    )


def describe_model(fp: Optional[Dict[str, Any]]) -> str:
    """A short human description for messages: architecture name and the hash prefix."""
    if fp is None:
        return "no recorded model"
    arch = fp.get("architecture")
    if isinstance(arch, dict):
        dim = f" (feature_dim {arch['feature_dim']})" if "feature_dim" in arch else ""
        arch = arch.get("name", "reid_srdl network") + dim
    return f"{fp.get('kind')} {arch}, weights sha256 {str(fp.get('weights_sha256', ''))[:12]}"
