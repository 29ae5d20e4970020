"""reid-convert-checkpoint reads a file that refers to Python objects with inert
stand-ins: nothing the file names is imported or called (a payload that would create a
marker file never runs, a module whose import creates one is never imported), and what it
holds comes out as plain data equal to what the objects held (oracles: the real module's
``state_dict()``, the attributes the test set)."""

import argparse
import collections
import os
import pathlib
import sys

import numpy as np
import pytest
import torch
from tiny_runs import save_tiny_model
from trust_helpers import MarkerPayload, one_line

from reid_srdl.cli import convert_checkpoint as convert_cli
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.core.inert_pickle import load_inert
from reid_srdl.core.torch_files import UnsafeFileError
from reid_srdl.models.model_file import load_model_file

Point = collections.namedtuple("Point", "x y")


def small_net():
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Linear(2, 2)))


class LegacyOptions:
    """A plain Python object, as older code pickled into a file's metadata."""

    def __init__(self):
        self.margin = np.float32(0.25)
        self.tags = ("a", "b")


class NotAnArray:
    """What a crafted file asks NumPy's array builder to build."""


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self):
        self.a, self.b = 1, "two"


def convert(old, new, capsys):
    """(exit code, the one line printed) of the tool on ``old``."""
    code = convert_cli.main([str(old), str(new)])
    captured = capsys.readouterr()
    return code, one_line(captured.out if code == 0 else captured.err)


def test_model_file_with_python_objects_round_trip(tmp_path, capsys):
    from reid_srdl.models import build_model

    torch.manual_seed(3)
    net = build_model("small_reid", 5, feature_dim=8)
    old = tmp_path / "legacy.pt"
    # A model file with non-plain metadata: NumPy values, a Namespace, objects, a path.
    torch.save(
        {
            "format": ckpt.MODEL_FORMAT,
            "spec": dict(net.spec),
            "state_dict": net.state_dict(),
            "meta": {
                "task": "reid",
                "height": np.int64(64),
                "mean": np.array([0.5, 0.25], dtype=np.float32),
                "names": np.array(["a", "b"]),
                "args": argparse.Namespace(lr=0.1),
                "options": LegacyOptions(),
                "slots": Slotted(),
                "point": Point(1, 2.5),
                "root": pathlib.PurePosixPath("/data/market"),
                "ids": {3, 1, 2},
                "counts": collections.Counter("aab"),
            },
        },
        old,
    )
    with pytest.raises(UnsafeFileError, match="convert_checkpoint.py"):
        load_model_file(str(old))
    new = tmp_path / "converted.pt"
    code, line = convert(old, new, capsys)
    assert code == 0 and "loads with the safe loader" in line and "argparse.Namespace" in line
    meta = torch.load(new, weights_only=True)["meta"]  # torch's safe loader is the oracle
    assert meta["height"] == 64 and type(meta["height"]) is int
    assert torch.equal(meta["mean"], torch.tensor([0.5, 0.25])) and meta["names"] == ["a", "b"]
    assert meta["args"] == {"lr": 0.1}
    assert meta["options"] == {"margin": 0.25, "tags": ("a", "b")}
    assert meta["slots"] == {"a": 1, "b": "two"}
    assert meta["point"] == (1, 2.5) and meta["root"] == "/data/market"
    assert meta["ids"] == [1, 2, 3] and meta["counts"] == {"a": 2, "b": 1}
    model, _ = load_model_file(str(new))
    x = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        assert torch.equal(model(x)[1], net.eval()(x)[1])  # the same network, bit for bit
    assert sorted(os.listdir(tmp_path)) == ["converted.pt", "legacy.pt"]  # no temp file


def test_a_whole_pickled_module_becomes_its_state_dict(tmp_path, capsys):
    torch.manual_seed(0)
    net = small_net()
    net[0].register_buffer("scratch", torch.ones(1), persistent=False)  # not in a state dict
    net[1].num_batches_tracked += 7
    old = tmp_path / "whole.pt"
    torch.save({"model": net, "epoch": 3}, old)
    new = tmp_path / "new.pt"
    assert convert(old, new, capsys)[0] == 0
    got = torch.load(new, weights_only=True)
    want = net.state_dict()  # the oracle: PyTorch's own state_dict of the real module
    assert list(got["model"]) == list(want) and got["epoch"] == 3
    assert all(torch.equal(got["model"][k], want[k]) and type(got["model"][k]) is torch.Tensor for k in want)
    small_net().load_state_dict(got["model"], strict=True)


