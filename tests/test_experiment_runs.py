"""The experiment scripts' run cache (benchmarks/experiment_runs.py): a finished run is reused
only with the settings it was trained with, read back from its saved config.yaml."""

import json
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


def test_options_of_methods_the_run_does_not_use_are_ignored(tmp_path):
    # An older BYOT run saved ONE's old default ramp (80 epochs): it is still this BYOT run.
    run_dir = tmp_path / "byot_seed0"
    run_dir.mkdir()
    save_config(load_config(None, [*OVERRIDES, "method.one.ramp_epochs=80"]), str(run_dir / "config.yaml"))
    assert _check_in_fresh_process(run_dir, OVERRIDES).returncode == 0
    # Its own method's options still count.
    result = _check_in_fresh_process(run_dir, [*OVERRIDES, "method.byot.alpha=0.5"])
    assert result.returncode == 1 and "method.byot: {" in result.stderr and "'alpha': 0.3" in result.stderr


def _bench(module):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        return __import__(module)
    finally:
        sys.path.pop(0)


def test_hand_written_notes_survive_a_rewrite_of_the_table(tmp_path):
    runs = _bench("experiment_runs")
    table = tmp_path / "table.md"
    assert runs.kept_notes(str(table)) == []  # no file yet
    note = f"{runs.NOTES_BEGIN}\nMachines: seeds 0-1 on an Intel Xeon.\n{runs.NOTES_END}"
    table.write_text(f"# old table\n\n{note}\n\n| a | b |\n")
    kept = runs.kept_notes(str(table))
    assert kept == [runs.NOTES_BEGIN, "Machines: seeds 0-1 on an Intel Xeon.", runs.NOTES_END, ""]
    table.write_text("# a table whose notes were deleted by hand\n")
    assert runs.kept_notes(str(table)) == []


def test_machines_line_groups_runs_by_the_cpu_their_metrics_name(tmp_path):
    import json

    runs = _bench("experiment_runs")
    cpus = {"one_seed0": "AMD EPYC", "one_seed1": "AMD EPYC", "vanilla_seed0": None, "vanilla_seed1": "AMD EPYC"}
    for name, cpu in cpus.items():
        (tmp_path / name).mkdir()
        metrics = {"results": {}} if cpu is None else {"environment": {"cpu": cpu}, "results": {}}
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    line = runs.machines_line(str(tmp_path), [*cpus, "one_seed2"])  # one_seed2: not trained yet
    assert line == (
        "CPUs (from each run's metrics.json): AMD EPYC: one seeds 0 1, vanilla seeds 1; not recorded: vanilla seeds 0."
    )


def test_a_kd_run_whose_finished_teacher_lost_its_network_stops_before_training(tmp_path):
    fm = _bench("fashion_mnist_methods")

    class Args:
        variants, seeds, model, teacher_model = ["vanilla", "kd"], [0, 1], "resnet8", "resnet8"
        root, subset, batch_size, workers, epochs, precision, out = "/x", 100, 32, 0, 4, "fp32", str(tmp_path)

    plan = fm.planned_runs(Args)
    deps = {name: d for name, _o, d in plan}
    # the teacher is its own run, not the cross-entropy run of the table
    assert deps["kd_seed0"] == ["teacher_resnet8_seed0"] and deps["kd_seed1"] == ["teacher_resnet8_seed1"]
    teacher_over = dict(o.split("=", 1) for o in next(o for n, o, _d in plan if n == "teacher_resnet8_seed1"))
    assert teacher_over["method.name"] == "vanilla" and teacher_over["train.seed"] == "1"
    fm.check_teachers(Args, plan)  # nothing trained yet: fine
    (tmp_path / "teacher_resnet8_seed1").mkdir()
    (tmp_path / "teacher_resnet8_seed1" / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit, match="kd_seed1 needs the network of its teacher .*teacher_resnet8_seed1.*final.pt"):
        fm.check_teachers(Args, plan)
    (tmp_path / "teacher_resnet8_seed1" / "final.pt").write_bytes(b"")
    fm.check_teachers(Args, plan)  # the network is there


def _saved_in(tmp_path, checkout, name):
    run_dir = tmp_path / name
    run_dir.mkdir()
    results = os.path.join(checkout, "benchmarks", "results", "recipe")
    over = [*OVERRIDES, f"data.root={results}/data", f"train.output_dir={results}"]
    save_config(load_config(None, over), str(run_dir / "config.yaml"))
    return run_dir


def test_a_run_trained_in_another_checkout_is_reused_where_its_data_moved_with_it(tmp_path):
    # trained in a frozen worktree, copied into this checkout: its paths name the worktree
    run_dir = _saved_in(tmp_path, "/work/frozen", "moved")
    here = os.path.join(REPO, "benchmarks", "results", "recipe")
    result = _check_in_fresh_process(run_dir, [*OVERRIDES, f"data.root={here}/data", f"train.output_dir={here}"])
    assert result.returncode == 0, result.stderr
    # the same run asked with data somewhere else is not the same run
    result = _check_in_fresh_process(run_dir, [*OVERRIDES, "data.root=/data/other", f"train.output_dir={here}"])
    assert result.returncode == 1
    assert "data.root: 'benchmarks/results/recipe/data' there, '/data/other' asked" in result.stderr


def test_recipe_figures_are_computed_from_the_summary_rows():
    recipe = _bench("recipe_synthetic")
    rows = {
        "m/vanilla/ce": [{"rank1": 0.5}, {"rank1": 0.6}, {"rank1": 0.7}],
        "m/vanilla/bot_sgd": [{"rank1": 0.6}, {"rank1": 0.6}, {"rank1": 0.8}],
        "m/srdl/ce": [{"rank1": 0.45}, {"rank1": 0.55}, {"rank1": 0.65}],
    }
    lines = recipe.comparisons(rows)
    # bot_sgd - ce per seed: +10, 0, +10 points: mean 20/3 = 6.67, std 5.77, t(0.975, 2) = 4.303,
    # half-width 4.303 * 5.77 / sqrt(3) = 14.34 -> [-7.7, +21.0].
    assert "- bot_sgd minus ce (vanilla), rank1: m +6.7 [-7.7, +21.0]" in lines
    # srdl - vanilla with ce: -5 on every seed: no spread, the interval is the point.
    assert "- srdl minus vanilla with ce, rank1: m -5.0 [-5.0, -5.0]" in lines
    assert recipe.paired_points([0.1481], [0.0]) == "+14.8"  # one seed: no interval
    # The committed study: README once typed these two as +0.2 and -12.2 (means +0.148, -12.148).
    with open(os.path.join(REPO, "benchmarks", "results", "recipe_synthetic_summary.json")) as f:
        lines = recipe.comparisons(json.load(f)["rows"])
    assert "osnet_x0_25 +0.1 [-37.7, +38.0]" in lines[1] and "small_reid -12.1 [-22.0, -2.3]" in lines[2]
