#!/usr/bin/env python
"""Gallery stores side by side: the faiss folder (flat, IVF-PQ) against Milvus Lite (FLAT, IVF)
on one synthetic gallery (default 1M x 512, features with identity structure).

Per engine, in its own process (so its peak RSS is its own):

* ingest: the gallery added in batches of ``--batch`` items (camera, time, frame, pid per item),
  items per second over the whole ingest;
* the cost of one add of ``--probe`` items when the store holds ``--small`` items (10k) and
  when it holds all ``--n`` (median of ``--probe-repeats``): an add must cost O(batch), so the
  two are of the same order whatever the gallery's size;
* query latency p50/p99, one query at a time (k = ``--k``), without and with a camera filter;
* recall@k against exact search (faiss over the same float32 vectors, computed once in the
  parent and cached in the temp folder);
* peak RSS, and the store's size on disk.

The machine is part of the result: results go to
``benchmarks/results/bench_stores-<cpu>.json`` (``bench_record``: CPU, cores, versions, date,
commit; the parameters; one entry per engine).  Run it on an otherwise idle machine; a full
run takes hours (Milvus Lite is a Python implementation).

    python benchmarks/bench_stores.py                                   # 1M x 512, all four
    python benchmarks/bench_stores.py --engines faiss_flat,milvus_flat --n 200000
    python benchmarks/bench_stores.py --n 3000 --d 32 --ids 40 --small 1000 --queries 20 --out /tmp/b.json  # smoke
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_record  # (benchmarks/bench_record.py: machine metadata, result names)

ENGINES = {
    # name: (store file name, index spec given to open_store)
    "faiss_flat": ("faiss_flat", {"kind": "flat"}),
    "faiss_ivfpq": ("faiss_ivfpq", {"kind": "ivf_pq", "nlist": 1024, "nprobe": 16, "pq_m": 64, "rescore": 4}),
    "milvus_flat": ("milvus_flat.db", {"kind": "FLAT"}),
    "milvus_ivf": ("milvus_ivf.db", {"kind": "IVF_FLAT", "nlist": 1024, "nprobe": 16}),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated: {', '.join(ENGINES)}")
    p.add_argument("--n", type=int, default=1_000_000, help="gallery items")
    p.add_argument("--d", type=int, default=512, help="feature dimension")
    p.add_argument("--ids", type=int, default=20_000, help="identities (cluster centres)")
    p.add_argument("--batch", type=int, default=2000, help="items per add while ingesting")
    p.add_argument("--small", type=int, default=10_000, help="gallery size of the first add-cost probe")
    p.add_argument("--probe", type=int, default=100, help="items per probe add")
    p.add_argument("--probe-repeats", type=int, default=5)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--nlist", type=int, help="override nlist of the IVF engines (default 1024)")
    p.add_argument("--pq-m", type=int, help="override pq_m of faiss_ivfpq (default 64; must divide --d)")
    p.add_argument("--workdir", help="where the stores are written (default: a temp folder, removed)")
    p.add_argument("--out", help="result JSON (default: benchmarks/results/bench_stores-<cpu>.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one engine in this process
    args = p.parse_args(argv)
    unknown = set(args.engines.split(",")) - set(ENGINES)
    if unknown:
        p.error(f"unknown engine(s) {', '.join(sorted(unknown))}; known: {', '.join(ENGINES)}")
    if not 0 < args.small < args.n:
        p.error("--small must be between 0 and --n")
    return args


# ----------------------------------------------------------------------------- data
def centres(args):
    return np.random.default_rng(args.seed).normal(size=(args.ids, args.d)).astype(np.float32)


def chunk(args, start, rows, cent):
    """Items start..start+rows: a centre per identity + noise; deterministic per position."""
    rng = np.random.default_rng([args.seed, start])
    labels = rng.integers(0, len(cent), rows)
    x = cent[labels] + rng.normal(scale=0.6, size=(rows, args.d)).astype(np.float32)
    return x.astype(np.float32), labels


def items_of(start, labels):
    from reid_srdl.search.stores import GalleryItem

    return [
        GalleryItem(source=f"bench/cam{(start + i) % 8}.mp4", camera=f"c{(start + i) % 8 + 1}",
                    timestamp=1.7e9 + (start + i) * 0.1, frame=start + i, pid=int(labels[i]))
        for i in range(len(labels))
    ]  # fmt: skip


def query_set(args, cent):
    rng = np.random.default_rng([args.seed, 10**9])
    labels = rng.integers(0, len(cent), args.queries)
    return (cent[labels] + rng.normal(scale=0.6, size=(args.queries, args.d))).astype(np.float32)


def exact_truth(args, cent, queries, camera=None):
    """Exact top-k rows (all items, or only camera ``c1``) by faiss over every chunk, cached."""
    import faiss

    key = f"{args.n}x{args.d}_i{args.ids}_s{args.seed}_q{args.queries}_k{args.k}_b{args.batch}_{camera}"
    path = os.path.join(tempfile.gettempdir(), f"reid_srdl_bench_stores_{key}.npy")
    if os.path.isfile(path):
        return np.load(path)
    heap = faiss.ResultHeap(len(queries), args.k)
    for start in range(0, args.n, args.batch):
        x, _ = chunk(args, start, min(args.batch, args.n - start), cent)
        rows = np.arange(start, start + len(x))
        if camera is not None:
            keep = rows % 8 == 0
            x, rows = x[keep], rows[keep]
        if len(x):
            d, i = faiss.knn(queries, x, min(args.k, len(x)))
            i = np.where(i >= 0, rows[np.maximum(i, 0)], -1)
            if d.shape[1] < args.k:
                d = np.pad(d, ((0, 0), (0, args.k - d.shape[1])), constant_values=np.inf)
                i = np.pad(i, ((0, 0), (0, args.k - i.shape[1])), constant_values=-1)
            heap.add_result(np.ascontiguousarray(d), np.ascontiguousarray(i))
    heap.finalize()
    np.save(path, heap.I)
    return heap.I


# ----------------------------------------------------------------------------- one engine
def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def disk_mb(path: str) -> float:
    total = 0
    for folder, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total / 2**20


def probe_add(store, args, cent, next_start, label):
    """Median seconds of ``probe_repeats`` adds of ``probe`` new items."""
    times = []
    for r in range(args.probe_repeats):
        start = next_start + r * args.probe
        x, labels = chunk(args, start, args.probe, cent)
        t = time.perf_counter()
        added = store.add(x, items_of(start, labels))
        times.append(time.perf_counter() - t)
        assert added == args.probe, f"{label}: {added} of {args.probe} probe items added"
    return float(np.median(times)), next_start + args.probe_repeats * args.probe


def run_engine(args, name):
    from reid_srdl.search.stores import SearchFilter, item_id, open_store

    filename, spec = ENGINES[name]
    if args.nlist and "nlist" in spec:
        spec = dict(spec, nlist=args.nlist)
    if args.pq_m and "pq_m" in spec:
        spec = dict(spec, pq_m=args.pq_m)
    path = os.path.join(args.workdir, filename)
    cent = centres(args)
    store = open_store(path, dim=args.d, create=True, index=spec)
    result = {"engine": name, "index": store.index}
    # Probe adds are numbered past the gallery, so they never collide with it.
    probe_start = args.n
    t0 = time.perf_counter()
    ingest_seconds = 0.0
    for start in range(0, args.n, args.batch):
        x, labels = chunk(args, start, min(args.batch, args.n - start), cent)
        t = time.perf_counter()
        store.add(x, items_of(start, labels))
        ingest_seconds += time.perf_counter() - t
        if start < args.small <= start + len(x):
            result["add_seconds_small"], probe_start = probe_add(store, args, cent, probe_start, "small")
            result["size_at_small_probe"] = len(store)
    result["ingest_items_per_s"] = args.n / ingest_seconds
    result["ingest_wall_seconds"] = time.perf_counter() - t0
    result["rss_after_ingest_mb"] = rss_mb()
    result["add_seconds_full"], probe_start = probe_add(store, args, cent, probe_start, "full")
    result["size_at_full_probe"] = len(store)
    result["add_cost_ratio_full_over_small"] = result["add_seconds_full"] / result["add_seconds_small"]
    queries = query_set(args, cent)
    # The probe items are searched too: the truth covers the gallery, so they are filtered out.
    probe_ids = tuple(item_id(f"bench/cam{(i) % 8}.mp4", i, None) for i in range(args.n, probe_start))
    for label, camera in (("", None), ("_camera_filter", "c1")):
        f = SearchFilter(cameras=None if camera is None else (camera,), exclude_ids=probe_ids)
        truth = exact_truth(args, cent, queries, camera)
        times, found = [], []
        for q in range(len(queries)):
            t = time.perf_counter()
            hits = store.search(queries[q : q + 1], args.k, [f])
            times.append(time.perf_counter() - t)
            found.append(hits.ids[0])
        truth_ids = [{item_id(f"bench/cam{r % 8}.mp4", int(r), None) for r in row if r >= 0} for row in truth]
        recall = np.mean([len(set(f_.tolist()) & t_) / max(1, len(t_)) for f_, t_ in zip(found, truth_ids)])
        ms = np.asarray(times) * 1000
        result[f"query_p50_ms{label}"] = float(np.percentile(ms, 50))
        result[f"query_p99_ms{label}"] = float(np.percentile(ms, 99))
        result[f"recall_at_{args.k}{label}"] = float(recall)
    store.close()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["disk_mb"] = disk_mb(path)
    return result


# ----------------------------------------------------------------------------- driver
def _version(dist: str):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(run_engine(args, args.one)))
        return 0
    own_workdir = args.workdir is None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="bench_stores_")
    cent = centres(args)
    queries = query_set(args, cent)
    t = time.perf_counter()
    for camera in (None, "c1"):
        exact_truth(args, cent, queries, camera)
    print(f"exact ground truth: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    results = []
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--workdir")]
    try:
        for name in args.engines.split(","):
            cmd = [sys.executable, os.path.abspath(__file__), *passthrough, "--workdir", args.workdir, "--one", name]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:
                print(f"{name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            shutil.rmtree(os.path.join(args.workdir, ENGINES[name][0]), ignore_errors=True)
            print(f"{name}: done", file=sys.stderr)
    finally:
        if own_workdir:
            shutil.rmtree(args.workdir, ignore_errors=True)
    keys = ["ingest_items_per_s", "add_seconds_small", "add_seconds_full", "add_cost_ratio_full_over_small",
            "query_p50_ms", "query_p99_ms", f"recall_at_{args.k}", "query_p50_ms_camera_filter",
            f"recall_at_{args.k}_camera_filter", "peak_rss_mb", "disk_mb"]  # fmt: skip
    print("| engine | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r in results:
        print(f"| {r['engine']} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |")
    names = ("n", "d", "ids", "batch", "small", "probe", "probe_repeats", "queries", "k", "nlist", "pq_m")
    env = bench_record.metadata(pymilvus=_version("pymilvus"), milvus_lite=_version("milvus-lite"))
    print(bench_record.describe(env), file=sys.stderr)
    out = args.out or bench_record.result_path("bench_stores")
    bench_record.write_json(
        out, {"environment": env, "params": {k: getattr(args, k) for k in names}, "results": results}
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