def test_the_pre_1_6_file_format(tmp_path, capsys):
    old = tmp_path / "old_format.pt"
    torch.save({"options": LegacyOptions(), "w": torch.arange(3.0)}, old, _use_new_zipfile_serialization=False)
    assert convert(old, tmp_path / "new.pt", capsys)[0] == 0  # globals found one by one: no zip index
    got = torch.load(tmp_path / "new.pt", weights_only=True)
    assert got["options"] == {"margin": 0.25, "tags": ("a", "b")} and torch.equal(got["w"], torch.arange(3.0))
    # A whole module in that format carries its class's source code: refused, by name.
    torch.save({"m": torch.nn.Linear(2, 2)}, old, _use_new_zipfile_serialization=False)
    code, line = convert(old, tmp_path / "new2.pt", capsys)
    assert code == 2 and "pre-1.6 file format" in line and not (tmp_path / "new2.pt").exists()


def test_the_payload_never_runs(tmp_path, capsys):
    marker = tmp_path / "PAYLOAD_RAN"
    old = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "meta": {"note": MarkerPayload(marker)}}, old)
    code, line = convert(old, tmp_path / "new.pt", capsys)
    assert code == 2 and not marker.exists() and not (tmp_path / "new.pt").exists()
    assert "evil.pt['meta']['note'] is a call of io.open('" in line and "never runs" in line


def test_a_module_the_file_names_is_never_imported(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "IMPORTED"
    (tmp_path / "sideeffect_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\nclass Thing:\n    def __init__(self):\n        self.value = 5\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import sideeffect_mod

    old = tmp_path / "thing.pt"
    torch.save({"thing": sideeffect_mod.Thing()}, old)
    marker.unlink()
    del sys.modules["sideeffect_mod"]
    assert convert(old, tmp_path / "new.pt", capsys)[0] == 0
    assert not marker.exists() and "sideeffect_mod" not in sys.modules
    assert torch.load(tmp_path / "new.pt", weights_only=True) == {"thing": {"value": 5}}


def test_a_module_pytorch_blocks_is_one_line(tmp_path, capsys):
    class CallsSystem:
        def __reduce__(self):
            return (os.system, ("true",))

    old = tmp_path / "sys.pt"
    torch.save({"x": CallsSystem()}, old)
    code, line = convert(old, tmp_path / "new.pt", capsys)
    assert code == 2 and "without running code" in line and "is blocked" in line and "posix.system" in line


def test_numpy_builders_given_a_stand_in_are_one_line(tmp_path, capsys):
    from numpy._core.multiarray import _reconstruct

    class Crafted:
        def __reduce__(self):  # NumPy's real builder, asked to build a foreign class
            return (_reconstruct, (NotAnArray, (0,), b"b"))

    old = tmp_path / "np.pt"
    torch.save({"x": Crafted()}, old)
    code, line = convert(old, tmp_path / "new.pt", capsys)
    assert code == 2 and "without running code" in line and "sub-type of ndarray" in line


def test_a_reference_to_a_function_is_named(tmp_path, capsys):
    old = tmp_path / "fn.pt"
    torch.save({"hook": np.linalg.norm}, old)  # a function: no plain-data form
    code, line = convert(old, tmp_path / "new.pt", capsys)
    assert code == 2 and "fn.pt['hook'] is a reference to numpy.linalg" in line and not (tmp_path / "new.pt").exists()


def test_inert_stand_ins_record_without_running(tmp_path):
    old = tmp_path / "x.pt"
    torch.save([LegacyOptions(), Point(1, 2)], old)
    options, point = load_inert(str(old))
    assert options.qualified_name.endswith("test_convert_checkpoint.LegacyOptions")
    assert not options.inert_called and options.inert_state["tags"] == ("a", "b")
    assert point.inert_args == (1, 2) and point.inert_state is None


def test_nothing_to_convert_and_the_old_flag(tmp_path, capsys):
    path = save_tiny_model(tmp_path / "final.pt")
    code, line = convert(path, tmp_path / "new.pt", capsys)
    assert code == 0 and "already holds plain data" in line and not (tmp_path / "new.pt").exists()
    old = tmp_path / "opts.pt"
    torch.save({"o": LegacyOptions()}, old)
    # The flag older versions required is accepted and changes nothing.
    assert convert_cli.main([str(old), str(tmp_path / "new.pt"), "--i-trust-this-file"]) == 0
    assert torch.load(tmp_path / "new.pt", weights_only=True) == {"o": {"margin": 0.25, "tags": ("a", "b")}}


def test_garbage_is_one_line(tmp_path, capsys):
    old = tmp_path / "junk.pt"
    old.write_bytes(b"not a pickle at all")
    code, line = convert(old, tmp_path / "new.pt", capsys)
    assert code == 2 and "cannot convert" in line and "junk.pt" in line
