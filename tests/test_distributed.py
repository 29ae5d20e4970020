"""Distributed training (gloo on CPU) on the tiny synthetic Market-1501 set.

* 2 processes x 4 images == 1 process x 8 images (same global batch, same DistributedSampler
  permutation, same random augmentation of every sample: it is seeded per sample, not per
  process).  The equality is exact up to float summation order only when nothing in the
  step depends on how the global batch is split: BatchNorm normalises each process' share
  with its own statistics (CPU has no SyncBatchNorm), so the BN layers are replaced by
  identities here; the tolerance is 1e-5 on weights that moved by > 1e-3.
* the sharded, gathered SRDL logit bank and evaluation features equal a plain extraction.
* torchrun end to end (SRDL, both stages, evaluation): rank 0 alone writes the run folder.
* bad launches end with a clear error within the timeout.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
from tiny_runs import free_port, reid_config, reid_overrides

from reid_srdl.core import distributed as ddp
from reid_srdl.engine.trainer import Trainer, build_optimizer
from reid_srdl.inference.features import extract_features, sharded_feature_extractor
from reid_srdl.methods.srdl import extract_logits, sharded_logits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "tools", "train.py")


def strip_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            strip_batchnorm(child)


def _worker(rank, world, port, root, out, result):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    ddp.init_distributed(60, use_cuda=False)
    try:
        cfg = reid_config(root, out, "method.name=vanilla", "train.epochs=2", "optim.lr=0.02", "train.device=cpu")
        trainer = Trainer(cfg, os.path.join(out, "run"))
        # Make the step independent of how the global batch is split (see the module doc);
        # the random training augmentation stays.
        strip_batchnorm(trainer.method.trainable)
        initial = {k: v.clone() for k, v in trainer.method.trainable.state_dict().items()}
        records = []
        trainer.optimizer = build_optimizer(trainer.method.trainable, cfg.optim)
        for epoch in range(cfg.train.epochs):
            records.append(trainer.train_epoch(epoch))
        model = trainer.method.trainable
        logits, _labels = sharded_logits(model, trainer.data.train_eval_loader, torch.device("cpu"), progress=False)
        feats = sharded_feature_extractor()(model, trainer.data.gallery.loader)
        torch.save(
            {
                "initial": initial,
                "state": model.state_dict(),
                "records": records,
                "logits": logits,
                "feats": feats,
                "per_process_batch": trainer.data.train_loader.batch_size,
            },
            f"{result}.rank{rank}.pt",
        )
    finally:
        ddp.shutdown()


def run_workers(world, root, out):
    result = os.path.join(out, "result")
    mp.start_processes(
        _worker, args=(world, free_port(), root, out, result), nprocs=world, join=True, start_method="fork"
    )
    return [torch.load(f"{result}.rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def one_and_two(tiny_market_root, tmp_path_factory):
    one = run_workers(1, tiny_market_root, str(tmp_path_factory.mktemp("world1")))
    two = run_workers(2, tiny_market_root, str(tmp_path_factory.mktemp("world2")))
    return one, two


def test_two_processes_of_4_train_like_one_process_of_8(one_and_two):
    (single,), (r0, r1) = one_and_two
    assert (single["per_process_batch"], r0["per_process_batch"]) == (8, 4)
    moved = max((single["state"][k] - single["initial"][k]).abs().max().item() for k in single["state"])
    assert moved > 1e-3
    for key, value in single["state"].items():
        # DDP keeps the replicas identical, bit for bit.
        assert torch.equal(r0["state"][key], r1["state"][key]), key
        torch.testing.assert_close(r0["state"][key], value, rtol=0, atol=1e-5, msg=key)
    # Logged epoch means cover the whole global batch, not rank 0's half.
    for a, b in zip(single["records"], r0["records"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1e-9)


def test_sharded_logits_and_features_equal_a_plain_extraction(one_and_two, tiny_market_root, tmp_path):
    _, (r0, r1) = one_and_two
    cfg = reid_config(tiny_market_root, tmp_path, "method.name=vanilla", "train.epochs=2", "train.device=cpu")
    trainer = Trainer(cfg, os.path.join(str(tmp_path), "run"))
    strip_batchnorm(trainer.method.trainable)
    trainer.method.trainable.load_state_dict(r0["state"])
    loader = trainer.data.train_eval_loader
    expected = extract_logits(trainer.method.trainable, loader, len(loader.dataset), "cpu", progress=False)
    torch.testing.assert_close(r0["logits"], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(r1["logits"], r0["logits"], rtol=0, atol=0)
    feats = extract_features(trainer.method.trainable, trainer.data.gallery.loader)
    np.testing.assert_allclose(r0["feats"], feats, rtol=0, atol=1e-5)


def _torchrun(nproc, root, out, *extra, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}",
        TRAIN,
        *reid_overrides(root, out, epochs=2, max_batches=2),
        "train.device=cpu",
        *extra,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_torchrun_srdl_end_to_end(tiny_market_root, tmp_path):
    proc = _torchrun(2, tiny_market_root, str(tmp_path), "method.name=srdl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "run"
    assert proc.stdout.count("run directory:") == 1  # printed by rank 0 only
    assert "(2 processes, gloo)" in proc.stdout
    for name in ("config.yaml", "last.pt", "final.pt", "stage1.pt", "stage1_logits.pt", "metrics.json"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp*"))
    lines = (run / "metrics.jsonl").read_text().strip().splitlines()
    assert len(lines) == 2  # one line per epoch, not one per rank
    # The gathered bank is the stage-1 network's logits of every training sample, in order.
    from reid_srdl import load_config
    from reid_srdl.data import build_data
    from reid_srdl.models.model_file import load_model_file

    cfg = load_config(str(run / "config.yaml"))
    data = build_data(cfg.data)
    stage1, _ = load_model_file(str(run / "stage1.pt"))
    expected = extract_logits(stage1, data.train_eval_loader, data.num_train, "cpu", progress=False)
    bank = torch.load(run / "stage1_logits.pt", weights_only=True)["logits"]
    torch.testing.assert_close(bank, expected, rtol=0, atol=1e-5)


def _launch_by_hand(rank, world, port, tmp_path, timeout_s="2"):
    env = dict(
        os.environ,
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        REID_SRDL_DIST_TIMEOUT=timeout_s,
        OMP_NUM_THREADS="1",
    )
    return subprocess.Popen(
        [sys.executable, TRAIN, "train.device=cpu", f"train.output_dir={tmp_path}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_missing_rank_fails_within_the_timeout_with_a_clear_message(tmp_path):
    # WORLD_SIZE=2 but only rank 0 is started: it must not wait forever for rank 1.
    start = time.time()
    proc = _launch_by_hand(0, 2, free_port(), tmp_path)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert time.time() - start < 40
    assert err.strip().splitlines()[-1].startswith("error: distributed rendezvous failed within 2s")
    for name in ("MASTER_ADDR=127.0.0.1", "MASTER_PORT=", "RANK=0", "WORLD_SIZE=2"):
        assert name in err
    assert "Traceback" not in err and "frame #" not in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_unreachable_master_fails_within_the_timeout(tmp_path):
    proc = _launch_by_hand(1, 2, free_port(), tmp_path)  # nobody listens on that port
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "RANK=1 WORLD_SIZE=2" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=2 is outside 0..WORLD_SIZE-1"),
        (
            {"RANK": "0", "WORLD_SIZE": "two", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
            "WORLD_SIZE='two' is not an integer",
        ),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "MASTER_PORT is not set"),
        ({"WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK is not set"),
    ],
)
def test_bad_launch_variables_are_named(env, message):
    with pytest.raises(ddp.DistributedSetupError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ddp.read_launch_env(env)


def test_timeout_from_environment_overrides_config():
    assert ddp.resolve_timeout(300.0, {}) == 300.0
    assert ddp.resolve_timeout(300.0, {ddp.TIMEOUT_ENV: "7.5"}) == 7.5
    with pytest.raises(ddp.DistributedSetupError, match="REID_SRDL_DIST_TIMEOUT='soon'"):
        ddp.resolve_timeout(300.0, {ddp.TIMEOUT_ENV: "soon"})


def test_global_batch_must_divide_among_processes(tiny_market_root, tmp_path):
    from reid_srdl.config import ConfigError
    from reid_srdl.data import build_data
    from reid_srdl.data.build import distributed_train_loader

    cfg = reid_config(tiny_market_root, tmp_path, "data.batch_size=6")
    loader = build_data(cfg.data).train_loader
    with pytest.raises(ConfigError, match="data.batch_size=6 is the global batch .* 4 processes"):
        distributed_train_loader(loader, 0, 4, seed=0)
    # Ranks take alternate positions of one permutation: together they cover it once.
    a, b = (list(distributed_train_loader(loader, r, 2, seed=3).sampler) for r in (0, 1))
    assert len(a) == len(b) and {i for i, _ in a} | {i for i, _ in b} == set(range(len(loader.dataset)))
    assert {s for _, s in a} == {s for _, s in b} and len({s for _, s in a}) == 1  # one epoch seed for all ranks
