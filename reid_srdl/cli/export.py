"""Export a trained network's embedding (images -> features) to ONNX and/or TorchScript.

    python tools/export.py runs/RUN --onnx model.onnx
    python tools/export.py runs/RUN/final.pt --onnx model.onnx --torchscript model.ts --verify
    python tools/export.py final.pt --config configs/market1501/srdl_resnet50.yaml --onnx m.onnx
    reid-export runs/RUN --onnx model.onnx                  # the same, as an installed command

The checkpoint is a run directory or a model file (final.pt).  With --config (and dotted
overrides after it), the network is built from the config's model section and the
checkpoint's weights must fit it: a mismatch is an error naming both files.  The exported
file has a dynamic batch axis and carries the input height/width (default: the ones the
model was trained at), which ReIDSearcher.from_images("model.onnx", ...) uses.
--verify runs the exported file on a random batch and prints the largest difference from
PyTorch.  Bad input: a one-line message on stderr and exit code 2; nothing is written.
"""

import argparse
import os

from reid_srdl.config import int_arg
from reid_srdl.core import cli
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.files import OutputPathError, check_output_file, describe_os_error


def opset_range():
    """The ONNX opsets torch's TorchScript-based exporter (the one reid_srdl.export uses,
    dynamo=False) writes; read from torch so that an upgrade widens it by itself."""
    try:
        from torch.onnx import _constants

        return _constants.ONNX_MIN_OPSET, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    except (ImportError, AttributeError):  # a torch without these private constants
        return 7, 20


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="RUN_DIR|MODEL.pt", help="trained network: run directory or final.pt")
    p.add_argument("--onnx", metavar="OUT.onnx", help="write ONNX here")
    p.add_argument("--torchscript", metavar="OUT.ts", help="write TorchScript here")
    p.add_argument("--config", metavar="CFG.yaml", help="build the network from this config's model section")
    p.add_argument("overrides", nargs="*", help="dotted config overrides (with --config), e.g. model.feature_dim=512")
    p.add_argument("--height", type=int_arg(1), help="input height (default: the training height)")
    p.add_argument("--width", type=int_arg(1), help="input width (default: the training width)")
    p.add_argument(
        "--opset", type=int_arg(*opset_range()), default=17, help="ONNX opset, in the range torch exports (default: 17)"
    )
    p.add_argument("--verify", action="store_true", help="compare the exported embedding with PyTorch's")
    # Intermixed: overrides may come after the options (checkpoint --config c.yaml key=value).
    args = p.parse_intermixed_args(argv)
    if not (args.onnx or args.torchscript):
        p.error("give --onnx OUT.onnx and/or --torchscript OUT.ts")
    if args.overrides and not args.config:
        p.error("config overrides need --config")
    if args.onnx and args.torchscript and os.path.abspath(args.onnx) == os.path.abspath(args.torchscript):
        p.error("--onnx and --torchscript name the same file")
    return args


def model_from_config(checkpoint: str, config_path: str, overrides):
    """The config's network with the checkpoint's weights; an error naming both if they differ."""
    from reid_srdl import load_config
    from reid_srdl.core.checkpoint import load_state_dict_checked, resolve_model_file
    from reid_srdl.export import ExportError
    from reid_srdl.models import build_model
    from reid_srdl.models.model_file import load_model_file

    saved, meta = load_model_file(checkpoint)
    spec = meta["spec"]
    cfg = load_config(config_path, overrides)
    wanted = f"model.name={cfg.model.name}, model.feature_dim={cfg.model.feature_dim}"
    held = f"{spec['name']} (feature_dim {spec.get('feature_dim')})"
    source = resolve_model_file(checkpoint)
    if cfg.model.name != spec["name"]:
        raise ExportError(f"checkpoint {source} holds a {held} but config {config_path} asks for {wanted}")
    try:
        options = {k: v for k, v in spec.items() if k not in ("name", "num_classes", "feature_dim")}
        net = build_model(cfg.model.name, spec["num_classes"], feature_dim=cfg.model.feature_dim, **options)
        load_state_dict_checked(net, saved.state_dict(), source)
    except (ReidSrdlError, ValueError) as e:
        raise ExportError(
            f"checkpoint {source} holds a {held} that does not fit config {config_path} ({wanted}): {e}"
        ) from None
    return net.eval(), meta


def verify(model, path: str, height: int, width: int) -> float:
    """Largest |exported - PyTorch| feature difference on a random batch of 3."""
    import torch

    from reid_srdl.export import load_exported

    images = torch.randn(3, int(getattr(model, "in_channels", None) or 3), height, width)
    with torch.inference_mode():
        expected = model.eval()(images)[1]
        got = load_exported(path, trust_torchscript=True)(images)[1]  # the file this run just wrote
    return float((expected - got).abs().max())


def main(argv=None) -> int:
    """``reid-export`` / ``python tools/export.py``: the exit code (reid_srdl/core/cli.py)."""
    return cli.run(_export, argv)


def _export(argv) -> None:
    args = parse_args(argv)
    try:
        # Before the network is loaded or traced: a folder, a missing or read-only
        # destination is one line, and nothing is written.
        for path, flag in ((args.onnx, "--onnx"), (args.torchscript, "--torchscript")):
            if path:
                check_output_file(path, f"{flag} file")
        from reid_srdl.export import export_onnx, export_torchscript, require_onnx
        from reid_srdl.models.model_file import load_model_file

        if args.onnx:
            require_onnx("--onnx")  # before the network is loaded and traced

        if args.config:
            model, meta = model_from_config(args.checkpoint, args.config, args.overrides)
        else:
            model, meta = load_model_file(args.checkpoint)
        height = args.height or meta.get("height") or 256
        width = args.width or meta.get("width") or 128
        info = {"source": os.path.abspath(args.checkpoint), "task": meta.get("task", "reid")}
        written = []
        if args.onnx:
            export_onnx(model, args.onnx, height, width, info, opset=args.opset)
            written.append(args.onnx)
        if args.torchscript:
            export_torchscript(model, args.torchscript, height, width, info)
            written.append(args.torchscript)
        for path in written:
            line = f"wrote {path} ({height}x{width}, {model.feature_dim}-d features)"
            if args.verify:
                line += f"; max |exported - PyTorch| = {verify(model, path, height, width):.2e}"
            if path == args.torchscript and not path.lower().endswith(".ts"):
                line += " (TorchScript not named *.ts: loading it needs --trust-torchscript)"
            print(line)
    except OSError as e:  # e.g. the disk filled up while writing
        if isinstance(e, ReidSrdlError):
            raise
        where = f" {e.filename}" if e.filename else ""
        raise OutputPathError(f"cannot write{where}: {describe_os_error(e)}") from None
