"""Export the deployed embedding network to ONNX or TorchScript, and load it back.

An exported file holds only the embedding: images ``(B, 3, H, W)`` float32 in, features
``(B, D)`` float32 out, any batch size.  It carries a small JSON description (input
height/width, feature size, the architecture spec and where it came from): as ONNX
``metadata_props`` under the key ``reid_srdl``, or as the TorchScript extra file
``reid_srdl.json``.  :func:`load_exported` turns either back into a module whose forward
returns ``(None, features)`` -- the ``(logits, features)`` contract of every re-id network,
without logits -- so ``extract_features`` and :class:`reid_srdl.api.ReIDSearcher` use it
like a trained network.

Files are written atomically (temp file in the same folder, then rename).
"""

import copy
import json
import os
import warnings
import zipfile
from typing import Any, Dict, Optional

import torch
from torch import nn

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.files import atomic_path

EXPORT_FORMAT = "reid_srdl.embedding/1"
METADATA_KEY = "reid_srdl"
TORCHSCRIPT_EXTRA = "reid_srdl.json"
INPUT_NAME, OUTPUT_NAME = "images", "features"
DEFAULT_OPSET = 17


class ExportError(ReidSrdlError, ValueError):
    """An export was asked of something that cannot be exported, or a file is not an export."""


class EmbeddingOnly(nn.Module):
    """``net(x)[1]``: the features of a ``(logits, features)`` network, for export."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)[1]


def _description(model: nn.Module, height: int, width: int, meta: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ExportError(f"height and width must be positive ints; got {height!r} x {width!r}")
    return {
        "format": EXPORT_FORMAT,
        "height": height,
        "width": width,
        "in_channels": int(getattr(model, "in_channels", None) or 3),
        "feature_dim": getattr(model, "feature_dim", None),
        "spec": dict(getattr(model, "spec", {}) or {}),
        **(meta or {}),
    }


def _deployable(model: nn.Module, description: Dict[str, Any]):
    """An eval-mode copy wrapped to output features only, and an example batch of 2."""
    net = EmbeddingOnly(copy.deepcopy(model).eval()).eval()
    example = torch.randn(2, description["in_channels"], description["height"], description["width"])
    with torch.inference_mode():
        out = net(example)
    if not (isinstance(out, torch.Tensor) and out.dim() == 2):
        raise ExportError(f"{type(model).__name__}(x)[1] must be a (batch, dim) feature tensor to export")
    return net, example


def _check_folder(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ExportError(f"cannot write {path}: folder {folder} does not exist")


def export_onnx(
    model: nn.Module,
    path: str,
    height: int,
    width: int,
    meta: Optional[Dict[str, Any]] = None,
    opset: int = DEFAULT_OPSET,
) -> Dict[str, Any]:
    """Write ``model``'s embedding as ONNX with a dynamic batch axis; returns the description
    stored in the file's metadata."""
    import onnx

    description = _description(model, height, width, meta)
    net, example = _deployable(model, description)
    _check_folder(path)
    with atomic_path(path, suffix=".onnx") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter warns it is legacy
            # dynamo=False: the TorchScript-based exporter needs no onnxscript and handles
            # these plain convolutional nets fully.
            torch.onnx.export(
                net,
                (example,),
                tmp,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
        proto = onnx.load(tmp)
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(description)
        onnx.save(proto, tmp)
    return description


def export_torchscript(
    model: nn.Module, path: str, height: int, width: int, meta: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """Write ``model``'s embedding as a traced TorchScript module (any batch size); returns
    the description stored beside it as the extra file ``reid_srdl.json``."""
    description = _description(model, height, width, meta)
    net, example = _deployable(model, description)
    _check_folder(path)
    with atomic_path(path, suffix=".ts") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is in maintenance mode and says so
            # check_trace=False: the check re-runs and re-traces the net (seconds on ResNet-50);
            # parity with PyTorch is verified on the loaded file instead (tools/export.py --verify).
            traced = torch.jit.trace(net, example, check_trace=False)
            torch.jit.save(traced, tmp, _extra_files={TORCHSCRIPT_EXTRA: json.dumps(description)})
    return description


# ----------------------------------------------------------------------------- loading
def exported_format(path) -> Optional[str]:
    """ "onnx", "torchscript" or None (not an exported embedding: e.g. a final.pt)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return None
    if path.lower().endswith(".onnx"):
        return "onnx"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            # torch.jit.save puts extra files under <archive>/extra/; torch.save never does.
            if any(name.endswith(f"/extra/{TORCHSCRIPT_EXTRA}") for name in archive.namelist()):
                return "torchscript"
    return None


class ExportedEmbedding(nn.Module):
    """An exported embedding as a module: ``forward(images) -> (None, features)``.

    ``meta`` is the stored description (``height``, ``width``, ``feature_dim``, ``spec``...).
    It runs on the CPU (ONNX in onnxruntime) and shows no parameters: the exported weights
    are frozen inside the file, and the fast-path options of ``extract_features`` (BN
    folding, channels-last copies) leave it alone.
    """

    def __init__(self, path: str, kind: str, meta: Dict[str, Any], runner):
        super().__init__()
        self.path, self.kind, self.meta = path, kind, meta
        self.feature_dim = meta.get("feature_dim")
        # Kept outside nn.Module's registry (see the class docstring).
        self.__dict__["_runner"] = runner

    def forward(self, images: torch.Tensor):
        if self.kind == "torchscript":
            with torch.no_grad():  # frozen exported weights: nothing to differentiate
                return None, self._runner(images.float())
        array = images.detach().float().cpu().contiguous().numpy()
        (features,) = self._runner.run([OUTPUT_NAME], {INPUT_NAME: array})
        return None, torch.from_numpy(features).to(images.device)

    def __deepcopy__(self, memo):
        # An onnxruntime session cannot be copied; the exported weights are immutable, so
        # sharing one runner is safe.
        return self

    def extra_repr(self) -> str:
        return f"{self.kind}: {self.path} ({self.meta.get('height')}x{self.meta.get('width')})"


def load_exported(path) -> ExportedEmbedding:
    """Load a file written by :func:`export_onnx` or :func:`export_torchscript`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ExportError(f"exported model not found: {path}")
    kind = exported_format(path)
    try:
        if kind == "onnx":
            import onnx
            import onnxruntime

            proto = onnx.load(path, load_external_data=False)
            stored = {p.key: p.value for p in proto.metadata_props}.get(METADATA_KEY)
            runner = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        elif kind == "torchscript":
            extra = {TORCHSCRIPT_EXTRA: ""}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
                runner = torch.jit.load(path, map_location="cpu", _extra_files=extra)
            stored = extra[TORCHSCRIPT_EXTRA]
        else:
            raise ExportError(
                f"{path} is not an exported reid_srdl embedding (expected a .onnx file or a TorchScript "
                f"file written by tools/export.py)"
            )
    except ExportError:
        raise
    except Exception as e:  # a truncated or foreign file: say which one
        raise ExportError(f"cannot read exported model {path}: {e}") from None
    meta = json.loads(stored) if stored else {}
    if meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path} has no reid_srdl description ({METADATA_KEY}); export it with tools/export.py")
    return ExportedEmbedding(path, kind, meta, runner).eval()
