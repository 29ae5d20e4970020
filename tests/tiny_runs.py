"""The one builder of the tiny things tests train, evaluate and load.

- In memory: ``NETS`` (a CIFAR-style ResNet-8 and the re-id ``small_reid``), :func:`batch`,
  :class:`TinySet` (random images yielding ``(image, label, index)`` as the loaders do) and
  :func:`stage_context` (what a method's stage-end hook receives).
- Configs: :func:`reid_overrides` / :func:`reid_config`, a tiny re-id training on the synthetic
  Market-1501 set; the caller's overrides come last, and a later key wins.
- On disk: :func:`write_market` and :func:`write_reid_sets` (the synthetic sets, with the counts
  they must show, worked out by hand from the writers' parameters), :func:`save_tiny_model` (a
  real model file).
- Runs: :func:`train_run` (a tiny run folder through reid-train; the ``tiny_run`` fixture of
  conftest.py caches them per session), :func:`interrupted_then_resumed`, :func:`free_port`.
"""

import functools
import os
import socket
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from reid_srdl import load_config
from reid_srdl.core import checkpoint as ckpt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------- in memory
NUM_CLASSES = 5


def _net(arch, **kwargs):
    from reid_srdl.models import build_model

    return build_model(arch, NUM_CLASSES, **kwargs)


# A CIFAR-style net (3 stages, no feature layer) and a re-id net (4 stages, BN feature layer):
# name -> (factory, input shape).
NETS = {
    "resnet8": (functools.partial(_net, "resnet8", in_channels=1), (1, 28, 28)),
    "small_reid": (functools.partial(_net, "small_reid", feature_dim=32), (3, 64, 32)),
}


