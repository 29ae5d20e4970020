"""Multi-source training (Market-1501 + DukeMTMC-reID, labels 0-3 and 4-7): every method runs on
it, SRDL's logit bank is indexed by the combined set, a resumed run ends with the same weights,
and a 2-process DDP run (gloo on CPU) gathers the same bank."""

import json
import os

import pytest
import torch
import torch.multiprocessing as mp
from method_contracts import contract_of
from tiny_runs import DUKE_COUNTS, MARKET_TRAIN_IDS, free_port, interrupted_then_resumed, reid_config

from reid_srdl import load_config
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.core import distributed as ddp
from reid_srdl.data import build_data
from reid_srdl.data.indexed import read_rgb_image
from reid_srdl.data.market1501 import read_market1501
from reid_srdl.data.transforms import reid_test_transform
from reid_srdl.engine.trainer import Trainer
from reid_srdl.methods import METHODS
from reid_srdl.methods.srdl import extract_logits
from reid_srdl.models import build_model
from reid_srdl.models.model_file import load_model_file

pytestmark = pytest.mark.usefixtures("single_thread")

NUM_CLASSES = MARKET_TRAIN_IDS + DUKE_COUNTS["train"][1]  # 4 + 4
SOURCES = "data.sources=[market1501,dukemtmcreid]"


def multi_cfg(root, out, *extra):
    return reid_config(root, out, SOURCES, *extra, epochs=2, max_batches=2)


def _run_dir(cfg):
    return os.path.join(cfg.train.output_dir, cfg.train.run_name)


@pytest.fixture(scope="module")
def kd_teacher(tmp_path_factory):
    """A frozen teacher with the combined set's 8 classes."""
    torch.manual_seed(3)
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.pt")
    ckpt.save_model_file(build_model("small_reid", NUM_CLASSES, feature_dim=32), path, task="reid")
    return path


# Lighter settings of the same formulas, so that a run costs less.
LIGHTER = {"one": ["method.one.branches=2"], "frskd": ["method.frskd.bifpn=uniform", "method.frskd.width=16"]}


@pytest.mark.parametrize("method", METHODS.list())
def test_every_method_trains_on_two_sources(tiny_reid_root, tmp_path, kd_teacher, method):
    more = [f"method.{method}.teacher={kd_teacher}"] if contract_of(method).teacher else []
    cfg = multi_cfg(
        tiny_reid_root,
        tmp_path,
        f"method.name={method}",
        "train.max_batches=1",
        f"train.epochs={getattr(METHODS.get(method), 'min_epochs', 1)}",
        "data.targets=[dukemtmcreid]",
        "eval.multi_query=false",
        *LIGHTER.get(method, []),
        *more,
    )
    trainer = Trainer(cfg, _run_dir(cfg))
    assert trainer.data.num_classes == NUM_CLASSES
    summary = trainer.fit()
    assert summary["data"] == "market1501+dukemtmcreid" and summary["num_classes"] == NUM_CLASSES
    deployed = trainer.method.deploy().eval()
    with torch.no_grad():
        logits, _features = deployed(torch.randn(2, 3, 64, 32))
    assert logits.shape == (2, NUM_CLASSES)
    sq = summary["results"]["deployed"]["single_query"]
    assert sq["num_queries"] == DUKE_COUNTS["query"][0] and 0.0 <= sq["mAP"] <= 1.0


def test_srdl_logit_bank_covers_both_sources_in_index_order(tiny_reid_root, tmp_path):
    cfg = multi_cfg(tiny_reid_root, tmp_path, "method.name=srdl")
    trainer = Trainer(cfg, _run_dir(cfg))
    trainer.fit()
    bank = torch.load(os.path.join(trainer.run_dir, "stage1_logits.pt"), weights_only=True)["logits"]
    samples = trainer.data.train_eval_loader.dataset.dataset.samples
    n_duke = DUKE_COUNTS["train"][0]
    assert bank.shape == (len(samples), NUM_CLASSES) and sum("dukemtmc-reid" in p for p, _ in samples) == n_duke
    # Row i is the stage-1 network's logits of sample i: checked on images decoded by hand,
    # one per source, the Duke one with its offset label.
    stage1, _ = load_model_file(os.path.join(trainer.run_dir, "stage1.pt"))
    tf = reid_test_transform(64, 32)
    for i in (0, len(samples) - 1):
        path, label = samples[i]
        assert (label >= MARKET_TRAIN_IDS) == ("dukemtmc-reid" in path)
        with torch.no_grad():
            expected = stage1(tf(read_rgb_image(path))[None])[0][0]
        torch.testing.assert_close(bank[i], expected, rtol=0, atol=1e-5)


