#!/usr/bin/env python
"""Re-id evaluation speed and memory: reid_srdl.evaluate_reid against torchreid, side by side.

    python benchmarks/bench_eval.py                       # every case (about 6 minutes on 2 cores)
    python benchmarks/bench_eval.py --cases market512     # one case

Cases (random features with a re-id-like identity/camera structure, see make_case):

* market2048, market512: the Market-1501 test shape (3,368 queries x 15,913 gallery, 751
  identities, 6 cameras, 2,793 distractors).  torchreid's users compute the distance matrix
  with ``compute_distance_matrix`` and rank with ``evaluate_rank(use_cython=False)``; both are
  timed, as is our ``evaluate_reid`` which includes its own distance computation.  The numbers
  of the two must agree (CMC and mAP to 1e-6).
* market512-unstructured: the same shape with features of no identity structure (every
  true match is anywhere in the ranking): the worst case for our ranking.
* msmt: the MSMT17 test shape (11,659 x 82,161, d=512, 3,060 identities, 15 cameras), ours
  only (torchreid would need a 3.8 GB distance matrix plus a 7.7 GB index matrix), run in a
  subprocess whose peak RSS is read with resource.getrusage.

Results are printed as a Markdown table and written to benchmarks/results/bench_eval-<cpu>.json.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_record import metadata, result_path  # noqa: E402

from reid_srdl.core.files import write_json_atomic  # noqa: E402
from reid_srdl.evaluation.metrics import evaluate_reid  # noqa: E402

SHAPES = {
    # name: (queries, gallery, identities, cameras, distractors)
    "market": (3368, 15913, 751, 6, 2793),
    "msmt": (11659, 82161, 3060, 15, 0),
}
CASES = {
    "market2048": ("market", 2048, True),
    "market512": ("market", 512, True),
    "market512-unstructured": ("market", 512, False),
    "msmt": ("msmt", 512, True),
}
MAX_RANK = 50


def _unit_rows(rng, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_case(shape: str, dim: int, structured: bool, seed: int = 0):
    """(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids) with a re-id-like structure.

    Each query is a distinct (identity, camera) pair, as in Market-1501; gallery identities
    and cameras are uniform, distractors have pid 0.  A feature is its identity's centre, plus
    a view offset per (identity, camera) of random length, plus a random share of a look-alike
    identity's centre (hard negatives), plus per-image noise of random size.  The constants
    give Market-like accuracy (Rank-1 ~ 94%, mAP ~ 73%).  ``structured=False``: plain noise.
    """
    num_q, num_g, num_ids, num_cams, num_distractors = SHAPES[shape]
    rng = np.random.default_rng(seed)
    pairs = rng.choice(num_ids * num_cams, num_q, replace=False)
    q_pids, q_cams = pairs // num_cams + 1, pairs % num_cams
    g_pids = np.concatenate([rng.integers(1, num_ids + 1, num_g - num_distractors), np.zeros(num_distractors, int)])
    g_cams = rng.integers(0, num_cams, num_g)
    if not structured:
        q_feats = rng.standard_normal((num_q, dim), dtype=np.float32)
        g_feats = rng.standard_normal((num_g, dim), dtype=np.float32)
        return q_feats, g_feats, q_pids, g_pids, q_cams, g_cams

    centres = _unit_rows(rng, num_ids + 1, dim)
    # Identities come in look-alike pairs (similar clothes): each one's images carry a random
    # share of the other's centre, which makes hard negatives.
    order = rng.permutation(np.arange(1, num_ids + 1))
    half = len(order) // 2
    lookalike = np.arange(num_ids + 1)
    lookalike[order[:half]], lookalike[order[half : 2 * half]] = order[half : 2 * half], order[:half]
    # View offsets live in a 64-d random subspace: one weight row per (identity, camera)
    # instead of one full vector, so that the MSMT17 gallery stays small in memory.
    view_basis = rng.standard_normal((64, dim), dtype=np.float32)
    view_weights = rng.standard_normal(((num_ids + 1) * num_cams, 64), dtype=np.float32)
    view_len = (0.6 * rng.lognormal(0.0, 0.5, (num_ids + 1) * num_cams)).astype(np.float32)

    def features(pids, cams):
        out = np.empty((len(pids), dim), dtype=np.float32)
        for s in range(0, len(pids), 8192):  # blocks keep the temporaries small
            p, c = pids[s : s + 8192], cams[s : s + 8192]
            n = len(p)
            key = p * num_cams + c
            view = view_weights[key] @ view_basis
            view *= (view_len[key] / np.linalg.norm(view, axis=1))[:, None]
            x = centres[p] + view
            x += centres[lookalike[p]] * (0.8 * rng.random((n, 1), dtype=np.float32))
            x += _unit_rows(rng, n, dim) * (0.5 * rng.lognormal(0.0, 0.6, (n, 1))).astype(np.float32)
            distractor = p == 0  # distractors: unrelated people
            x[distractor] = _unit_rows(rng, int(distractor.sum()), dim) * 1.3
            out[s : s + n] = x
        return out

    return features(q_pids, q_cams), features(g_pids, g_cams), q_pids, g_pids, q_cams, g_cams


def run_torchreid(case):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Cython evaluation is unavailable"
        from torchreid.reid.metrics import compute_distance_matrix, evaluate_rank
    q, g, qp, gp, qc, gc = case
    t0 = time.perf_counter()
    distmat = compute_distance_matrix(torch.from_numpy(q), torch.from_numpy(g), metric="euclidean").numpy()
    t1 = time.perf_counter()
    cmc, mAP = evaluate_rank(distmat, qp, gp, qc, gc, max_rank=MAX_RANK, use_cython=False)
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "distance_seconds": t1 - t0, "rank_seconds": t2 - t1, "cmc": cmc, "mAP": float(mAP)}


def run_ours(case, repeats: int):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = evaluate_reid(*case, max_rank=MAX_RANK)
        times.append(time.perf_counter() - t0)
    return {"seconds": float(np.median(times)), "all_seconds": times, "result": result}


def bench_market(name: str, repeats: int) -> dict:
    shape, dim, structured = CASES[name]
    case = make_case(shape, dim, structured)
    ours = run_ours(case, repeats)
    theirs = run_torchreid(case)
    res = ours["result"]
    return {
        "case": name,
        "queries": len(case[0]),
        "gallery": len(case[1]),
        "dim": dim,
        "ours_seconds": ours["seconds"],
        "ours_all_seconds": ours["all_seconds"],
        "torchreid_seconds": theirs["seconds"],
        "torchreid_distance_seconds": theirs["distance_seconds"],
        "torchreid_rank_seconds": theirs["rank_seconds"],
        "speedup": theirs["seconds"] / ours["seconds"],
        "max_abs_cmc_diff": float(np.abs(res.cmc - theirs["cmc"]).max()),
        "abs_mAP_diff": abs(res.mAP - theirs["mAP"]),
        "metrics": res.to_dict(),
    }


def msmt_child() -> None:
    """Runs in its own process: build the MSMT17-shaped case, evaluate, report peak RSS."""
    case = make_case(*CASES["msmt"])
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = evaluate_reid(*case, max_rank=MAX_RANK)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "case": "msmt",
                "queries": len(case[0]),
                "gallery": len(case[1]),
                "dim": case[0].shape[1],
                "ours_seconds": seconds,
                "peak_rss_mb": peak / 1024,
                "rss_after_data_mb": rss_data / 1024,
                "vm_hwm_mb": _vm_hwm_kib() / 1024,
                "metrics": result.to_dict(),
            }
        )
    )


def _vm_hwm_kib() -> float:
    """This process's own RSS high-water mark (Linux), a cross-check of ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def bench_msmt() -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--msmt-child"], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(rows) -> str:
    lines = [
        "| case | queries x gallery, d | torchreid (s) | reid_srdl (s) | speed-up | max difference "
        "| Rank-1 / mAP / mINP (%) | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["metrics"]
        cells = [r["case"], f"{r['queries']:,} x {r['gallery']:,}, {r['dim']}"]
        if "torchreid_seconds" in r:
            cells += [
                f"{r['torchreid_seconds']:.1f}",
                f"{r['ours_seconds']:.2f}",
                f"{r['speedup']:.0f}x",
                f"CMC {r['max_abs_cmc_diff']:.0e}, mAP {r['abs_mAP_diff']:.0e}",
            ]
        else:
            cells += ["-", f"{r['ours_seconds']:.2f}", "-", "-"]
        cells.append(f"{100 * m['rank1']:.1f} / {100 * m['mAP']:.1f} / {100 * m['mINP']:.1f}")
        cells.append(f"{r['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--repeats", type=int, default=3, help="runs of ours per case (median reported)")
    p.add_argument("--out", default=result_path("bench_eval"))
    p.add_argument("--msmt-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.msmt_child:
        msmt_child()
        return 0
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; valid: {', '.join(CASES)}")
    # The MSMT17 child runs first: Linux carries the parent's RSS at fork time into the child's
    # ru_maxrss, so it must be spawned before this process holds torchreid's big matrices.
    names.sort(key=lambda n: n != "msmt")
    rows = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.append(bench_msmt() if name == "msmt" else bench_market(name, args.repeats))
    print(markdown(rows))
    write_json_atomic(
        args.out,
        {
            "environment": metadata(),
            "max_rank": MAX_RANK,
            "rows": rows,
        },
    )
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
