"""Declared sizes are checked before anything is allocated: a 1 MB zip-bomb .npz, arrays that
declare more than their members hold, a model spec asking for 10**9 classes, image sizes of
20,000 in a model's, an ONNX file's or a gallery's settings.  Each is one line naming the
file and the limit (reid_srdl.core.limits)."""

import json
import os

import numpy as np
import pytest
import torch
from tiny_runs import save_tiny_model
from trust_files_helpers import last_json_line, npy_header, run_limited, write_deflate_bomb
from trust_helpers import one_line

from reid_srdl.core import limits
from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.core.checkpoint import CheckpointError
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.limits import LimitExceededError, human_bytes
from reid_srdl.core.schema import SchemaError
from reid_srdl.evaluation.io import load_features, save_features
from reid_srdl.models.model_file import load_model_file

pytestmark = pytest.mark.usefixtures("single_thread")
GIB = 1 << 30


@pytest.fixture(scope="module")
def npz_bomb(tmp_path_factory):
    """A 1 MB .npz whose 'features' member inflates to 1 GiB (an honest zip bomb: sizes and
    CRC-32 match), beside plausible pids and camids."""
    path = str(tmp_path_factory.mktemp("bomb") / "gallery.npz")
    n = 1 << 18
    size = write_deflate_bomb(
        path,
        {
            "features.npy": (npy_header((n, 1024)), GIB),
            "pids.npy": (npy_header((n,), "<i8"), 8 * n),
            "camids.npy": (npy_header((n,), "<i8"), 8 * n),
        },
    )
    assert size < 1_200_000
    return path


@pytest.mark.slow
def test_a_zip_bomb_npz_never_reaches_memory(npz_bomb):
    code = f"""
        import contextlib, io, json
        import numpy as np
        from reid_srdl.cli import search
        import reid_srdl.search.fingerprint, reid_srdl.search.gallery  # what `info` imports (torch...)
        from reid_srdl.evaluation.io import load_features
        limit_address_space(0.7)
        result = {{}}
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            result["info"] = [search.main(["info", "--gallery", {npz_bomb!r}]), err.getvalue()]
        try:
            load_features({npz_bomb!r})
        except Exception as e:
            result["load"] = [type(e).__name__, str(e)]
        try:  # NumPy alone, as feature files were read before this check
            np.load({npz_bomb!r})["features"]
            result["numpy"] = "loaded"
        except MemoryError:
            result["numpy"] = "MemoryError"
        print(json.dumps(result))
    """
    done = run_limited(code)
    assert done.returncode == 0, done.stderr
    result = last_json_line(done.stdout)
    code, err = result["info"]
    line = one_line(err)
    assert code == 2 and "gallery.npz" in line and "as a zip bomb does" in line, line
    assert result["load"][0] == "LimitExceededError" and "declare 1.0 GiB of contents" in result["load"][1]
    assert result["numpy"] == "MemoryError"  # the cap is real: the bomb does not fit under it


def test_the_npz_size_rule_by_hand(tmp_path, monkeypatch):
    # Declared 64 MiB + 20 x 1 MiB are allowed; one byte more is not.
    monkeypatch.setattr(limits, "ARCHIVE_EXPANSION_ALLOWANCE", 1 << 20)
    path = str(tmp_path / "b.npz")
    write_deflate_bomb(path, {"features.npy": (npy_header((16, 1 << 16)), 4 << 20)})
    file_size = os.path.getsize(path)
    declared = len(npy_header((16, 1 << 16))) + (4 << 20)
    allowed = 20 * file_size + (1 << 20)
    assert declared > allowed
    with pytest.raises(LimitExceededError, match=f"declare 4.0 MiB of contents in a file of {human_bytes(file_size)}"):
        load_features(path)
    monkeypatch.setattr(limits, "ARCHIVE_EXPANSION_ALLOWANCE", declared - 20 * file_size)
    with pytest.raises(EvaluationInputError, match="missing key"):  # within the limit: read, then checked
        load_features(path)


def test_an_array_declaring_more_than_its_member_holds_is_refused(tmp_path):
    save_features(str(tmp_path / "ok.npz"), np.ones((2, 3), np.float32), [1, 2], [0, 1])
    import zipfile

    with zipfile.ZipFile(tmp_path / "ok.npz") as z:
        members = {n: z.read(n) for n in z.namelist()}
    # NumPy allocates the declared (2**20, 2**14) float32 array (64 GiB) before reading.
    members["features.npy"] = npy_header((1 << 20, 1 << 14)) + members["features.npy"][128:]
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(EvaluationInputError) as e:
        load_features(str(tmp_path / "lie.npz"))
    line = one_line(str(e.value))
    assert "member features.npy declares a (1048576, 16384) float32 array of 64.0 GiB but holds 24 bytes" in line