def test_resumed_multi_source_run_ends_with_the_same_weights(tiny_reid_root, tmp_path, monkeypatch):
    reference = multi_cfg(tiny_reid_root, tmp_path / "ref", "method.name=srdl")
    uninterrupted = Trainer(reference, _run_dir(reference))
    uninterrupted.fit()
    # Stopped at the stage boundary: the bank, the restart and the combined sampler all resume.
    resumed = interrupted_then_resumed(multi_cfg(tiny_reid_root, tmp_path / "res", "method.name=srdl"), 1, monkeypatch)
    ref_state = uninterrupted.method.trainable.state_dict()
    for k, v in resumed.method.trainable.state_dict().items():
        assert torch.equal(v, ref_state[k]), k


def _fit_worker(rank, world, port, root, out):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    ddp.init_distributed(60, use_cuda=False)
    try:
        cfg = multi_cfg(root, out, "method.name=srdl", "train.device=cpu", "data.targets=[dukemtmcreid,market1501]")
        Trainer(cfg, _run_dir(cfg)).fit()
    finally:
        ddp.shutdown()


def test_two_processes_on_two_sources(tiny_reid_root, tmp_path):
    """What torchrun runs, in 2 forked gloo processes: SRDL's whole run, rank 0 writing."""
    mp.start_processes(
        _fit_worker, args=(2, free_port(), tiny_reid_root, str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    run = tmp_path / "run"
    with open(run / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["num_classes"] == NUM_CLASSES and metrics["targets"] == ["dukemtmcreid", "market1501"]
    assert "mean/single_query" in metrics["results"]["deployed"]
    # The bank gathered from both ranks is a plain extraction by the stage-1 network.
    cfg = load_config(str(run / "config.yaml"))
    data = build_data(cfg.data)
    n_market = len(read_market1501(tiny_reid_root).train)
    assert data.num_train == metrics["num_train"] == n_market + DUKE_COUNTS["train"][0]
    stage1, _ = load_model_file(str(run / "stage1.pt"))
    expected = extract_logits(stage1, data.train_eval_loader, data.num_train, "cpu", progress=False)
    bank = torch.load(run / "stage1_logits.pt", weights_only=True)["logits"]
    torch.testing.assert_close(bank, expected, rtol=0, atol=1e-5)


def test_a_run_saved_before_the_new_data_keys_still_resumes(tiny_reid_root, tmp_path, monkeypatch):
    """last.pt of an older version has no data.sources/targets/split_id/cuhk03_* keys."""
    cfg = load_config(
        None,
        [
            f"data.root={tiny_reid_root}",
            "data.synthetic=false",
            "data.height=64",
            "data.width=32",
            "data.batch_size=8",
            "data.workers=0",
            "model.feature_dim=32",
            "method.name=vanilla",
            "train.epochs=2",
            "train.max_batches=1",
            "train.progress=false",
            "train.precision=fp32",
            "train.tensorboard=false",
            f"train.output_dir={tmp_path}",
            "train.run_name=run",
            "eval.plot=false",
        ],
    )
    run_dir = _run_dir(cfg)
    trainer = Trainer(cfg, run_dir)
    trainer.optimizer = None
    trainer.loop.save(0)
    path = os.path.join(run_dir, ckpt.LAST_FILE)
    state = torch.load(path, weights_only=True)
    for key in ("sources", "targets", "split_id", "cuhk03_labeled", "cuhk03_classic_split"):
        del state["config"]["data"][key]
    ckpt.atomic_save(state, path)
    assert Trainer(cfg, run_dir, resume=True).run.state.start_epoch == 0
    state["config"]["data"]["batch_size"] = 16  # a real difference is still refused
    ckpt.atomic_save(state, path)
    with pytest.raises(
        ckpt.CheckpointError,
        match=r"differs from the config the training state was written with \(saved -> now\): data.batch_size: 16 -> 8; restore",  # noqa: E501
    ):
        Trainer(cfg, run_dir, resume=True)