def batch(name, n=8, seed=0):
    """``n`` random images of net ``name``'s input shape, labels 0..NUM_CLASSES-1 in turn, indices."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *NETS[name][1], generator=g)
    y = torch.arange(n) % NUM_CLASSES
    return x, y, torch.arange(n)


class TinySet(Dataset):
    """``n`` random images of ``shape`` with labels 0..num_classes-1 in turn, yielding
    ``(image, label, index)``.  ``TinySet(shape, n=1)`` is what the FLOP counter reads."""

    def __init__(self, shape=(1, 28, 28), n=12, num_classes=NUM_CLASSES, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, *shape, generator=g)
        self.y = torch.arange(n) % num_classes

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i]), i


def stage_context(run_dir, data, batch_size=5):
    """The context a stage-end hook gets: ``data`` behind a shuffled loader (on purpose: a
    per-sample table must be filled by index, not by position), on the CPU, no progress bar."""
    from reid_srdl.methods.base import StageContext

    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(3))
    bundle = SimpleNamespace(train_eval_loader=loader, num_train=len(data))
    return StageContext(str(run_dir), torch.device("cpu"), bundle, progress=False)


# ----------------------------------------------------------------------------- configs
# Output that nobody reads in a test: no progress bar, no TensorBoard, no plots; fp32 so that
# runs are bit-exact on any CPU.
QUIET = ["train.progress=false", "train.precision=fp32", "train.tensorboard=false", "eval.plot=false"]


def reid_overrides(root, out, *extra, epochs=4, max_batches=3, run_name="run"):
    """The overrides (and reid-train arguments) of a tiny re-id run: small_reid at 64x32 on
    the tiny synthetic set under ``root``, batches of 8, no workers, run folder out/run_name
    (``run_name=None``: the trainer names it).  ``extra`` last: a later key wins."""
    return [
        f"data.root={root}",
        "data.synthetic=false",
        "data.height=64",
        "data.width=32",
        "data.batch_size=8",
        "data.test_batch_size=32",
        "data.workers=0",
        "model.name=small_reid",
        "model.feature_dim=32",
        f"train.epochs={epochs}",
        f"train.max_batches={max_batches}",
        *QUIET,
        f"train.output_dir={out}",
        *([f"train.run_name={run_name}"] if run_name is not None else []),
        *extra,
    ]


def reid_config(root, out, *extra, **sizes):
    """The Config of :func:`reid_overrides` (``sizes``: epochs, max_batches, run_name)."""
    return load_config(None, reid_overrides(root, out, *extra, **sizes))


def run_dir_of(cfg):
    return os.path.join(cfg.train.output_dir, cfg.train.run_name)


# ----------------------------------------------------------------------------- data on disk
TINY_MARKET = dict(num_ids=8, seed=0, images_per_id_camera=3, gt_bbox_per_id_camera=2)
DUKE = dict(num_ids=8, seed=0, cameras_per_id=3, images_per_id_camera=3, num_distractors=2)
MSMT = dict(num_ids=8, seed=0, cameras_per_id=3, images_per_id_camera=3)
CUHK03 = dict(num_ids=10, seed=0, images_per_view=2, num_classic_test=3)
VIPER = dict(num_ids=10, seed=0)

# The counts each set must show, by hand from the parameters above: (images, ids, cameras).
# DukeMTMC-reID: T = Q = 4 ids, k = 3 cameras, m = 3 images, D = 2 distractors.
#   train 4*3*3 = 36 images of 4 ids on cameras 0..7 (ids 0-3 see cameras 0-2, 3-5, 6,7,0, 1-3);
#   query 4*3 = 12 images of 4 ids; gallery 4*3*2 + 2*3 = 30 images of 4 + 2 ids.
DUKE_COUNTS = {"train": (36, 4, 8), "query": (12, 4), "gallery": (30, 6)}
# MSMT17: T = Q = 4; list_train 4*3*3 - 4 = 32 (one validation image per id), list_val 4;
#   training cameras: ids 0-3 see 0-2, 3-5, 6-8, 9-11 -> 12 cameras; query 12; gallery 24.
MSMT_COUNTS = {"train": (32, 4, 12), "val": 4, "query": (12, 4), "gallery": (24, 4)}
# CUHK03: 10 people, 2 per camera pair, 2 images per view (4 per person), 2 cameras (views).
#   classic: 3 test people -> train 7 ids / 28 images, query = gallery = 12 images of 3 ids;
#   new protocol: ceil(10/2) = 5 training ids / 20 images; query 5*2 = 10; gallery 5*(4-2) = 10.
CUHK03_COUNTS = {
    True: {"train": (28, 7, 2), "query": (12, 3), "gallery": (12, 3), "splits": 20},
    False: {"train": (20, 5, 2), "query": (10, 5), "gallery": (10, 5), "splits": 1},
}
# VIPeR: 10 people -> 5 training ids (10 images), query 5 (cam_a), gallery 5 (cam_b); 20 splits.
VIPER_COUNTS = {"train": (10, 5, 2), "query": (5, 5), "gallery": (5, 5), "splits": 20}
# Market-1501 (TINY_MARKET: 8 ids): 4 training identities.
MARKET_TRAIN_IDS = TINY_MARKET["num_ids"] // 2


def write_market(root: str) -> str:
    """The tiny synthetic Market-1501 set (8 identities, ~0.2 s) under ``root``; returns ``root``."""
    from reid_srdl.data.synthetic.market import make_synthetic_market

    make_synthetic_market(root, **TINY_MARKET)
    return root


def write_reid_sets(root: str) -> str:
    """:func:`write_market` plus tiny DukeMTMC-reID, MSMT17, CUHK03 and VIPeR under one root."""
    from reid_srdl.data.synthetic.reid_sets import (
        make_synthetic_cuhk03,
        make_synthetic_duke,
        make_synthetic_msmt17,
        make_synthetic_viper,
    )

    write_market(root)
    make_synthetic_duke(root, **DUKE)
    make_synthetic_msmt17(root, **MSMT)
    make_synthetic_cuhk03(root, **CUHK03)
    make_synthetic_viper(root, **VIPER)
    return root


def counts(samples):
    """(images, identities, cameras) of a list of (path, pid, camid, ...) tuples."""
    return len(samples), len({s[1] for s in samples}), len({s[2] for s in samples})


def save_tiny_model(path, height=64, width=32, num_classes=4, seed=0) -> str:
    """A real model file (small_reid, random weights) as reid-train writes final.pt."""
    from reid_srdl.models import build_model

    torch.manual_seed(seed)
    net = build_model("small_reid", num_classes, feature_dim=16)
    ckpt.save_model_file(net, str(path), task="reid", data="market1501", method="vanilla", height=height, width=width)
    return str(path)


# ----------------------------------------------------------------------------- runs
def train_run(root, out, method, *extra, recipe="ce", teacher=None):
    """A finished tiny run of ``method`` through reid-train's main(): one epoch of two
    batches per stage, under out/run; ``recipe="bot"`` starts from the method's BoT YAML
    (configs/market1501/<method>_bot_resnet50.yaml) shrunk to the tiny set; ``teacher``: the
    run folder a KD student distils.  Returns the run folder."""
    from reid_srdl.cli import train as train_cli
    from reid_srdl.methods import METHODS

    stages = getattr(METHODS.get(method), "min_epochs", 1)  # SRDL: two stages of one epoch
    args = reid_overrides(root, out, f"method.name={method}", "eval.multi_query=false", epochs=stages, max_batches=2)
    if teacher is not None:
        args += [f"method.{method}.teacher={teacher}", f"method.{method}.teacher_model=small_reid"]
    if recipe == "bot":
        config = os.path.join(REPO, "configs", "market1501", f"{method}_bot_resnet50.yaml")
        # The BoT YAMLs name resnet50 with ImageNet weights and a 10-epoch warm-up: small_reid
        # without weights, its own feature layer (BNNeck), a 1-epoch warm-up, P x K = 2 x 4.
        args = ["--config", config, *args, "model.weights=", "model.feature_dim=0", "optim.warmup_epochs=1"]
        args += ["data.num_instances=4"]
    args += list(extra)
    code = train_cli.main(args)
    assert code == 0, f"reid-train {' '.join(args)} exited with {code}"
    return os.path.join(str(out), "run")


class Interrupt(Exception):
    pass


def interrupted_then_resumed(cfg, stop_after_epochs, monkeypatch):
    """Train, 'kill' the run after `stop_after_epochs` complete epochs, resume it to the end."""
    from reid_srdl.engine.loop import TrainingLoop
    from reid_srdl.engine.trainer import Trainer

    run_dir = run_dir_of(cfg)
    original = TrainingLoop.train_epoch

    def train_epoch(self, epoch):
        if epoch == stop_after_epochs:
            raise Interrupt
        return original(self, epoch)

    monkeypatch.setattr(TrainingLoop, "train_epoch", train_epoch)
    with pytest.raises(Interrupt):
        Trainer(cfg, run_dir).fit()
    monkeypatch.setattr(TrainingLoop, "train_epoch", original)
    state = ckpt.load_train_state(run_dir)
    assert state["epoch"] == stop_after_epochs
    trainer = Trainer(cfg, run_dir, resume=True)
    assert trainer.run.state.start_epoch == stop_after_epochs
    trainer.fit()
    return trainer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
