"""experiments/imagenet_init.py: its tables rebuilt from a tiny results file alone, checked
against hand-computed paired-t intervals (3 made-up seeds of the four arms)."""

import os
import subprocess
import sys
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "experiments"))

import experiment_runs as runs
import imagenet_init

# test top-1 per seed (0, 1, 2) of each arm: deployed, SRDL's stage 1, SRDL's ensemble
TOP1 = {
    ("imagenet", "vanilla"): [0.80, 0.82, 0.81],
    ("imagenet", "srdl"): [0.81, 0.84, 0.81],
    ("random", "vanilla"): [0.50, 0.52, 0.51],
    ("random", "srdl"): [0.49, 0.50, 0.52],
}
STAGE1 = {"imagenet": [0.79, 0.80, 0.80], "random": [0.45, 0.46, 0.47]}
ENSEMBLE = {"imagenet": [0.82, 0.84, 0.82], "random": [0.50, 0.50, 0.50]}


def _args(tmp_path):
    return types.SimpleNamespace(
        task="fashion",
        fashion_root="/usr/share/datasets/fashion-mnist",
        subset=1000,
        size=64,
        epochs=4,
        batch_size=32,
        feature_dim=128,
        lr=0.01,
        runs=str(tmp_path / "runs"),
        shared=str(tmp_path / "shared"),
    )


def _results(tmp_path):
    args = _args(tmp_path)
    path = str(tmp_path / "r.jsonl")
    weights = os.path.join(args.shared, "weights", "mobilenet_v2_imagenet_deepsort.pth")
    for (init, method), top1 in TOP1.items():
        for seed in range(3):
            name = imagenet_init.run_name("fashion", init, method, seed)
            settings = runs.wanted_settings(imagenet_init.overrides(args, init, method, seed, weights))
            record = {"top1": top1[seed], "seconds": 60.0 + seed, "clean_train_acc": 0.995}
            stages, accs = [1, 1, 1, 1], [0.5, 0.8, 0.9, 0.98]
            if method == "srdl":
                record.update(stage1_top1=STAGE1[init][seed], ensemble_top1=ENSEMBLE[init][seed])
                record.update(stage1_clean_train_acc=0.99, bank_train_acc=0.99)
                stages, accs = [1, 1, 2, 2], [0.6, 0.97, 0.7, 0.96 + 0.01 * seed]
            curves = {"stage": stages, "epoch": [1, 2, 3, 4], "train_acc": accs}
            runs.save_row(path, {"series": "t", "run": name, "settings": settings, "record": record, "curves": curves})
    photos = {"ImageNet": [0.5, 0.06, "apple.jpg", "orange.jpg", 0.75], "random": [0.98, 0.01, "a.jpg", "b.jpg", 0.99]}
    settings = {"wheel": "w.whl", "wheel_sha256": "a" * 64, "member": "m.pt", "member_sha256": "b" * 64}
    record = {"tensors": 312, "photos": photos}
    runs.save_row(path, {"series": "weights", "run": "photo_check", "settings": settings, "record": record})


def _tables_only(tmp_path, *extra):
    cmd = [sys.executable, os.path.join(REPO, "experiments", "imagenet_init.py"), "--task", "fashion"]
    cmd += ["--seeds", "0", "1", "2", "--epochs", "4", "--series", "t", "--results", str(tmp_path / "r.jsonl")]
    cmd += ["--runs", str(tmp_path / "runs"), "--shared", str(tmp_path / "shared")]
    cmd += ["--table", str(tmp_path / "doc.md"), "--tables-only", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)


