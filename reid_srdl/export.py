"""Export the deployed embedding network to ONNX or TorchScript, and load it back.

An exported file holds only the embedding: images ``(B, 3, H, W)`` float32 in, features
``(B, D)`` float32 out, any batch size.  It carries a small JSON description (input
height/width, feature size, the architecture spec and where it came from): as ONNX
``metadata_props`` under the key ``reid_srdl``, or as the TorchScript extra file
``reid_srdl.json``.  :func:`load_exported` turns either back into a module whose forward
returns ``(None, features)`` -- the ``(logits, features)`` contract of every re-id network,
without logits -- so ``extract_features`` and :class:`reid_srdl.api.ReIDSearcher` use it
like a trained network.

A TorchScript file is a program: it is loaded only when asked for by name (a ``.ts`` file
name, or ``trust_torchscript=True`` / ``--trust-torchscript``), never because of what a
file contains.  ONNX files are graphs of standard operators; one that points at external
data files is refused.  The stored description is checked field by field on load.

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

from reid_srdl.core import archives
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.file_schemas import EXPORT_DESCRIPTION
from reid_srdl.core.files import atomic_path
from reid_srdl.core.schema import check
from reid_srdl.core.torch_scan import is_torchscript_archive

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


EXPORT_EXTRA = 'pip install -e ".[export]"'


def require_onnx(purpose: str):
    """``(onnx, onnxruntime)``, or an :class:`ExportError` naming the extra that installs them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ExportError(f"{purpose} needs the export extra ({e.name} is not installed): {EXPORT_EXTRA}") from None
    return onnx, onnxruntime


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
    onnx, _ = require_onnx("ONNX export")

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
TORCHSCRIPT_SUFFIX = ".ts"


def exported_format(path) -> Optional[str]:
    """ "onnx" (a ``.onnx`` name), "torchscript" (a ``.ts`` name, or a TorchScript archive
    whatever its name: see :func:`load_exported`) or None (not an exported embedding: e.g. a
    final.pt).  Only the name and the zip directory are read."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return None
    if path.lower().endswith(".onnx"):
        return "onnx"
    if path.lower().endswith(TORCHSCRIPT_SUFFIX) or is_torchscript_archive(path):
        return "torchscript"
    return None


def torchscript_refusal(path: str) -> str:
    """The one line refusing a TorchScript program the user did not ask for by name."""
    return (
        f"refusing to load {path}: it is a TorchScript program, which runs its own code when used; "
        f"load it only if you made it or trust its source, by naming it *{TORCHSCRIPT_SUFFIX} or passing "
        f"--trust-torchscript (trust_torchscript=True in Python)"
    )


def _stored_description(stored: Optional[str], path: str) -> Dict[str, Any]:
    """The stored JSON description, every field checked (core/file_schemas.py)."""
    if not stored:
        raise ExportError(f"{path} has no reid_srdl description ({METADATA_KEY}); export it with tools/export.py")
    try:
        meta = json.loads(stored)
    except (ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e).splitlines()[0]
        raise ExportError(f"{path}: its reid_srdl description is not JSON ({reason})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path} has no reid_srdl description ({METADATA_KEY}); export it with tools/export.py")
    return check(meta, EXPORT_DESCRIPTION, f"exported model {path}:")


def _load_onnx(path: str):
    """``(session, stored description)`` of an ONNX file; a file that points at external
    data files (which onnxruntime would read from anywhere) is refused."""
    onnx, onnxruntime = require_onnx(f"loading {path}")
    from onnx.external_data_helper import _get_all_tensors

    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError and others
        raise ExportError(f"cannot read exported model {path}: not an ONNX file ({_first_line(e)})") from None
    external = [t.name for t in _get_all_tensors(proto) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(
            f"refusing to load {path}: its tensor {external[0]!r} refers to an external data file, which "
            f"tools/export.py never writes and this project never reads"
        )
    stored = {p.key: p.value for p in proto.metadata_props}.get(METADATA_KEY)
    meta = _stored_description(stored, path)
    _check_onnx_input(proto, meta, path)
    try:
        runner = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise ExportError(f"cannot read exported model {path}: {_first_line(e)}") from None
    return runner, meta


def _check_onnx_input(proto, meta: Dict[str, Any], path: str) -> None:
    """The graph's fixed input sizes must be the described ones (else every query would fail)."""
    inputs = [i for i in proto.graph.input if i.name == INPUT_NAME]
    if not inputs:
        raise ExportError(f"{path}: the graph has no input named {INPUT_NAME!r}; export it with tools/export.py")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    described = [None, meta.get("in_channels", 3), meta["height"], meta["width"]]
    if len(dims) != 4 or any(d is not None and d != w for d, w in zip(dims[1:], described[1:])):
        raise ExportError(
            f"{path}: the graph's input is {dims} but its description says (batch, "
            f"{described[1]}, {described[2]}, {described[3]})"
        )


def _load_torchscript(path: str):
    """``(module, stored description)`` of a TorchScript file the user trusts, after its
    sizes and checksums are verified like any archive's."""
    try:
        with zipfile.ZipFile(path) as archive:
            archives.check_member_sizes(archive, path, "exported model")
            bad = archives.corrupt_member(archive, path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ExportError(f"cannot read exported model {path}: not a TorchScript file ({_first_line(e)})") from None
    if bad is not None:
        raise ExportError(
            f"cannot read exported model {path}: it is corrupt (the CRC-32 checksum of {bad} does not match)"
        )
    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            runner = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    except Exception as e:  # torch.jit raises RuntimeError and others
        raise ExportError(f"cannot read exported model {path}: {_first_line(e)}") from None
    return runner, _stored_description(extra[TORCHSCRIPT_EXTRA], path)


def _first_line(e: BaseException) -> str:
    line = (str(e).strip().splitlines() or [""])[0].strip()[:200]
    return line or type(e).__name__


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


def load_exported(path, trust_torchscript: bool = False) -> ExportedEmbedding:
    """Load a file written by :func:`export_onnx` or :func:`export_torchscript`.

    ONNX files hold a graph of standard operators, run by onnxruntime.  A TorchScript file
    is a program (its code runs on every embedding), so it is loaded only when asked for by
    name: a ``.ts`` file name, or ``trust_torchscript=True``; a TorchScript archive under any
    other name is refused with one line saying how to opt in.  The stored description is
    checked field by field (height/width within ``limits.MAX_INPUT_SIDE``...).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ExportError(f"exported model not found: {path}")
    kind = exported_format(path)
    if kind == "onnx":
        runner, meta = _load_onnx(path)
    elif kind == "torchscript":
        if not (trust_torchscript or path.lower().endswith(TORCHSCRIPT_SUFFIX)):
            raise ExportError(torchscript_refusal(path))
        runner, meta = _load_torchscript(path)
    else:
        raise ExportError(
            f"{path} is not an exported reid_srdl embedding (expected a .onnx file or a TorchScript "
            f"file written by tools/export.py)"
        )
    return ExportedEmbedding(path, kind, meta, runner).eval()
