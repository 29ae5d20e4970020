"""A .pt file cannot make the process allocate more than it holds, nor walk forever.

Payloads are harmless: a call of an allow-listed allocating global (``bytearray(2**34)``)
run in a subprocess whose address space is capped (it would raise MemoryError there), views
and storages that declare more than the file stores, and shared or self-referencing pickles
for the converter (a time bound and one line)."""

import collections
import os
import pickle
import time
import warnings
import zipfile

import pytest
import torch
from tiny_runs import save_tiny_model
from trust_files_helpers import last_json_line, run_limited
from trust_helpers import one_line

from reid_srdl.cli import convert_checkpoint as convert_cli
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.core import limits
from reid_srdl.core.limits import LimitExceededError
from reid_srdl.core.torch_files import UnreadableFileError, load_torch_file, plain_data

pytestmark = pytest.mark.usefixtures("single_thread")


class Call:
    """Pickles as ``func(*args)``: the file names ``func`` and its arguments."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


class Foreign:
    """A class only this test module defines: the converter replaces it by a stand-in."""

    def __init__(self, value=1):
        self.value = value


def _model_file_with(path, payload, legacy=False) -> str:
    template = {"format": ckpt.MODEL_FORMAT, "spec": {"name": "small_reid", "num_classes": 4}, "state_dict": {}}
    torch.save(dict(template, meta={"note": payload}), str(path), _use_new_zipfile_serialization=not legacy)
    return str(path)


# ----------------------------------------------------------------------------- allocating calls
@pytest.mark.slow
def test_bytearray_2_34_is_refused_at_every_entry_point_under_a_memory_cap(tmp_path):
    """Every loader of a .pt (model file: eval/search/export/kd; training state: --resume;
    the converter; the search CLI) refuses a file calling bytearray(2**34) -- in a process
    whose address space would not hold the 16 GiB, so the test fails if it is allocated."""
    paths = {}
    for legacy in (False, True):
        paths[f"final_{legacy}"] = _model_file_with(tmp_path / f"final_{legacy}.pt", Call(bytearray, 2**34), legacy)
    assert os.path.getsize(paths["final_True"]) < 600  # a few hundred bytes
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  epochs: 1\n")
    torch.save({"format": ckpt.TRAIN_STATE_FORMAT, "epoch": 1, "x": Call(bytearray, 2**34)}, str(run / "last.pt"))
    good = save_tiny_model(tmp_path / "good.pt")
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 64), (10, 20, 30)).save(images / "a.png")
    code = f"""
        import contextlib, io, json
        from reid_srdl.cli import convert_checkpoint, export, search
        from reid_srdl.core import checkpoint as ckpt
        from reid_srdl.models.model_file import load_model_file
        paths = {paths!r}
        limit_address_space(1.0)
        results = {{}}
        def attempt(name, fn):
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err):
                    out = fn()
                results[name] = ["returned", repr(out)[:80], err.getvalue()]
            except MemoryError:
                results[name] = ["MemoryError", "", ""]
            except Exception as e:
                results[name] = [type(e).__name__, str(e), ""]
        for key, path in paths.items():
            attempt("model " + key, lambda: load_model_file(path))
            attempt("convert " + key, lambda: convert_checkpoint.main([path, path + ".new"]))
            attempt("export " + key, lambda: export.main([path, "--torchscript", path + ".ts"]))
            attempt("search " + key, lambda: search.main(["build", "--model", path, "--images", {str(images)!r},
                                                          "--out", path + ".npz"]))
        attempt("resume", lambda: ckpt.load_train_state({str(run)!r}))
        attempt("control", lambda: load_model_file({good!r})[1]["spec"]["name"])
        print(json.dumps(results))
    """
    done = run_limited(code)
    assert done.returncode == 0, done.stderr
    results = last_json_line(done.stdout)
    assert results.pop("control") == ["returned", "'small_reid'", ""]  # the cap leaves room to work
    assert len(results) == 9
    for name, (kind, message, stderr) in results.items():
        text = one_line(stderr) if kind == "returned" else message
        assert kind in ("LimitExceededError", "returned"), (name, kind, text)
        assert "builtins.bytearray(17179869184)" in text and "MAX_PICKLE_CALL_BYTES" in text, (name, text)
        if kind == "returned":  # a command-line tool: exit code 2 and its one line
            assert message == "2" and text.startswith("error: refusing to load"), (name, text)


@pytest.mark.parametrize(
    "call, needle",
    [
        (Call(bytearray, 2**34), "builtins.bytearray(17179869184), which would allocate 16.0 GiB"),
        (Call(torch.FloatTensor, 2**32), "torch.FloatTensor(4294967296), which would allocate 16.0 GiB"),
        (Call(torch.UntypedStorage, 2**34), "torch.storage.UntypedStorage(17179869184)"),
        (Call(torch.zeros(3).__class__, 2**31), "torch.Tensor(2147483648)"),
    ],
)
def test_torch_constructors_with_a_size_are_refused(tmp_path, call, needle):
    path = _model_file_with(tmp_path / "f.pt", call)
    with pytest.raises(LimitExceededError) as e:
        load_torch_file(path, "model file")
    assert needle in one_line(str(e.value)) and "f.pt" in str(e.value)


def test_small_allocations_and_plain_bytearrays_still_load(tmp_path):
    path = tmp_path / "ok.pt"
    torch.save({"b": bytearray(b"abc"), "n": Call(bytearray, 1000)}, str(path))
    loaded = load_torch_file(str(path))
    assert loaded == {"b": bytearray(b"abc"), "n": bytearray(1000)}


def _rewrite_pickle(source, target, old: bytes, new: bytes) -> None:
    """A copy of a zip-format .pt whose data.pkl has ``old`` replaced by ``new``; every
    record's CRC is recomputed (a crafted file, not a damaged one)."""
    with zipfile.ZipFile(source) as z:
        records = {info.filename: z.read(info) for info in z.infolist()}
    name = next(n for n in records if n.endswith("/data.pkl"))
    assert old in records[name]
    records[name] = records[name].replace(old, new, 1)
    with zipfile.ZipFile(target, "w") as out:
        for key, data in records.items():
            out.writestr(key, data)


