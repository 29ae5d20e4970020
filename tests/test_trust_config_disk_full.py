"""A full disk during a checkpoint save is one line naming the file (the previous checkpoint
intact, the temporary file removed), not a traceback from torch's zip writer.

The disk is "filled" without privileges: RLIMIT_FSIZE caps the size of any file this process
writes, and with SIGXFSZ ignored a write past it fails with EFBIG ("file too large"), which
is what the code sees of ENOSPC too: an OSError from ``write``."""

import contextlib
import os
import resource
import signal

import pytest
import torch
from trust_helpers import one_line, reid_train_args

from reid_srdl.cli import train as train_cli
from reid_srdl.core import checkpoint as ckpt
from reid_srdl.core.files import OutputPathError, write_bytes_atomic

pytestmark = pytest.mark.usefixtures("single_thread")

LIMIT = 256 * 1024  # bytes per file: config.yaml (2 kB) fits, a checkpoint (1.3 MB) does not


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes of any file fail with EFBIG while the block runs."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_checkpoint_that_does_not_fit_leaves_the_previous_one(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.atomic_save({"epoch": 1, "w": torch.zeros(10)}, str(path))
    before = path.read_bytes()
    with file_size_limit(LIMIT), pytest.raises(OutputPathError) as e:
        ckpt.atomic_save({"epoch": 2, "w": torch.zeros(LIMIT)}, str(path))  # 1 MB of float32
    assert str(e.value) == f"cannot write {path}: file too large; the previous last.pt is intact"
    assert path.read_bytes() == before  # still loads as epoch 1
    assert ckpt.load_plain_file(str(path), "training state")["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]  # the temporary file is gone


def test_any_atomic_write_that_does_not_fit_is_one_line(tmp_path):
    path = tmp_path / "metrics.json"
    with file_size_limit(LIMIT), pytest.raises(OutputPathError) as e:
        write_bytes_atomic(str(path), b"x" * (2 * LIMIT))
    assert str(e.value) == f"cannot write {path}: file too large; no metrics.json was written"
    assert os.listdir(tmp_path) == []


def test_training_on_a_full_disk_stops_in_one_line(tiny_market_root, tmp_path, capsys):
    out = tmp_path / "runs"
    args = reid_train_args(tiny_market_root, out, "train.run_name=run", "train.max_batches=1")
    with file_size_limit(LIMIT):
        code = train_cli.main(args)
    assert code == 2
    line = one_line(capsys.readouterr().err)
    run = out / "run"
    assert line == f"error: cannot write {run / 'last.pt'}: file too large; no last.pt was written; free some space"
    assert sorted(os.listdir(run)) == ["config.yaml"]  # no temporary file, no lock left behind