# ----------------------------------------------------------------------------- model specs
def _model_with(tmp_path, spec=None, meta=None) -> str:
    good = save_tiny_model(tmp_path / "good.pt")
    obj = torch.load(good, weights_only=True)
    obj["spec"].update(spec or {})
    obj["meta"].update(meta or {})
    path = str(tmp_path / "final.pt")
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(
    "spec, error, needle",
    [
        ({"num_classes": 10**9}, SchemaError, "spec.num_classes: expected an integer in 1..1000000, got 1000000000"),
        # Within the bound, but the file holds a 4-class head: refused before building it.
        ({"num_classes": 999_999}, CheckpointError, "head.classifier.weight: file (4, 16) vs model (999999, 16)"),
        ({"feature_dim": 65_536}, CheckpointError, "head.fc.weight: file (16, 128) vs model (65536, 128)"),
        ({"in_channels": 10**6}, SchemaError, "spec.in_channels: expected an integer in 1..64"),
    ],
)
def test_a_spec_is_refused_before_the_network_is_built(tmp_path, monkeypatch, spec, error, needle):
    import reid_srdl.models.model_file as model_file

    built = []
    real = model_file.build_model
    monkeypatch.setattr(model_file, "build_model", lambda **kw: built.append(torch.empty(0).device) or real(**kw))
    with pytest.raises(error) as e:
        load_model_file(_model_with(tmp_path, spec=spec))
    assert needle in one_line(str(e.value)) and "final.pt" in str(e.value)
    assert all(device.type == "meta" for device in built)  # built on the meta device at most


@pytest.mark.parametrize("key", ["height", "width"])
def test_an_input_size_of_20000_in_a_model_file_is_refused(tmp_path, key):
    with pytest.raises(SchemaError, match=f"meta.{key}: expected an integer in 1..{limits.MAX_INPUT_SIDE}, got 20000"):
        load_model_file(_model_with(tmp_path, meta={key: 20_000}))


def test_an_input_size_of_20000_in_gallery_settings_is_refused(tmp_path):
    from PIL import Image

    from reid_srdl.search import ReIDSearcher

    model = save_tiny_model(tmp_path / "m.pt")
    Image.new("RGB", (32, 64)).save(tmp_path / "a.png")
    ReIDSearcher.from_images(model, [str(tmp_path / "a.png")]).save(str(tmp_path / "g.npz"))
    with np.load(tmp_path / "g.npz") as npz:
        arrays = dict(npz)
    meta = json.loads(str(arrays["meta"]))
    meta["settings"]["height"] = 20_000
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "g.npz", **arrays)
    with pytest.raises(LimitExceededError, match=f"height 20000 is over the limit of {limits.MAX_INPUT_SIDE} pixels"):
        ReIDSearcher.load(str(tmp_path / "g.npz"), model=model)


# ----------------------------------------------------------------------------- ONNX metadata
@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    pytest.importorskip("onnx")
    from reid_srdl.export import export_onnx
    from reid_srdl.models import build_model

    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("onnx") / "m.onnx")
    export_onnx(build_model("small_reid", 4, feature_dim=8).eval(), path, 32, 16)
    return path


def _with_description(source, target, edit) -> str:
    import onnx

    proto = onnx.load(source)
    entry = next(p for p in proto.metadata_props if p.key == "reid_srdl")
    entry.value = edit(json.loads(entry.value))
    onnx.save(proto, str(target))
    return str(target)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda d: json.dumps(dict(d, height=20_000)), f"height: expected an integer in 1..{limits.MAX_INPUT_SIDE}"),
        (lambda d: json.dumps(dict(d, width="16")), "width: expected an integer in 1..2048, got '16'"),
        (lambda d: json.dumps(dict(d, feature_dim=[8])), "feature_dim: expected an integer in 1..65536 or nothing"),
        (lambda d: json.dumps(dict(d, spec=dict(d["spec"], name=5))), "spec.name: expected a string"),
        (lambda d: json.dumps(dict(d, note=_nested(150))), "nested more than 100 levels deep"),
        (lambda d: "[" * 100_000 + "]" * 100_000, "its reid_srdl description is not JSON (nested too deeply)"),
        (lambda d: "{not json", "its reid_srdl description is not JSON"),
        (lambda d: json.dumps(dict(d, height=64)), "the graph's input is [None, 3, 32, 16] but its description says"),
    ],
)
def test_crafted_onnx_descriptions_are_one_line(onnx_file, tmp_path, edit, needle):
    from reid_srdl.export import load_exported

    path = _with_description(onnx_file, tmp_path / "crafted.onnx", edit)
    with pytest.raises(ReidSrdlError) as e:
        load_exported(path)
    line = one_line(str(e.value))
    assert needle in line and "crafted.onnx" in line, line


def _nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def test_an_onnx_file_pointing_at_external_data_is_refused(onnx_file, tmp_path):
    import onnx

    from reid_srdl.export import ExportError, load_exported

    proto = onnx.load(onnx_file)
    tensor = proto.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    onnx.save(proto, str(tmp_path / "ext.onnx"))
    with pytest.raises(ExportError, match=f"its tensor '{tensor.name}' refers to an external data file"):
        load_exported(str(tmp_path / "ext.onnx"))