def test_a_tensor_view_larger_than_its_storage_is_refused(tmp_path):
    # torch's set_ grows a storage to fit its view: (2**30,) on 16 stored bytes asks 4 GiB.
    torch.save(torch.arange(4.0), str(tmp_path / "v.pt"))
    _rewrite_pickle(tmp_path / "v.pt", tmp_path / "big.pt", b"K\x04\x85", b"J\x00\x00\x00\x40\x85")
    with pytest.raises(LimitExceededError) as e:
        load_torch_file(str(tmp_path / "big.pt"))
    assert "a tensor of size [1073741824] needs 4.0 GiB but its stored data (data/0) holds 16 bytes" in str(e.value)


class Sub(torch.Tensor):
    """A tensor subclass: torch pickles it as _rebuild_from_type_v2(_rebuild_tensor_v2, ...)."""


def test_an_oversized_view_inside_a_subclass_rebuild_is_refused(tmp_path):
    torch.save({"t": torch.arange(4.0).as_subclass(Sub)}, str(tmp_path / "s.pt"))
    _rewrite_pickle(tmp_path / "s.pt", tmp_path / "big.pt", b"K\x04\x85", b"J\x00\x00\x00\x40\x85")
    with pytest.raises(LimitExceededError, match=r"a tensor of size \[1073741824\] needs 4.0 GiB"):
        load_torch_file(str(tmp_path / "big.pt"))


def test_a_storage_declaring_more_than_its_record_is_refused(tmp_path):
    torch.save(torch.arange(4.0), str(tmp_path / "v.pt"))
    # the storage's numel (4 -> 2**30) follows 'cpu' in the persistent id
    _rewrite_pickle(tmp_path / "v.pt", tmp_path / "big.pt", b"cpuq\x04K\x04", b"cpuq\x04J\x00\x00\x00\x40")
    with pytest.raises(LimitExceededError, match=r"a storage declares 4.0 GiB but its record .*data/0 holds 16 bytes"):
        load_torch_file(str(tmp_path / "big.pt"))


def test_a_legacy_file_declaring_storages_it_does_not_hold_is_refused(tmp_path):
    # The pre-1.6 format allocates each storage from its declared size before reading it.
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.arange(4.0)}, str(path), _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    at = raw.index(b"K\x04", raw.index(b"X\x03\x00\x00\x00cpu"))
    path.write_bytes(raw[:at] + b"J\xff\xff\xff\x7f" + raw[at + 2 :])  # numel 4 -> 2**31 - 1
    with pytest.raises(LimitExceededError, match=r"its tensors declare 8.0 GiB of data but only 24 bytes follow"):
        load_torch_file(str(path))


