"""The experiment drivers' record (experiments/experiment_runs.py): a finished run is reused
only with the settings it was trained with, one row per run in a compact results file, and a
doc's generated block rewritten from that file alone -- checked against hand computations."""

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest

from reid_srdl import load_config
from reid_srdl.config import save_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ["method.name=byot", "method.byot.alpha=0.3", "optim.lr=0.1", "train.epochs=4"]
# pyproject's pytest pythonpath puts experiments/ on sys.path
import experiment_runs as runs


def _check_in_fresh_process(run_dir, overrides):
    # A fresh interpreter, two jobs checking at once, as `--jobs 2` does: the first lookup of
    # the method registry (whose options a saved config holds) happens in both threads.
    code = textwrap.dedent(
        f"""
        import sys, threading
        sys.path.insert(0, 'experiments')
        from experiment_runs import check_cached, guarded
        errors = []
        def check():
            try:
                check_cached({str(run_dir)!r}, {overrides!r})
            except BaseException as e:
                errors.append(e)
        def main():
            threads = [threading.Thread(target=check) for _ in range(2)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            if errors:
                raise errors[0]
        guarded(main)
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
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("error: ") and "optim.lr: 0.1 there, 0.05 asked" in line


def test_options_of_methods_the_run_does_not_use_are_ignored(tmp_path):
    # An older BYOT run saved ONE's old default ramp (80 epochs): it is still this BYOT run.
    run_dir = tmp_path / "byot_seed0"
    run_dir.mkdir()
    save_config(load_config(None, [*OVERRIDES, "method.one.ramp_epochs=80"]), str(run_dir / "config.yaml"))
    assert _check_in_fresh_process(run_dir, OVERRIDES).returncode == 0
    # Its own method's options still count.
    result = _check_in_fresh_process(run_dir, [*OVERRIDES, "method.byot.alpha=0.5"])
    assert result.returncode == 2 and "method.byot: {" in result.stderr and "'alpha': 0.3" in result.stderr


def test_a_doc_keeps_its_hand_written_text_when_a_block_is_rewritten(tmp_path):
    doc = tmp_path / "study.md"
    runs.write_section(str(doc), "series a", ["| a |", "|---|", "| 1 |"])  # a new doc: the block alone
    begin, end = runs.section_markers("series a")
    assert doc.read_text() == f"{begin}\n| a |\n|---|\n| 1 |\n{end}\n"
    doc.write_text(f"# Study\n\nMachines: seeds 0-1 on an Intel Xeon.\n\n{begin}\nold\n{end}\n\nWhat it says.\n")
    runs.write_section(str(doc), "series a", ["new", "lines"])
    runs.write_section(str(doc), "series b", ["other"])  # another series: appended at the end
    b_begin, b_end = runs.section_markers("series b")
    assert doc.read_text() == (
        f"# Study\n\nMachines: seeds 0-1 on an Intel Xeon.\n\n{begin}\nnew\nlines\n{end}\n\nWhat it says.\n"
        f"\n{b_begin}\nother\n{b_end}\n"
    )
    assert runs.read_section(str(doc), "series a") == ["new", "lines"]
    assert runs.read_section(str(doc), "series c") is None


def test_a_row_replaces_the_row_of_its_run_in_place(tmp_path):
    path = str(tmp_path / "study.jsonl")
    assert runs.read_rows(path) == []
    for series, run, value in [("s", "a_seed0", 1), ("s", "a_seed1", 2), ("t", "a_seed0", 3), ("s", "a_seed0", 4)]:
        runs.save_row(path, {"series": series, "run": run, "record": {"v": value}})
    assert [(r["series"], r["run"], r["record"]["v"]) for r in runs.read_rows(path)] == [
        ("s", "a_seed0", 4),
        ("s", "a_seed1", 2),
        ("t", "a_seed0", 3),
    ]
    assert sorted(runs.series_rows(path, "s")) == ["a_seed0", "a_seed1"]
    assert len(open(path).read().splitlines()) == 3  # one line per run


def test_machines_line_groups_runs_by_the_cpu_their_rows_name():
    cpus = {"one_seed0": "AMD EPYC", "one_seed1": "AMD EPYC", "vanilla_seed0": None, "vanilla_seed1": "AMD EPYC"}
    rows = {name: {"machine": None if cpu is None else {"cpu": cpu}} for name, cpu in cpus.items()}
    line = runs.machines_line(rows, [*cpus, "one_seed2"])  # one_seed2: not trained yet
    assert line == (
        "CPUs (from each run's metrics.json): AMD EPYC: one seeds 0 1, vanilla seeds 1; not recorded: vanilla seeds 0."
    )
    rows["one_seed1"]["machine"]["cpu_slug"] = "amd-epyc-avx2"  # the same name, no AVX-512
    assert runs.machines_line(rows, ["one_seed0", "one_seed1"]) == (
        "CPUs (from each run's metrics.json): AMD EPYC: one seeds 0; AMD EPYC (AVX2, no AVX-512): one seeds 1."
    )


def test_a_run_folder_becomes_a_row_with_its_curves_and_machine(tmp_path):
    run_dir = tmp_path / "checkout" / "experiments" / "runs" / "study" / "s" / "vanilla_seed0"
    run_dir.mkdir(parents=True)
    out = os.path.dirname(run_dir)
    save_config(load_config(None, [f"train.output_dir={out}", f"data.root={out}/data"]), str(run_dir / "config.yaml"))
    environment = {"cpu": "AMD EPYC", "cpus": 2, "torch": "2.1", "date": "2026-12-03", "commit": "abc1234"}
    (run_dir / "metrics.json").write_text(json.dumps({"environment": environment, "train_seconds": 5.0}))
    epochs = [{"stage": 1, "epoch": 1, "ce": 2.0, "train_acc": 0.1234567891}, {"stage": 1, "epoch": 2, "ce": 1.0}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    row = runs.folder_row(str(run_dir), "s", "vanilla_seed0", {"top1": 0.5})
    assert row["machine"] == {"cpu": "AMD EPYC", "cpus": 2, "torch": "2.1"}
    assert (row["date"], row["commit"], row["metrics"], row["record"]) == (
        "2026-12-03",
        "abc1234",
        {"train_seconds": 5.0},
        {"top1": 0.5},
    )
    # paths relative to the checkout the run was trained in
    assert row["settings"]["data"]["root"] == "experiments/runs/study/s/data"
    assert row["curves"] == {"stage": [1, 1], "epoch": [1, 2], "ce": [2.0, 1.0], "train_acc": [0.123457, None]}
    assert runs.epochs_of(row["curves"]) == [{**epochs[0], "train_acc": 0.123457}, epochs[1]]


def test_a_kd_run_whose_finished_teacher_lost_its_network_stops_before_training(tmp_path):
    import fashion_mnist_methods as fm

    args = types.SimpleNamespace(
        variants=["vanilla", "kd"], seeds=[0, 1], model="resnet8", teacher_model="resnet8", root="/x", subset=100,
        batch_size=32, workers=0, epochs=4, precision="fp32", runs=str(tmp_path), results=str(tmp_path / "r.jsonl"),
        one_ramp="half",
    )  # fmt: skip
    plan = fm.planned_runs(args)
    deps = {name: d for name, _o, d in plan}
    # the teacher is its own run, not the cross-entropy run of the table
    assert deps["kd_seed0"] == ["teacher_resnet8_seed0"] and deps["kd_seed1"] == ["teacher_resnet8_seed1"]
    teacher_over = dict(o.split("=", 1) for o in next(o for n, o, _d in plan if n == "teacher_resnet8_seed1"))
    assert teacher_over["method.name"] == "vanilla" and teacher_over["train.seed"] == "1"
    fm.check_teachers(args, plan, rows={})  # nothing trained yet: fine
    with pytest.raises(runs.ExperimentError, match="kd_seed1 needs the network of its teacher teacher_resnet8_seed1"):
        fm.check_teachers(args, plan, rows={"teacher_resnet8_seed1": {}})  # a row, no folder
    (tmp_path / "teacher_resnet8_seed1").mkdir()
    (tmp_path / "teacher_resnet8_seed1" / "final.pt").write_bytes(b"")
    fm.check_teachers(args, plan, rows={"teacher_resnet8_seed1": {}})  # the network is there
    fm.check_teachers(args, plan, rows={"kd_seed1": {}})  # KD itself finished: its teacher is not needed


def _saved_in(tmp_path, checkout, name, root=("benchmarks", "results")):
    run_dir = tmp_path / name
    run_dir.mkdir()
    results = os.path.join(checkout, *root, "recipe")
    over = [*OVERRIDES, f"data.root={results}/data", f"train.output_dir={results}"]
    save_config(load_config(None, over), str(run_dir / "config.yaml"))
    return run_dir


@pytest.mark.parametrize("root", [("benchmarks", "results"), ("experiments", "runs")])
def test_a_run_trained_in_another_checkout_is_reused_where_its_data_moved_with_it(tmp_path, root):
    # trained in a frozen worktree, copied into this checkout: its paths name the worktree
    run_dir = _saved_in(tmp_path, "/work/frozen", "moved", root)
    here = os.path.join(REPO, *root, "recipe")
    result = _check_in_fresh_process(run_dir, [*OVERRIDES, f"data.root={here}/data", f"train.output_dir={here}"])
    assert result.returncode == 0, result.stderr
    # the same run asked with data somewhere else is not the same run
    result = _check_in_fresh_process(run_dir, [*OVERRIDES, "data.root=/data/other", f"train.output_dir={here}"])
    assert result.returncode == 2
    assert f"data.root: '{'/'.join(root)}/recipe/data' there, '/data/other' asked" in result.stderr


# --------------------------------------------------------------------------- a table from the results alone
FP32_RANK1, AUTO_RANK1 = [0.30, 0.32, 0.31], [0.31, 0.35, 0.30]
FP32_MAP, AUTO_MAP = [0.25, 0.25, 0.28], [0.26, 0.24, 0.29]


def _precision_results(tmp_path):
    """A tiny results file: 3 made-up seeds of fp32 and auto, rows as the driver writes them."""
    import precision_accuracy

    args = types.SimpleNamespace(workers=-1, runs=str(tmp_path / "runs"))
    path = tmp_path / "precision.jsonl"
    for prec, rank1, mAP in (("fp32", FP32_RANK1, FP32_MAP), ("auto", AUTO_RANK1, AUTO_MAP)):
        for seed in range(3):
            name = f"{prec}_seed{seed}"
            settings = runs.wanted_settings(precision_accuracy.overrides(args, prec, seed, name))
            record = {"rank1": rank1[seed], "mAP": mAP[seed], "seconds": 100.0 + 10 * seed, "used": prec}
            runs.save_row(str(path), {"series": "t", "run": name, "settings": settings, "record": record})
    return path


def _tables_only(tmp_path, *extra):
    cmd = [sys.executable, os.path.join(REPO, "experiments", "precision_accuracy.py"), "--seeds", "0", "1", "2"]
    cmd += ["--precisions", "fp32", "auto", "--series", "t", "--results", str(tmp_path / "precision.jsonl")]
    cmd += ["--runs", str(tmp_path / "runs"), "--table", str(tmp_path / "doc.md"), "--tables-only", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)


def test_a_table_regenerates_from_a_tiny_results_file_as_computed_by_hand(tmp_path):
    _precision_results(tmp_path)
    result = _tables_only(tmp_path)
    assert result.returncode == 0, result.stderr
    block = runs.read_section(str(tmp_path / "doc.md"), "series t")
    rows = {
        line.split(" | ")[0].strip("| "): line
        for line in block
        if line.startswith("| fp32") or line.startswith("| auto")
    }
    # fp32 Rank-1 (%): 30, 32, 31 -> mean 31.00, std sqrt((1 + 1 + 0) / 2) = 1.00
    # auto minus fp32 per seed: +1, +3, -1 -> mean 1.00, std sqrt((0 + 4 + 4) / 2) = 2.00;
    # paired t, 2 degrees of freedom: t_0.975 = 4.302653, half width 4.302653 * 2 / sqrt(3) = 4.968
    # auto mAP minus fp32: +1, -1, +1 -> mean 0.33, std sqrt((4/9 + 16/9 + 4/9) / 2) = 1.15,
    # half width 4.302653 * 1.154701 / sqrt(3) = 2.868 -> [-2.54, +3.20]
    assert rows["fp32"] == "| fp32 | fp32 | 31.00 ± 1.00 | - | 26.00 ± 1.73 | - | 110 ± 10 |"
    assert rows["auto"] == (
        "| auto | auto | 32.00 ± 2.65 | +1.00 ± 2.00 [-3.97, +5.97] | 26.33 ± 2.52 | +0.33 ± 1.15 [-2.54, +3.20] "
        "| 110 ± 10 |"
    )
    assert _tables_only(tmp_path, "--check").returncode == 0  # the doc now holds what the results say
    (tmp_path / "doc.md").write_text((tmp_path / "doc.md").read_text().replace("32.00 ± 2.65", "32.10 ± 2.65"))
    check = _tables_only(tmp_path, "--check")
    assert check.returncode == 2 and "block 'series t' differs from its results file" in check.stderr


def test_tables_only_names_the_runs_missing_from_the_results_file(tmp_path):
    path = _precision_results(tmp_path)
    path.write_text("".join(line for line in path.read_text().splitlines(True) if '"run":"auto_seed2"' not in line))
    result = _tables_only(tmp_path)
    assert result.returncode == 2 and not (tmp_path / "doc.md").exists()
    (line,) = result.stderr.strip().splitlines()
    assert "has no row for 1 run(s) of series t (auto_seed2)" in line


# --------------------------------------------------------------------------- a study end to end
@pytest.mark.slow
def test_a_study_trains_writes_a_row_per_run_and_rebuilds_its_table_without_its_run_folders(tmp_path):
    import shutil
    import statistics

    import numpy as np
    from fixtures_data import write_fashion_mnist

    rng = np.random.default_rng(0)
    labels = np.arange(60) % 10
    images = (rng.integers(0, 60, (60, 28, 28)) + labels[:, None, None] * 18).astype(np.uint8)
    write_fashion_mnist(str(tmp_path / "data"), images[:40], labels[:40], images[40:], labels[40:])
    results, run_root, doc = tmp_path / "r.jsonl", tmp_path / "runs", tmp_path / "doc.md"
    cmd = [sys.executable, os.path.join(REPO, "experiments", "fashion_mnist_methods.py")]
    cmd += ["--variants", "vanilla", "srdl", "kd", "--seeds", "0", "1", "--epochs", "2", "--subset", "20"]
    cmd += ["--batch-size", "8", "--root", str(tmp_path / "data"), "--series", "t", "--results", str(results)]
    cmd += ["--table", str(doc), "--runs", str(run_root)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]

    rows = runs.series_rows(str(results), "t")
    teachers = ["teacher_resnet8_seed0", "teacher_resnet8_seed1"]
    assert sorted(rows) == sorted([f"{v}_seed{s}" for v in ("vanilla", "srdl", "kd") for s in (0, 1)] + teachers)
    for name, row in rows.items():  # each row holds what its run folder's metrics.json says
        with open(run_root / name / "metrics.json") as f:
            assert row["record"]["top1"] == json.load(f)["results"]["deployed"]["test"]["top1"]
        assert len(row["curves"]["epoch"]) == 2 and row["machine"]["cpus"] == os.cpu_count()
    for seed in (0, 1):
        assert rows[f"kd_seed{seed}"]["record"]["teacher_top1"] == rows[f"teacher_resnet8_seed{seed}"]["record"]["top1"]
        assert 0.0 <= rows[f"srdl_seed{seed}"]["record"]["stage1_top1"] <= 1.0
    ce = [100 * rows[f"vanilla_seed{s}"]["record"]["top1"] for s in (0, 1)]
    ce_cell = f"| cross-entropy | {statistics.mean(ce):.2f} ± {statistics.stdev(ce):.2f} | - |"
    assert any(line.startswith(ce_cell) for line in runs.read_section(str(doc), "series t"))

    table = doc.read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert again.returncode == 0 and "$ " not in again.stdout  # every run has its row: nothing trained
    assert doc.read_text() == table
    shutil.rmtree(run_root)  # what git keeps: the results file alone
    check = subprocess.run([*cmd, "--tables-only", "--check"], capture_output=True, text=True, cwd=REPO, env=env)
    assert check.returncode == 0, check.stderr
