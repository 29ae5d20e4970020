"""The benchmark scripts that drive the trainer's parts run end to end on a tiny budget (they
reach into the loop, and a refactor that breaks them would otherwise be found only on the
day someone measures).  Each writes its JSON; the figures themselves are not asserted (a
timed test is not a measurement), only that they are positive and finite."""

import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def run_script(name, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def finite_positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_preflight(tmp_path):
    out = tmp_path / "preflight.json"
    root = str(tmp_path / "data")
    run_script("bench_preflight.py", "--root", root, "--batches", "2", "--repeats", "1", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["images_checked"] > 0 and finite_positive(result["fraction_of_epoch"])


def test_bench_multisource(tmp_path):
    out = tmp_path / "multi.json"
    run_script(
        "bench_multisource.py",
        *("--ids", "12", "--batches", "2", "--repeats", "1", "--height", "64", "--width", "32"),
        *("--root", str(tmp_path / "data"), "--json", str(out)),
    )
    result = json.loads(out.read_text())
    assert result["batches"] == 2 and finite_positive(result["ratio_multi_over_single"])


def test_bench_recipe_cost(tmp_path):
    out = tmp_path / "recipe.json"
    run_script(
        "bench_recipe_cost.py",
        *("--models", "small_reid", "--repeats", "1", "--ids", "16", "--max-batches", "2"),
        *("--root", str(tmp_path / "data"), "--json", str(out)),
    )
    assert json.loads(out.read_text())


def test_bench_train(tmp_path):
    out = tmp_path / "train.json"
    stdout = run_script(
        "bench_train.py",
        *("--models", "small_reid", "--repeats", "1", "--overhead-epochs", "0", "--workers", "0"),
        *("--root", str(tmp_path / "data"), "--json", str(out)),
    )
    (row,) = json.loads(out.read_text())["throughput"]
    assert all(finite_positive(row[k]) for k in ("reid_srdl_img_s", "reid_srdl_fp32_img_s", "torchreid_img_s"))
    assert "| small_reid |" in stdout


def test_bench_stores(tmp_path):
    from store_helpers import has_pymilvus

    out = tmp_path / "stores.json"
    engines = "faiss_flat,faiss_ivfpq" + (",milvus_flat" if has_pymilvus() else "")
    run_script(
        "bench_stores.py",
        *("--engines", engines, "--n", "1200", "--d", "16", "--ids", "30", "--small", "400", "--batch", "300"),
        *("--queries", "10", "--nlist", "8", "--pq-m", "4", "--probe-repeats", "2", "--out", str(out)),
    )
    result = json.loads(out.read_text())
    assert [r["engine"] for r in result["results"]] == engines.split(",") and result["environment"]["cpu"]
    for r in result["results"]:
        assert r["size_at_full_probe"] == 1200 + 2 * 100 + 2 * 100  # the gallery and both probe adds, no more
        assert r["recall_at_10"] == 1.0 or r["engine"] == "faiss_ivfpq"  # exact engines find the exact top 10
        assert all(finite_positive(r[k]) for k in ("ingest_items_per_s", "add_seconds_full", "query_p99_ms", "disk_mb"))