def test_a_pickle_that_builds_far_more_objects_than_its_bytes_is_refused(tmp_path, monkeypatch):
    # 100,000 empty sets kept in a list: ~22 MB of Python objects from 100 KB of pickle.
    body = b"\x80\x04]q\x00(" + b"\x8f" * 100_000 + b"e."
    assert len(pickle.loads(body)) == 100_000  # a valid pickle
    path = tmp_path / "sets.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("sets/data.pkl", body)
        z.writestr("sets/version", "3\n")
    monkeypatch.setattr(limits, "MAX_PICKLE_OBJECT_BYTES", 8 << 20)
    with pytest.raises(LimitExceededError, match="its pickle would build more than 8.0 MiB of Python objects"):
        load_torch_file(str(path))


def test_a_zip_bomb_record_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    torch.save({"w": torch.zeros(1 << 20, dtype=torch.uint8)}, str(tmp_path / "z.pt"))
    with zipfile.ZipFile(tmp_path / "z.pt") as z:
        records = {i.filename: z.read(i) for i in z.infolist()}
    with zipfile.ZipFile(tmp_path / "bomb.pt", "w", compression=zipfile.ZIP_DEFLATED) as out:
        for key, data in records.items():
            out.writestr(key, data)
    size = os.path.getsize(tmp_path / "bomb.pt")
    assert size < 10_000  # 1 MiB of zeros deflated
    monkeypatch.setattr(limits, "ARCHIVE_EXPANSION_ALLOWANCE", 64 << 10)
    with pytest.raises(LimitExceededError, match="as a zip bomb does"):
        load_torch_file(str(tmp_path / "bomb.pt"))


def test_torchscript_and_tar_files_are_named(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated and says so
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "prog.pt"))
    with pytest.raises(UnreadableFileError, match="prog.pt: it is a TorchScript program, not a data file"):
        load_torch_file(str(tmp_path / "prog.pt"))
    import tarfile

    with tarfile.open(tmp_path / "old.pt", "w") as tar:
        tar.add(str(tmp_path / "prog.pt"), arcname="pickle")
    with pytest.raises(UnreadableFileError, match="a PyTorch < 0.4 tar file"):
        load_torch_file(str(tmp_path / "old.pt"))


# ----------------------------------------------------------------------------- the converter
def _dag(levels: int, leaf):
    node = [leaf]
    for _ in range(levels):
        node = [node, node]
    return node


def test_the_converter_visits_a_2_40_dag_once(tmp_path, capsys):
    old, new = tmp_path / "dag.pt", tmp_path / "new.pt"
    torch.save({"tree": _dag(40, Foreign(7))}, str(old))
    assert os.path.getsize(old) < 2000  # the pickle is ~740 bytes; the zip adds its directory
    start = time.monotonic()
    assert convert_cli.main([str(old), str(new)]) == 0
    assert time.monotonic() - start < 30  # walked naively: 2^40 visits, days
    assert "converted: 1 test_trust_files_pickles.Foreign" in capsys.readouterr().out
    tree = torch.load(str(new), weights_only=True)["tree"]
    for _ in range(40):  # the shape is kept, and shared parts are still one object
        assert tree[0] is tree[1]
        tree = tree[0]
    assert tree == [{"value": 7}]


def test_self_references_and_deep_nesting_are_one_line(tmp_path, capsys):
    loop = [Foreign(1)]
    loop.append(loop)
    torch.save({"loop": loop}, str(tmp_path / "loop.pt"))
    assert convert_cli.main([str(tmp_path / "loop.pt"), str(tmp_path / "a.pt")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "loop.pt['loop'][1] contains itself (a cycle)" in line and not (tmp_path / "a.pt").exists()

    deep = Foreign(2)
    for _ in range(limits.MAX_NESTING_DEPTH + 50):
        deep = [deep]
    torch.save({"deep": deep}, str(tmp_path / "deep.pt"))
    assert convert_cli.main([str(tmp_path / "deep.pt"), str(tmp_path / "b.pt")]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"is nested more than {limits.MAX_NESTING_DEPTH} levels deep" in line and "RecursionError" not in line


def test_plain_data_keeps_sharing_and_names_a_cycle():
    shared = {"w": torch.ones(2)}
    dag = _dag(60, shared)
    out = plain_data({"d": dag, "c": collections.OrderedDict(a=1)})
    assert out["d"] is dag  # nothing to change: returned as it is, in linear time
    loop = []
    loop.append(loop)
    with pytest.raises(TypeError, match=r"x\[0\] contains itself"):
        plain_data(loop, "x")
