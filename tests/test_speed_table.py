"""benchmarks/speed_table.py: the speed tables of README.md and docs/benchmarks.md are what
the result files say (a stale table fails), and a hand-written result becomes the row expected."""

import importlib.util
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "speed_table.py")


def load_script():
    spec = importlib.util.spec_from_file_location("speed_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_repository_tables_match_the_result_files():
    result = subprocess.run([sys.executable, SCRIPT, "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def write(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def docs_with_blocks(tmp_path):
    readme, doc = tmp_path / "README.md", tmp_path / "benchmarks.md"
    readme.write_text("# x\n\n<!-- speed-table -->\nstale\n<!-- /speed-table -->\n\nafter\n")
    doc.write_text("<!-- speed-table -->\n<!-- /speed-table -->\n")
    return readme, doc


def test_a_hand_written_result_becomes_its_row_and_the_newest_file_wins(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    env = {"cpu": "AMD EPYC 9R14 96-Core Processor", "cpu_slug": "amd-epyc-9r14", "cpus": 2, "commit": "abc1234"}
    row = {
        "case": "market512",
        "queries": 3368,
        "gallery": 15913,
        "dim": 512,
        "ours_seconds": 0.5,
        "floor_seconds": 0.25,
        "ratio_to_floor": 2.0,
        "torchreid_seconds": 60.0,
        "torchreid_ratio": 120.0,
    }
    write(
        results / "bench_eval-amd-epyc-9r14.json",
        {"benchmark": "bench_eval", "environment": {**env, "date": "2026-12-07 10:00"}, "rows": [row]},
    )
    # older by its recorded date, although its name sorts last: must not be chosen
    old = dict(row, ours_seconds=9.0, ratio_to_floor=36.0)
    write(
        results / "bench_eval-intel-xeon.json",
        {
            "environment": {"cpu": "Intel Xeon", "cpu_slug": "intel-xeon", "date": "2026-11-01", "commit": "0ld"},
            "rows": [old],
        },
    )
    # a variant (its name is not <bench>-<its cpu>): a study of its own, never the table's
    write(
        results / "bench_eval-overlap-amd-epyc-9r14.json",
        {"environment": {**env, "date": "2026-12-08 10:00"}, "rows": [dict(row, ours_seconds=7.0)]},
    )
    write(
        results / "bench_train-amd-epyc-9r14.json",
        {
            "info": {**env, "date": "2026-12-07 11:00"},
            "throughput": [
                {
                    "model": "resnet50",
                    "height": 256,
                    "width": 128,
                    "batch": 32,
                    "workers": 0,
                    "precision": "bf16+channels-last",
                    "reid_srdl_img_s": 12.5,
                    "torchreid_img_s": 5.0,
                    "ratio": 2.5,
                    "measured": "2026-12-07 11:00",
                }
            ],
            "demo": {"seconds": 44.0, "goal_seconds": 45, "epochs": 30},
        },
    )
    readme, doc = docs_with_blocks(tmp_path)
    st = load_script()
    args = ["--results", str(results), "--readme", str(readme), "--doc", str(doc)]
    assert st.main([*args, "--check"]) == 1  # the hand-written "stale" line differs
    assert st.main(args) == 0
    lines = readme.read_text().split("\n")
    block = lines[lines.index("<!-- speed-table -->") + 1 : lines.index("<!-- /speed-table -->")]
    # 0.5 s, 60 / 0.5 = 120x torchreid, 0.5 / 0.25 = 2.00x the floor; CPU without "Processor"
    assert block[2] == (
        "| exact re-id evaluation, Market-1501 shape 3,368 x 15,913, d=512 | 0.50 s | 120x | 2.00x "
        "| AMD EPYC 9R14 96-Core | 2026-12-07 | abc1234 |"
    )
    assert block[3] == (
        "| training, one epoch with data: ResNet-50 256x128, batch 32 | 12.5 img/s (bf16+channels-last) | 2.50x | - "
        "| AMD EPYC 9R14 96-Core | 2026-12-07 | abc1234 |"
    )
    assert block[4].startswith("| the demo's training (30 epochs, `python tools/train.py`) | 44.00 s |")
    assert len(block) == 5  # header, rule, one line per figure: no extraction result given
    warm = {"model": "small_reid", "height": 128, "width": 64, "batch": 32, "reid_srdl_img_s": 1.0, "warmup_epochs": 1}
    label = next(st.train_rows({"throughput": [warm]}))[0]
    assert label == (
        "training, one epoch with data after 1 warm-up epoch: small_reid (the demo's network) 128x64, batch 32"
    )
    assert lines[-3:] == ["", "after", ""]  # the text around the block is kept
    text = doc.read_text()
    assert "| market512 | 3,368 x 15,913, 512 | default | 0.50 s | 0.25 s | 2.00x |" in text
    # the doc keeps the newest run of every CPU, newest first: the Xeon's figures follow the EPYC's
    assert "| market512 | 3,368 x 15,913, 512 | default | 9.00 s | 0.25 s | 36x |" in text
    assert text.index("bench_eval-amd-epyc-9r14.json") < text.index("bench_eval-intel-xeon.json")
    assert "Intel Xeon, 2026-11-01, commit 0ld." in text and "7.00 s" not in text  # never the variant
    assert st.main([*args, "--check"]) == 0


def test_cpu_labels_name_amx_and_avx2_only_guests():
    st = load_script()
    assert st.cpu_label({"cpu": "Intel(R) Xeon(R) Processor"}, "intel-xeon-amx") == "Intel Xeon with AMX"
    assert st.cpu_label({"cpu": "AMD EPYC"}, "amd-epyc-avx2") == "AMD EPYC (AVX2, no AVX-512)"
    assert st.cpu_label({"cpu": "AMD EPYC"}, "amd-epyc") == "AMD EPYC"


def test_a_result_file_without_the_expected_fields_is_one_line(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    env = {"cpu": "AMD EPYC", "cpu_slug": "amd-epyc", "date": "2026-12-07", "commit": "abc1234"}
    write(results / "bench_eval-amd-epyc.json", {"environment": env, "rows": [{"case": "market512"}]})
    readme, doc = docs_with_blocks(tmp_path)
    st = load_script()
    assert st.main(["--results", str(results), "--readme", str(readme), "--doc", str(doc)]) == 2
    err = capsys.readouterr().err.strip().split("\n")
    assert len(err) == 1 and "bench_eval-amd-epyc.json" in err[0] and "queries" in err[0]
    assert "stale" in readme.read_text()  # nothing written
