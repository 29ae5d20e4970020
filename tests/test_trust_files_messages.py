"""Nothing silently wrong, and one clear line instead of a traceback.

* A ``final.pt`` with 200 flipped tensor bytes (its zip CRC-32 no longer matches) is refused
  naming the file -- PyTorch's own reader loads it and gives other features.
* Crafted model-file fields are checked against one schema (reid_srdl/core/file_schemas.py)
  and named by path.
* ``reid-export --onnx`` without the onnx extra names the extra, before loading anything.
* A plain-text ``.npz`` is called what it is (not "pickled data, load it unsafely")."""

import struct
import zipfile

import numpy as np
import pytest
import torch
from tiny_runs import save_tiny_model
from trust_helpers import one_line

from reid_srdl.cli import export as export_cli
from reid_srdl.core.archives import corrupt_member
from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.core.schema import JSON, Dict, Int, List, Str, check
from reid_srdl.core.torch_files import UnreadableFileError, load_torch_file
from reid_srdl.evaluation.io import load_features
from reid_srdl.models.model_file import load_model_file

pytestmark = pytest.mark.usefixtures("single_thread")


def _flip(path, target, record_suffix, count=200, skip=100) -> str:
    """A copy of a zip-format .pt with ``count`` bytes of one record's data inverted."""
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if i.filename.endswith(record_suffix)), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + skip
    assert skip + count <= info.file_size
    for i in range(start, start + count):
        data[i] ^= 0xFF
    open(target, "wb").write(bytes(data))
    return info.filename


def test_a_final_pt_with_flipped_bytes_is_refused_by_name(tmp_path, capsys):
    good = save_tiny_model(tmp_path / "good.pt")
    bad = str(tmp_path / "final.pt")
    record = _flip(good, bad, "", count=200)  # inside the largest tensor's data
    # The hole: torch's reader does not check CRCs, so the damaged weights load silently.
    damaged = torch.load(bad, weights_only=True)["state_dict"]
    original = torch.load(good, weights_only=True)["state_dict"]
    assert any(not torch.equal(damaged[k], original[k]) for k in original)
    with zipfile.ZipFile(bad) as z:
        assert corrupt_member(z) == record  # the oracle: zipfile's own CRC check
    with pytest.raises(UnreadableFileError) as e:
        load_model_file(bad)
    line = one_line(str(e.value))
    assert line == (
        f"cannot read model file {bad}: it is corrupt: the CRC-32 checksum of its record {record} "
        f"does not match its data"
    )
    assert export_cli.main([bad, "--torchscript", str(tmp_path / "m.ts")]) == 2
    assert "CRC-32" in one_line(capsys.readouterr().err) and not (tmp_path / "m.ts").exists()
    assert load_model_file(good)[1]["spec"]["name"] == "small_reid"  # the intact file loads


def test_a_file_saved_without_checksums_loads_with_a_warning(tmp_path, caplog):
    previous = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"w": torch.arange(3.0)}, str(tmp_path / "nocrc.pt"))
    finally:
        torch.serialization.set_crc32_options(previous)
    with caplog.at_level("WARNING"):
        assert torch.equal(load_torch_file(str(tmp_path / "nocrc.pt"))["w"], torch.arange(3.0))
    assert "nocrc.pt records no checksums" in caplog.text


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("spec", {"name": 7, "num_classes": 4}, "spec.name: expected a string of at most 200 characters, got 7"),
        ("spec", "small_reid", "spec: expected a mapping with keys name, num_classes"),
        ("state_dict", {"head.fc.weight": [1.0, 2.0]}, "state_dict['head.fc.weight']: expected a dense tensor"),
        ("meta", {"height": 64.5}, "meta.height: expected an integer in 1..2048, got 64.5"),
        ("meta", {"task": ["reid"]}, "meta.task: expected a string of at most 200 characters"),
        ("meta", {"note": {1: "x"}}, "meta.note key 1: expected a string"),
    ],
)
def test_crafted_model_file_fields_are_one_line(tmp_path, capsys, field, value, needle):
    obj = torch.load(save_tiny_model(tmp_path / "good.pt"), weights_only=True)
    obj[field] = value if field != "meta" else dict(obj["meta"], **value)
    path = str(tmp_path / "final.pt")
    torch.save(obj, path)
    assert export_cli.main([path, "--torchscript", str(tmp_path / "m.ts")]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: model file {path}: ") and needle in line, line


def test_the_schema_checker_by_hand():
    schema = Dict({"size": Int(1, 10), "names": List(Str(max_chars=3), max_items=2)}, required=("size",), extra=JSON())
    assert check({"size": 3, "names": ["a"], "x": {"y": [1, None]}}, schema, "f.json:") == {
        "size": 3,
        "names": ["a"],
        "x": {"y": [1, None]},
    }
    for value, message in (
        ({}, "f.json: missing size"),
        ({"size": True}, "f.json: size: expected an integer in 1..10, got True"),
        ({"size": 11}, "f.json: size: expected an integer in 1..10, got 11"),
        ({"size": 1, "names": ["abcd"]}, "f.json: names[0]: expected a string of at most 3 characters, got 'abcd'"),
        ({"size": 1, "names": ["a", "b", "c"]}, "f.json: names: expected 0..2 items, got 3"),
        ({"size": 1, "x": float("nan")}, "f.json: x: expected a string, a number, true/false or null, got nan"),
    ):
        with pytest.raises(ValueError) as e:
            check(value, schema, "f.json:")
        assert str(e.value) == message


def test_export_onnx_without_the_extra_names_it_before_loading(tmp_path, capsys, monkeypatch):
    import sys

    import reid_srdl.models.model_file as model_file

    monkeypatch.setitem(sys.modules, "onnx", None)  # "import onnx" raises ImportError
    loaded = []
    monkeypatch.setattr(model_file, "load_model_file", lambda *a: loaded.append(a))
    out = tmp_path / "m.onnx"
    assert export_cli.main([save_tiny_model(tmp_path / "final.pt"), "--onnx", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line == 'error: --onnx needs the export extra (onnx is not installed): pip install -e ".[export]"'
    assert not loaded and not out.exists()


def test_a_text_file_named_npz_is_not_called_pickled(tmp_path, capsys):
    from reid_srdl.cli import search as search_cli

    path = tmp_path / "gallery.npz"
    path.write_text("features,pids\n1,2\n")
    with pytest.raises(EvaluationInputError) as e:
        load_features(str(path))
    line = one_line(str(e.value))
    assert line == (
        f"{path}: not a readable .npz feature file (it is not a zip archive; an .npz file is a zip archive "
        f"of .npy arrays)"
    )
    assert search_cli.main(["info", "--gallery", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "not a zip archive" in line and "pickle" not in line and "allow_pickle" not in line
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(EvaluationInputError, match=r"it is a single .npy array; an .npz file is a zip archive"):
        load_features(str(tmp_path / "one.npz"))