def test_the_decomposition_is_computed_from_the_results_file_as_by_hand(tmp_path):
    _results(tmp_path)
    result = _tables_only(tmp_path)
    assert result.returncode == 0, result.stderr
    block = runs.read_section(str(tmp_path / "doc.md"), "series t")
    # ImageNet, per seed (points): halving cost CE - stage 1 = +1, +2, +1: mean 1.33, std 0.58,
    # t(0.975, 2) = 4.302653, half width 4.302653 * 0.57735 / sqrt(3) = 1.434 -> [-0.10, +2.77];
    # gain stage 2 - stage 1 = +2, +4, +1: mean 2.33, std 1.53, half width 3.795 -> [-1.46, +6.13];
    # net stage 2 - CE = +1, +2, 0: mean 1.00, std 1.00, half width 2.484 -> [-1.48, +3.48].
    assert (
        "- ImageNet init, top-1: halving cost (CE at M minus CE at M/2) +1.33 ± 0.58 [-0.10, +2.77]; "
        "self-reference gain (stage 2 minus stage 1) +2.33 ± 1.53 [-1.46, +6.13]; "
        "net (SRDL minus CE) +1.00 ± 1.00 [-1.48, +3.48]." in block
    )
    # ImageNet minus random, cross-entropy: +30 on every seed.
    assert "- ImageNet minus random initialisation, cross-entropy, top-1: +30.00 ± 0.00 [+30.00, +30.00]." in block
    # The ensemble row: 82, 84, 82 against CE 80, 82, 81: +2, +2, +1 -> mean 1.67, std 0.58 [+0.23, +3.10].
    assert (
        "| ImageNet init, SRDL stage-1 + stage-2 ensemble (two forward passes) | 82.67 ± 1.15 | "
        "+1.67 ± 0.58 [+0.23, +3.10] |" in block
    )
    # Premise: SRDL's stage 2 last-epoch running accuracy 96, 97, 98 % -> mean 97.00, min 96.00.
    assert "| ImageNet init, SRDL | 97.00 (97.00) | 99.00 (99.00) | 97.00 (96.00) | 99.50 (99.50) |" in block
    weights = runs.read_section(str(tmp_path / "doc.md"), "series weights")
    assert "| ImageNet | +0.500 | 0.060 | apple.jpg - orange.jpg (+0.750) |" in weights
    assert any("312 tensors, every one placed with its shape" in line for line in weights)
    assert _tables_only(tmp_path, "--check").returncode == 0


def test_tables_only_without_the_runs_names_them(tmp_path):
    _results(tmp_path)
    result = _tables_only(tmp_path, "--check")
    assert result.returncode == 2  # nothing written yet: the doc's blocks are missing
    path = tmp_path / "r.jsonl"
    path.write_text("".join(line for line in path.read_text().splitlines(True) if "random_srdl_seed2" not in line))
    result = _tables_only(tmp_path)
    (line,) = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "has no row for 1 run(s) of series t (fashion_random_srdl_seed2)" in line


@pytest.mark.parametrize("task, epochs, expected", [("fashion", None, 48), ("reid", None, 16), ("reid", 10, 10)])
def test_default_budgets_are_the_probes(task, epochs, expected, tmp_path):
    args = _args(tmp_path)
    args.task, args.epochs = task, epochs or imagenet_init.DEFAULT_EPOCHS[task]
    args.ids, args.height, args.width = 600, 80, 40
    over = imagenet_init.overrides(args, "random", "srdl", 3, "w.pth")
    assert f"train.epochs={expected}" in over and "model.weights=" in over and "train.seed=3" in over


def test_missing_sample_photos_are_named_before_anything_is_fetched(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "apple.jpg").write_bytes(b"")
    cmd = [sys.executable, os.path.join(REPO, "experiments", "imagenet_init.py"), "--task", "reid", "--seeds", "0"]
    cmd += ["--series", "t", "--results", str(tmp_path / "r.jsonl"), "--runs", str(tmp_path / "runs")]
    cmd += ["--shared", str(tmp_path / "shared"), "--photos", str(tmp_path / "photos")]
    cmd += ["--table", str(tmp_path / "doc.md")]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    (line,) = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert line == (
        f"error: 10 of OpenCV's 11 sample photos are missing from {tmp_path / 'photos'} (orange.jpg, fruits.jpg, "
        "baboon.jpg, ...): install Debian's opencv-doc (apt-get install -y opencv-doc)"
    )
    # nothing was fetched, rendered or written
    assert not (tmp_path / "shared").exists() and not (tmp_path / "r.jsonl").exists()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "doc.md").exists()
