#!/usr/bin/env python
"""Gallery search at scale: IVF-PQ / IVF-Flat on a synthetic N x D gallery (default 1M x 512).

The gallery is clustered (K centres + Gaussian noise, like identities with several crops) and
generated chunk by chunk from fixed seeds, so it is never held whole: peak RSS stays far
below the 2 GB of the float32 gallery.  Ground truth is exact search (faiss IndexFlatL2 over
each chunk, merged).  Reported: build time (train + add), query latency p50/p99 for single
queries and for batches, recall@10 against exact search for several nprobe, index size,
peak RSS.  Results go to benchmarks/results/bench_search_scale-<cpu>.json, one entry per index kind
(each kind runs in its own process, so peak RSS is its own; the exact ground truth is
computed once and cached in the temp folder).

IVF-PQ is built with exact re-scoring (``--rescore R``: the float vectors are kept beside the
codes, memory-mapped on load); each nprobe is measured with R = 1 (the plain PQ ranking: the
same top-k set, only re-sorted) and with the given R.

    python benchmarks/bench_search_scale.py                      # 1M x 512, IVF-PQ + re-scoring
    python benchmarks/bench_search_scale.py --kind ivf_flat
    python benchmarks/bench_search_scale.py --n 200000 --kind ivf_flat
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import faiss
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_record import metadata, result_path, write_json

from reid_srdl.index.ivf import IVFIndex, load_index, save_index


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_centres(num, d, seed):
    return (np.random.default_rng(seed).normal(size=(num, d)) * 1.0).astype(np.float32)


def chunk(i, rows, centres, seed, noise=0.6):
    rng = np.random.default_rng(seed + 1 + i)
    labels = rng.integers(0, len(centres), rows)
    return centres[labels] + rng.normal(scale=noise, size=(rows, centres.shape[1])).astype(np.float32)


def gallery_chunks(n, chunk_rows, centres, seed):
    for i, start in enumerate(range(0, n, chunk_rows)):
        yield start, chunk(i, min(chunk_rows, n - start), centres, seed)


def exact_topk(xq, n, chunk_rows, centres, seed, k):
    heap = faiss.ResultHeap(len(xq), k)
    for start, xb in gallery_chunks(n, chunk_rows, centres, seed):
        d, i = faiss.knn(xq, xb, k)
        heap.add_result(d, i + start)
    heap.finalize()
    return heap.I


def cached_truth(args, xq, centres):
    """Exact top-10 ids of the queries (and the seconds it took), cached per gallery shape."""
    key = f"{args.n}x{args.d}_c{args.clusters}_s{args.seed}_q{args.queries}"
    path = os.path.join(tempfile.gettempdir(), f"reid_srdl_search_truth_{key}.npz")
    if os.path.isfile(path):
        with np.load(path) as z:
            return z["ids"], float(z["seconds"])
    t0 = time.time()
    truth = exact_topk(xq, args.n, args.chunk, centres, args.seed, 10)
    seconds = time.time() - t0
    np.savez(path, ids=truth, seconds=seconds)
    return truth, seconds


def percentiles_ms(times):
    t = np.asarray(times) * 1000
    return {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--kind", default="ivf_pq", choices=["ivf_pq", "ivf_flat"])
    p.add_argument("--nlist", type=int, default=4096)
    p.add_argument("--pq-m", type=int, default=64)
    p.add_argument("--train", type=int, default=65536, help="training sample (from the gallery)")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--chunk", type=int, default=100_000)
    p.add_argument("--clusters", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rescore",
        type=int,
        nargs="+",
        default=[4, 16],
        help="ivf_pq: candidates per result re-ranked exactly (1 = plain PQ ranking)",
    )
    p.add_argument("--out", default=result_path("bench_search_scale"))
    args = p.parse_args()

    centres = make_centres(args.clusters, args.d, args.seed)
    # Queries: fresh crops of gallery identities (never in the gallery itself).
    xq = chunk(10_000, args.queries, centres, args.seed)
    truth, exact_seconds = cached_truth(args, xq, centres)
    print(f"exact ground truth: {exact_seconds:.1f}s, peak RSS {peak_rss_mb():.0f} MB", flush=True)

    rescore = max(args.rescore) if args.kind == "ivf_pq" else 0
    index = IVFIndex(args.d, args.kind, nlist=args.nlist, pq_m=args.pq_m, nprobe=args.nprobe[0], rescore=rescore)
    t0 = time.time()
    sample = np.concatenate([x for _s, x in gallery_chunks(min(args.n, args.train), args.chunk, centres, args.seed)])
    index.train(sample[: args.train])
    del sample
    train_seconds = time.time() - t0
    for _start, xb in gallery_chunks(args.n, args.chunk, centres, args.seed):
        index.add(xb)
    build_seconds = time.time() - t0
    print(f"build: train {train_seconds:.1f}s, total {build_seconds:.1f}s, peak RSS {peak_rss_mb():.0f} MB", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gallery.index")
        save_index(index, path)
        index_mb = os.path.getsize(path) / 2**20
        codes_mb = index_mb
        if rescore:  # the PQ index alone, without the float vectors kept for re-scoring
            faiss.write_index(index._cpu.base_index, path + ".codes")
            codes_mb = os.path.getsize(path + ".codes") / 2**20
        del index
        rss_before_load = peak_rss_mb()
        index = load_index(path, args.d, mmap=True)
        per_nprobe = []
        settings = [(n, r) for n in args.nprobe for r in (sorted({1, *args.rescore}) if rescore else [0])]
        for nprobe, k_factor in settings:
            index.nprobe = nprobe
            if k_factor:
                index._cpu.k_factor = float(k_factor)
            _d, ids = index.search(xq, 10)
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
            single = []
            for row in xq[:200]:
                t = time.perf_counter()
                index.search(row[None], 10)
                single.append(time.perf_counter() - t)
            batches = []
            for start in range(0, len(xq), 100):
                t = time.perf_counter()
                index.search(xq[start : start + 100], 10)
                batches.append(time.perf_counter() - t)
            entry = {
                "nprobe": nprobe,
                "rescore": k_factor,
                "recall_at_10": recall,
                "single_query": percentiles_ms(single),
                "batch_100": percentiles_ms(batches),
            }
            print(json.dumps(entry), flush=True)
            per_nprobe.append(entry)
    result = {
        "gallery": [args.n, args.d],
        "kind": args.kind,
        "nlist": args.nlist,
        "pq_m": args.pq_m if args.kind == "ivf_pq" else None,
        "train_sample": args.train,
        "queries": args.queries,
        "exact_search_seconds": exact_seconds,
        "train_seconds": train_seconds,
        "build_seconds": build_seconds,
        "index_file_mb": index_mb,
        "pq_codes_file_mb": codes_mb if rescore else None,
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_before_load_mb": rss_before_load,
        "float32_gallery_mb": args.n * args.d * 4 / 2**20,
        "threads": faiss.omp_get_max_threads(),
        "load_average_at_end": list(os.getloadavg()),
        "results": per_nprobe,
        "environment": metadata(),
    }
    runs = {}
    if os.path.isfile(args.out):
        with open(args.out) as f:
            previous = json.load(f)
        runs = previous if "kind" not in previous else {}  # older single-run layout: replaced
    runs[args.kind] = result
    write_json(args.out, runs)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
