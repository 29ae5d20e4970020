"""Shared helpers of the tests/test_trust_*.py files: malicious pickles, the one-line error
check, tiny run folders and model files in the real on-disk formats."""

import os
import shutil

import torch

from reid_srdl.core import checkpoint as ckpt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")

CONVERT_COMMAND = "python tools/convert_checkpoint.py"
QUIET = ["train.progress=false", "train.precision=fp32", "train.tensorboard=false", "eval.plot=false"]


class MarkerPayload:
    """Unpickling this runs ``open(marker, "w")``: the marker file appears if and only if the
    file was loaded with the unsafe unpickler (harmless stand-in for any code)."""

    def __init__(self, marker: str):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_malicious(path, marker, template=None) -> str:
    """A .pt file shaped like ``template`` (a dict: a model file, a training state...) that
    also carries the payload; returns the path."""
    obj = dict(template or {})
    obj["meta"] = {"note": MarkerPayload(marker)}
    torch.save(obj, str(path))
    return str(path)


def malicious_model_file(path, marker) -> str:
    template = {"format": ckpt.MODEL_FORMAT, "spec": {"name": "small_reid"}, "state_dict": {}}
    return write_malicious(path, marker, template)


def malicious_run_dir(folder, marker) -> str:
    """A finished-looking run folder whose final.pt carries the payload."""
    os.makedirs(folder, exist_ok=True)
    malicious_model_file(os.path.join(folder, ckpt.FINAL_FILE), marker)
    return str(folder)


def one_line(text: str) -> str:
    """The single non-empty line of ``text`` as a terminal shows it (a progress bar redrawn
    with carriage returns and cleared leaves nothing); asserts there is one, no traceback."""
    shown = [line.split("\r")[-1] for line in text.split("\n")]
    lines = [line for line in shown if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    assert "Traceback" not in text
    return lines[0]


def assert_refused(message: str, marker) -> None:
    """A refusal of a malicious file: one line naming the conversion tool, no retry advice,
    and the payload never ran."""
    line = one_line(message)
    assert not os.path.exists(str(marker)), "the malicious pickle was executed"
    assert CONVERT_COMMAND in line and "without running anything" in line, line
    assert "weights_only=False" not in line and "refusing to load" in line, line


def tiny_market_copy(source_root: str, dest_root) -> str:
    """A private copy of the session's tiny Market-1501 set (to damage in one test)."""
    dest = str(dest_root)
    shutil.copytree(source_root, dest)
    return dest


def market_split_dir(root: str, split: str) -> str:
    from reid_srdl.data.market1501 import find_market_dir

    return os.path.join(find_market_dir(root), split)


def reid_train_args(root, out, *extra):
    """tools/train.py arguments of a tiny re-id run on ``root`` (64x32, a few batches)."""
    return [
        f"data.root={root}",
        "data.synthetic=false",
        "data.height=64",
        "data.width=32",
        "data.batch_size=8",
        "data.test_batch_size=32",
        "data.workers=0",
        "model.feature_dim=32",
        "train.epochs=2",
        "train.max_batches=2",
        f"train.output_dir={out}",
        "method.name=vanilla",
        "eval.multi_query=false",
        *QUIET,
        *extra,
    ]


def save_tiny_model(path, height=64, width=32, num_classes=4, seed=0) -> str:
    """A real model file (small_reid, random weights) as tools/train.py writes final.pt."""
    from reid_srdl.models import build_model

    torch.manual_seed(seed)
    net = build_model("small_reid", num_classes, feature_dim=16)
    ckpt.save_model_file(net, str(path), task="reid", data="market1501", method="vanilla", height=height, width=width)
    return str(path)
