"""Config values no key can mean are refused in one line naming the key, before anything
runs: NaN and infinity in every float key (the list grows with the schema and the method
registry), values that would allocate or spawn without bound, run names that are not one
folder; and config files that are not UTF-8, too deep, too large or give a key twice."""

import dataclasses
import typing

import pytest
from trust_helpers import one_line

from reid_srdl import load_config
from reid_srdl.cli import train as train_cli
from reid_srdl.config import Config, MethodConfig, method_options
from reid_srdl.core.yaml_text import MAX_DEPTH, MAX_FILE_BYTES
from reid_srdl.methods import METHODS

pytestmark = pytest.mark.usefixtures("single_thread")


def float_keys():
    """Every float key of the schema, dotted (``loss.triplet_weight``, ``method.srdl.temperature``),
    and ``optim.milestones`` (a list of floats) as ``optim.milestones[0]``."""
    keys = []

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if tp is float:
                keys.append(prefix + f.name)
            elif typing.get_origin(tp) is tuple and typing.get_args(tp)[:1] == (float,):
                keys.append(prefix + f.name + "[0]")
            elif dataclasses.is_dataclass(tp) and tp is not MethodConfig:
                walk(tp, prefix + f.name + ".")

    walk(Config, "")
    for name, options in method_options(METHODS).items():
        walk(options, f"method.{name}.")
    return keys


def test_the_float_keys_are_found():
    keys = float_keys()
    # Checked against the schema by hand: the recipe's loss terms, the optimizer, the methods.
    for key in (
        "loss.triplet_weight",
        "loss.triplet_margin",
        "optim.lr",
        "optim.milestones[0]",
        "method.srdl.temperature",
    ):
        assert key in keys
    assert len(keys) >= 20


def _override(key: str, text: str) -> str:
    if key.endswith("[0]"):
        return f"{key[:-3]}=[{text}]"
    return f"{key}={text}"


def train_error(capsys, args) -> str:
    """reid-train's one line for ``args``; a run that got past the config would stop on
    the missing data folder instead (and never train the default demo)."""
    assert train_cli.main([*args, "data.root=/nonexistent/reid_srdl_test", "data.synthetic=false"]) == 2
    captured = capsys.readouterr()
    assert "run directory:" not in captured.out
    return one_line(captured.err)


@pytest.mark.parametrize("key", float_keys())
@pytest.mark.parametrize("text, shown", [("nan", "nan"), (".inf", "inf"), ("-inf", "-inf"), ("1e999", "inf")])
def test_every_float_key_refuses_nan_and_infinity_by_name(capsys, tmp_path, key, text, shown):
    out = tmp_path / "runs"
    line = train_error(capsys, [f"train.output_dir={out}", _override(key, text)])
    # (loss.triplet_weight=nan used to switch the triplet loss off: every comparison with NaN is false.)
    assert line == f"error: {key} must be a finite number, got {shown}"
    assert not out.exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.workers=100000", "data.workers must be in -1..128, got 100000 (-1 = auto)"),
        ("data.batch_size=99999999999999999999999", "data.batch_size must be in 1..65536, got 99999999999999999999999"),
        ("eval.max_rank=99999999999999999999", "eval.max_rank must be in 1..100000, got 99999999999999999999"),
        ("data.height=20000", "data.height must be in 1..2048, got 20000"),
        ("model.feature_dim=10000000", "model.feature_dim must be in 0..65536, got 10000000 (0 = no feature layer)"),
        ("train.epochs=10000000", "train.epochs must be in 1..100000, got 10000000"),
        ("train.dist_timeout=1e300", "train.dist_timeout must be <= 604800, got 1e+300 (seconds)"),
        ("data.num_instances=0", "data.num_instances must be in 1..65536, got 0"),
        (
            "train.run_name=..",
            "train.run_name must be one folder name (no '/'), got '..'; put the parent folder in train.output_dir",
        ),
        (
            "train.run_name=a/b",
            "train.run_name must be one folder name (no '/'), got 'a/b'; put the parent folder in train.output_dir",
        ),
        (
            "train.seed=" + "[" * 50 + "1" + "]" * 50,
            "key 'train.seed' expects int, got str '" + "[" * 50 + "1" + "]" * 5 + "...",
        ),
        ("optim.milestones={a: 1, a: 2}", "key 'optim.milestones' expects a list, got str '{a: 1, a: 2}'"),
    ],
)
def test_values_without_bound_are_one_line_before_anything_runs(capsys, tmp_path, override, message):
    out = tmp_path / "runs"
    assert train_error(capsys, [f"train.output_dir={out}", override]) == f"error: {message}"
    assert not out.exists()


