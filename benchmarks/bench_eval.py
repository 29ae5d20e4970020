#!/usr/bin/env python
"""Re-id evaluation speed and memory: reid_srdl.evaluate_reid against its GEMM floor and
against torchreid, side by side in one process.

    python benchmarks/bench_eval.py                       # every case (~10 minutes on 2 idle cores)
    python benchmarks/bench_eval.py --cases market512,msmt
    python benchmarks/bench_eval.py --quick               # smoke run: shapes / 20, one repeat

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
  subprocess whose peak RSS is read from /proc/self/status (VmHWM).

The GEMM floor of a case is the bare fp32 ``q @ g.T`` of the same shape, in the same process,
cut into the same query blocks as ours and written into one reused buffer: the arithmetic no
exact evaluation can skip.  ``ratio_to_floor`` = ours / floor (issue 29's goal: <= 1.5);
``torchreid_ratio`` = torchreid / ours.  Ours is timed as shipped (``threads`` = the usable
cores, ``overlap=False``) and, beside it, with ``overlap=True`` (the next block's GEMM in a
thread while this one is ranked) and with one ranking thread, so that the default can be chosen
from one run.  Every figure is the median of ``--repeats`` runs, ours and the floor alternating.

Results are printed as a Markdown table and written to
``benchmarks/results/bench_eval-<cpu>.json`` with the machine, date and commit.
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
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_record import metadata, result_path

from reid_srdl.core.files import write_json_atomic
from reid_srdl.evaluation.metrics import block_rows, evaluate_reid

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


def make_case(shape: str, dim: int, structured: bool, seed: int = 0, scale: int = 1):
    """(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids) with a re-id-like structure.

    Each query is a distinct (identity, camera) pair, as in Market-1501; gallery identities
    and cameras are uniform, distractors have pid 0.  A feature is its identity's centre, plus
    a view offset per (identity, camera) of random length, plus a random share of a look-alike
    identity's centre (hard negatives), plus per-image noise of random size.  The constants
    give Market-like accuracy (Rank-1 ~ 94%, mAP ~ 73%).  ``structured=False``: plain noise.
    """
    num_q, num_g, num_ids, num_cams, num_distractors = (n // scale if n else 0 for n in SHAPES[shape])
    num_cams = SHAPES[shape][3]  # the cameras stay: identities x cameras must cover the queries
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


def gemm_floor(q: np.ndarray, g: np.ndarray) -> float:
    """Seconds of the bare fp32 ``q @ g.T``, in the query blocks evaluate_reid uses, into one
    reused buffer (touched once before timing, as ours is by its first block)."""
    rows = block_rows(len(g), None)
    out = np.empty((min(rows, len(q)), len(g)), dtype=np.float32)
    out.fill(0)
    start = time.perf_counter()
    for s in range(0, len(q), rows):
        block = q[s : s + rows]
        np.matmul(block, g.T, out=out[: len(block)])
    return time.perf_counter() - start


def load_kernel() -> float:
    """Seconds of a first, tiny evaluation: loading the compiled ranking kernel (numba's
    cache; compiling it, the first time on a machine).  A one-off per process, timed apart so
    that it does not land in the first repeat of a case."""
    case = make_case("market", 16, True, scale=100)
    start = time.perf_counter()
    evaluate_reid(*case, max_rank=MAX_RANK)
    return time.perf_counter() - start


VARIANTS = {"default": {}, "overlap": {"overlap": True}, "one_thread": {"threads": 1}}


def run_ours_and_floor(case, repeats: int, variants=tuple(VARIANTS)):
    """Median seconds of each variant of ours and of the floor, alternating within a repeat."""
    times = {name: [] for name in (*variants, "floor")}
    result = None
    for _ in range(repeats):
        times["floor"].append(gemm_floor(case[0], case[1]))
        for name in variants:
            t0 = time.perf_counter()
            r = evaluate_reid(*case, max_rank=MAX_RANK, **VARIANTS[name])
            times[name].append(time.perf_counter() - t0)
            if result is None:
                result = r
            elif (r.mAP, r.mINP) != (result.mAP, result.mINP) or not np.array_equal(r.cmc, result.cmc):
                raise AssertionError(f"variant {name} changed the results")
    med = {name: float(np.median(v)) for name, v in times.items()}
    main = variants[0]  # "default" unless a single other variant is timed (the MSMT17 children)
    row = {
        "floor_seconds": med["floor"],
        "ours_seconds": med[main],
        "ratio_to_floor": med[main] / med["floor"],
        "all_seconds": times,
    }
    for name in variants:
        if name != main:
            row[f"ours_{name}_seconds"] = med[name]
            row[f"ratio_to_floor_{name}"] = med[name] / med["floor"]
    return row, result


def bench_market(name: str, repeats: int, scale: int) -> dict:
    shape, dim, structured = CASES[name]
    load = load_kernel()
    case = make_case(shape, dim, structured, scale=scale)
    ours, res = run_ours_and_floor(case, repeats)
    theirs = run_torchreid(case)
    return {
        "case": name,
        "queries": len(case[0]),
        "gallery": len(case[1]),
        "dim": dim,
        **ours,
        "kernel_load_seconds": load,
        "torchreid_seconds": theirs["seconds"],
        "torchreid_distance_seconds": theirs["distance_seconds"],
        "torchreid_rank_seconds": theirs["rank_seconds"],
        "torchreid_ratio": theirs["seconds"] / ours["ours_seconds"],
        "max_abs_cmc_diff": float(np.abs(res.cmc[: len(theirs["cmc"])] - theirs["cmc"]).max()),
        "abs_mAP_diff": abs(res.mAP - theirs["mAP"]),
        "metrics": res.to_dict(),
    }


def msmt_child(variant: str, repeats: int, scale: int) -> None:
    """Runs in its own process: build the MSMT17-shaped case, evaluate (peak RSS read right
    after ours, before the floor allocates its own buffer), then time the floor."""
    case = make_case(*CASES["msmt"], scale=scale)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load = load_kernel()
    t0 = time.perf_counter()
    result = evaluate_reid(*case, max_rank=MAX_RANK, **VARIANTS[variant])
    first = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    vm_hwm = _vm_hwm_kib()
    timed, _ = run_ours_and_floor(case, repeats, variants=(variant,)) if repeats > 1 else (None, None)
    floor = timed["floor_seconds"] if timed else gemm_floor(case[0], case[1])
    ours = timed["ours_seconds"] if timed else first
    print(
        json.dumps(
            {
                "case": "msmt" if variant == "default" else f"msmt-{variant}",
                "variant": variant,
                "queries": len(case[0]),
                "gallery": len(case[1]),
                "dim": case[0].shape[1],
                "floor_seconds": floor,
                "ours_seconds": ours,
                "ratio_to_floor": ours / floor,
                "kernel_load_seconds": load,
                "peak_rss_mb": vm_hwm / 1024,  # this process's own high-water mark
                "ru_maxrss_mb": peak / 1024,  # cross-check (includes what fork carried over)
                "rss_after_data_mb": rss_data / 1024,
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


def bench_msmt(variant: str, repeats: int, scale: int) -> dict:
    args = ["--msmt-child", variant, "--repeats", str(repeats), "--scale", str(scale)]
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(rows) -> str:
    lines = [
        "| case | queries x gallery, d | GEMM floor (s) | reid_srdl (s) | / floor | overlap / floor "
        "| 1 thread / floor | torchreid (s) | torchreid / ours | max difference | Rank-1 / mAP / mINP (%) | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["metrics"]
        cells = [r["case"], f"{r['queries']:,} x {r['gallery']:,}, {r['dim']}"]
        cells += [f"{r['floor_seconds']:.2f}", f"{r['ours_seconds']:.2f}", f"{r['ratio_to_floor']:.2f}x"]
        for key in ("ratio_to_floor_overlap", "ratio_to_floor_one_thread"):
            cells.append(f"{r[key]:.2f}x" if key in r else "-")
        if "torchreid_seconds" in r:
            cells += [
                f"{r['torchreid_seconds']:.1f}",
                f"{r['torchreid_ratio']:.0f}x",
                f"CMC {r['max_abs_cmc_diff']:.0e}, mAP {r['abs_mAP_diff']:.0e}",
            ]
        else:
            cells += ["-", "-", "-"]
        cells.append(f"{100 * m['rank1']:.1f} / {100 * m['mAP']:.1f} / {100 * m['mINP']:.1f}")
        cells.append(f"{r['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    p.add_argument("--repeats", type=int, default=3, help="runs of ours and of the floor per case (median reported)")
    p.add_argument("--quick", action="store_true", help="smoke run: every shape divided by 20, one repeat")
    p.add_argument("--out", default=result_path("bench_eval"))
    p.add_argument("--msmt-child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.scale, args.repeats = 20, 1
    if args.msmt_child:
        msmt_child(args.msmt_child, args.repeats, args.scale)
        return 0
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; valid: {', '.join(CASES)}")
    # The MSMT17 children run first: Linux carries the parent's RSS at fork time into the
    # child's ru_maxrss, so they are spawned before this process imports torch or holds
    # torchreid's matrices (their VmHWM, the reported peak, starts afresh at exec anyway).
    names.sort(key=lambda n: n != "msmt")
    rows = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        if name == "msmt":
            rows.append(bench_msmt("default", args.repeats, args.scale))
            rows.append(bench_msmt("overlap", args.repeats, args.scale))
        else:
            rows.append(bench_market(name, args.repeats, args.scale))
    print(markdown(rows))
    # After the children: metadata() reads the versions without importing torch anyway.
    import numba  # the ranking kernel's compiler: its version is part of the result

    environment = metadata(
        numba=numba.__version__, load_average_1min=os.getloadavg()[0]
    )  # a busy machine skews every ratio
    result = {"benchmark": "bench_eval", "environment": environment, "max_rank": MAX_RANK, "scale": args.scale}
    write_json_atomic(args.out, {**result, "rows": rows})
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
