"""Shared helpers of the tests/test_trust_*.py files: malicious pickles, the one-line error
check, damaged copies of the tiny data set; tiny runs and model files come from tiny_runs.py."""

import os
import shutil

import torch
from tiny_runs import reid_overrides

from reid_srdl.core import checkpoint as ckpt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONVERT_COMMAND = "python tools/convert_checkpoint.py"


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
    """reid-train arguments of the trust tests' tiny re-id run: vanilla, 2 epochs of 2
    batches, single-query evaluation, a run folder the trainer names (tiny_runs.reid_overrides)."""
    extra = ("method.name=vanilla", "eval.multi_query=false", *extra)
    return reid_overrides(root, out, *extra, epochs=2, max_batches=2, run_name=None)