# ----------------------------------------------------------------------------- config files
def _config_file_error(capsys, tmp_path, content: bytes) -> str:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    out = tmp_path / "runs"
    line = train_error(capsys, ["--config", str(path), f"train.output_dir={out}"])
    assert not out.exists()
    return line.replace(str(path), "FILE")


@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"optim:\n  lr: 0.1\n  lr: 0.2\n",
            "is not valid YAML: line 3, column 3: duplicate key 'lr' (first given on line 2)",
        ),
        (
            b"optim: {}\ntrain: {}\noptim: {lr: 0.1}\n",
            "is not valid YAML: line 3, column 1: duplicate key 'optim' (first given on line 1)",
        ),
        (
            b"method:\n  srdl: {temperature: 2, temperature: 3}\n",
            "is not valid YAML: line 2, column 26: duplicate key 'temperature' (first given on line 2)",
        ),
        (b"optim:\n  lr: 0.1\xff\n", "is not UTF-8 text (byte 0xff at offset 16)"),
        (b"\xfe\xff\x00o", "is not UTF-8 text (byte 0xfe at offset 0)"),
        (
            b"x: " + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"\n",
            f"line 1: nested deeper than {MAX_DEPTH} levels",
        ),
        (
            b"x:\n" + b"".join(b"  " * i + b"k:\n" for i in range(1, 200)),
            f"line {MAX_DEPTH + 1}: nested deeper than {MAX_DEPTH} levels",
        ),
        (b"optim:\n  lr: [0.1\ntrain: {}\n", "is not valid YAML: line 3, column 6: expected ',' or ']', but got ':'"),
        (b"optim:\n  lr: 0.1\x07\n", "is not valid YAML: special characters are not allowed (character 17)"),
        (
            b"train:\n  seed: " + b"7" * 5000 + b"\n",
            "holds a value that cannot be read: Exceeds the limit (4300 digits)",
        ),
        (b'model:\n  weights: "a\\0b"\n', None),  # checked below: a NUL byte
        (b"_base_: 5\n", "_base_ must be the path of another config file, got 5"),
    ],
)
def test_a_config_file_that_cannot_be_read_is_one_line(capsys, tmp_path, content, message):
    line = _config_file_error(capsys, tmp_path, content)
    if message is None:
        assert line == "error: model.weights must not contain a NUL byte, got 'a\\x00b'"
    elif message.startswith("_base_"):
        assert line == f"error: config file FILE: {message}"
    else:
        assert line.startswith(f"error: config file FILE {message}"), line


def test_a_config_file_larger_than_the_bound_is_refused_unread(capsys, tmp_path):
    content = b"# padding\n" * (MAX_FILE_BYTES // 10 + 1)
    line = _config_file_error(capsys, tmp_path, content)
    assert line == f"error: config file FILE is {len(content)} bytes; a config file holds at most {MAX_FILE_BYTES}"


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    # `<<` merges are not duplicates: the mapping's own key wins, as YAML specifies.
    path = tmp_path / "c.yaml"
    path.write_text("defaults: &d {lr: 0.1, momentum: 0.5}\n")
    text = "optim:\n  <<: {lr: 0.1, momentum: 0.5}\n  lr: 0.05\n"
    path.write_text(text)
    cfg = load_config(str(path))
    assert (cfg.optim.lr, cfg.optim.momentum) == (0.05, 0.5)
