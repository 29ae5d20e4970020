"""The experiment scripts' run cache (benchmarks/experiment_runs.py): a finished run is reused
only with the settings it was trained with, read back from its saved config.yaml."""

import os
import subprocess
import sys
import textwrap

import pytest

from reid_srdl.config import load_config, save_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ["method.name=byot", "method.byot.alpha=0.3", "optim.lr=0.1", "train.epochs=4"]


def _check_in_fresh_process(run_dir, overrides):
    # A fresh interpreter, two jobs checking at once, as `--jobs 2` does: the first lookup of
    # the method registry (whose options a saved config holds) happens in both threads.
    code = textwrap.dedent(
        f"""
        import sys, threading
        sys.path.insert(0, 'benchmarks')
        from experiment_runs import check_cached
        errors = []
        def check():
            try:
                check_cached({str(run_dir)!r}, {overrides!r})
            except BaseException as e:
                errors.append(e)
        threads = [threading.Thread(target=check) for _ in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        if errors:
            raise errors[0]
        """
    )
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)


@pytest.fixture
def finished_run(tmp_path):
    run_dir = tmp_path / "byot_seed0"
    run_dir.mkdir()
    save_config(load_config(None, OVERRIDES), str(run_dir / "config.yaml"))
    return run_dir


def test_a_finished_run_with_the_same_settings_is_reused(finished_run):
    result = _check_in_fresh_process(finished_run, OVERRIDES)
    assert result.returncode == 0, result.stderr


def test_a_finished_run_with_other_settings_is_named_not_reused(finished_run):
    result = _check_in_fresh_process(finished_run, [*OVERRIDES[:2], "optim.lr=0.05", OVERRIDES[3]])
    assert result.returncode == 1
    assert "optim.lr: 0.1 there, 0.05 asked" in result.stderr
