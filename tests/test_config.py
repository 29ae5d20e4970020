"""Config: YAML + one level of _base_, dotted overrides, strict keys and types, round trip."""

import os

import pytest
import yaml

from reid_srdl import load_config
from reid_srdl.config import ConfigError, save_config, to_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, data):
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return str(path)


def test_overrides_are_typed_by_the_schema():
    cfg = load_config(
        None, ["optim.lr=0.05", "method.srdl.temperature=4", "train.run_name=0001", "optim.milestones=[0.3, 0.6]"]
    )
    assert cfg.optim.lr == 0.05
    assert cfg.method.srdl.temperature == 4.0 and isinstance(cfg.method.srdl.temperature, float)
    assert cfg.train.run_name == "0001"  # a string field keeps the text, not int 1
    assert cfg.optim.milestones == (0.3, 0.6)
    assert cfg.optim.momentum == 0.9  # untouched default


def test_base_is_merged_and_file_then_overrides_win(tmp_path):
    write(tmp_path / "base.yaml", {"optim": {"lr": 0.2, "weight_decay": 0.001}, "train": {"epochs": 50}})
    child = write(tmp_path / "child.yaml", {"_base_": "base.yaml", "optim": {"lr": 0.3}})
    cfg = load_config(child, ["train.epochs=7"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.train.epochs) == (0.3, 0.001, 7)


def test_two_levels_of_base_are_refused(tmp_path):
    write(tmp_path / "a.yaml", {"train": {"epochs": 3}})
    write(tmp_path / "b.yaml", {"_base_": "a.yaml"})
    c = write(tmp_path / "c.yaml", {"_base_": "b.yaml"})
    with pytest.raises(ConfigError, match="only one level of _base_"):
        load_config(c)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown key 'optim.lrr'; valid keys in 'optim': lr, momentum"),
        ("optimizer.lr=1", "unknown key 'optimizer'; valid keys at the top level: data, model, method"),
        ("method.srdl.temp=2", "unknown key 'method.srdl.temp'; valid keys in 'method.srdl': temperature"),
        ("optim.lr=fast", "key 'optim.lr' expects float, got str 'fast'"),
        ("train.epochs=2.5", "key 'train.epochs' expects int, got float 2.5"),
        ("optim.nesterov=1", "key 'optim.nesterov' expects bool, got int 1"),
        ("optim.lr.x=1", "key 'optim.lr' is a value, not a section"),
        ("method.name=magic", "method.name='magic' is not one of: byot, frskd, kd, one, srdl, vanilla"),
        ("optim.milestones=[0.5, 1.5]", "fractions in \\(0, 1\\), got 1.5"),
        ("lr", "must look like section.key=value"),
        ("eval.precision=fp8", "eval.precision='fp8' is not one of: fp32, bf16, fp16, auto"),
    ],
)
def test_bad_overrides_name_the_key_and_the_valid_ones(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_unknown_key_in_yaml_file(tmp_path):
    path = write(tmp_path / "bad.yaml", {"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'.*epochs"):
        load_config(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["optim.lr=0.01", "method.name=kd", "method.kd.teacher=runs/t"])
    path = str(tmp_path / "config.yaml")
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert to_dict(again)["optim"]["milestones"] == [0.5, 0.75]


def test_demo_yaml_is_the_builtin_default():
    assert load_config(os.path.join(REPO, "configs", "demo.yaml")) == load_config()


@pytest.mark.parametrize(
    "name",
    sorted(
        os.path.relpath(os.path.join(d, f), REPO) for d, _, fs in os.walk(os.path.join(REPO, "configs")) for f in fs
    ),
)
def test_every_shipped_config_loads(name):
    cfg = load_config(os.path.join(REPO, name))
    if name.startswith(os.path.join("configs", "market1501")) and "bot_" in name:
        # BoT's published settings (reid-strong-baseline configs/softmax_triplet.yml).
        assert (cfg.data.height, cfg.data.width, cfg.data.batch_size, cfg.train.epochs) == (256, 128, 64, 120)
        assert (cfg.data.sampler, cfg.data.num_instances, cfg.data.random_erasing) == ("identity", 4, 0.5)
        assert (cfg.model.name, cfg.model.neck, cfg.model.feature_dim) == ("resnet50", "bnneck", 0)
        assert (cfg.loss.label_smoothing, cfg.loss.triplet_weight, cfg.loss.triplet_margin) == (0.1, 1.0, 0.3)
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_epochs) == (
            "adam",
            3.5e-4,
            5e-4,
            10,
        )
        assert [int(m * 120 + 1e-9) for m in cfg.optim.milestones] == [40, 70] and cfg.eval.normalize
    elif name.startswith(os.path.join("configs", "market1501")) and "base" not in name:
        assert (cfg.data.height, cfg.data.width, cfg.data.batch_size, cfg.train.epochs) == (256, 128, 32, 120)
        assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.weight_decay) == (0.1, 0.9, True, 2e-4)
    if name.startswith((os.path.join("configs", "cifar100"), os.path.join("configs", "cifar10") + os.sep)):
        assert cfg.data.batch_size == 128
        # The SRDL paper, Sec. 4.1: 200 epochs for ResNets and WRNs, 300 for DenseNet.
        assert cfg.train.epochs == (300 if cfg.model.name.startswith("densenet") else 200), name


def test_the_method_section_comes_from_the_registry_the_caller_passes():
    import dataclasses

    from reid_srdl import config
    from reid_srdl.core.registry import Registry

    @dataclasses.dataclass(frozen=True)
    class ToyOptions:
        alpha: float = 1.0

    class Toy:
        min_epochs = 3

    toys = Registry("method")
    toys.register("toy", options=ToyOptions)(Toy)
    cfg = config.load_config(None, ["method.name=toy", "method.toy.alpha=2", "train.epochs=3"], methods=toys)
    assert cfg.method.toy == ToyOptions(alpha=2.0) and [n for n, _ in cfg.method.options] == ["toy"]
    with pytest.raises(ConfigError, match=r"unknown key 'method.srdl'; valid keys in 'method': name, toy"):
        config.load_config(None, ["method.srdl.temperature=2"], methods=toys)
    with pytest.raises(ConfigError, match="method 'toy' needs train.epochs >= 3, got 2"):
        config.load_config(None, ["method.name=toy", "train.epochs=2"], methods=toys)


def test_the_config_layer_imports_no_method_and_no_model():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import reid_srdl.config\n"
        "print(sorted(m for m in sys.modules if m.startswith(('reid_srdl.methods', 'reid_srdl.models'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
