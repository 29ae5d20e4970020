#!/usr/bin/env python
"""k-reciprocal re-ranking: time and peak memory on the Market-1501 shape (3,368 queries,
15,913 gallery, d=512 by default), ours (FAISS neighbours, sparse Jaccard) beside
torchreid's dense ``re_ranking`` on a smaller shape it can hold (--dense-scale of it).

Each measurement runs in its own subprocess so that its peak RSS (ru_maxrss) is its own.
Features are clustered synthetic ones (identities x crops); results ->
benchmarks/results/bench_rerank-<cpu>.json.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from bench_record import metadata, result_path, write_json


def features(nq, ng, d, seed=0, ids=750):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, d)).astype(np.float32)
    q = centres[rng.integers(0, ids, nq)] + 0.8 * rng.normal(size=(nq, d)).astype(np.float32)
    g = centres[rng.integers(0, ids, ng)] + 0.8 * rng.normal(size=(ng, d)).astype(np.float32)
    return q.astype(np.float32), g.astype(np.float32)


def worker(which, nq, ng, d):
    q, g = features(nq, ng, d)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.time()
    if which == "ours":
        from reid_srdl.evaluation.rerank import k_reciprocal_distances

        k_reciprocal_distances(q, g)
    else:
        from torchreid.reid.utils.rerank import re_ranking

        from reid_srdl.index.exact import pairwise_squared_l2

        dist = lambda a, b: np.sqrt(pairwise_squared_l2(a, b))
        re_ranking(dist(q, g), dist(q, q), dist(g, g), 20, 6, 0.3)
    seconds = time.time() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "impl": which,
                "queries": nq,
                "gallery": ng,
                "dim": d,
                "seconds": seconds,
                "peak_rss_mb": peak,
                "rss_before_mb": base,
            }
        )
    )


def run(which, nq, ng, d):
    out = subprocess.run(
        [sys.executable, __file__, "--worker", which, str(nq), str(ng), str(d)],
        capture_output=True,
        text=True,
        check=True,
    )
    line = [text for text in out.stdout.splitlines() if text.startswith("{")][-1]
    print(line, flush=True)
    return json.loads(line)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--worker", nargs=4)
    p.add_argument("--queries", type=int, default=3368)
    p.add_argument("--gallery", type=int, default=15913)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--dense-scale", type=float, default=0.25)
    p.add_argument("--out", default=result_path("bench_rerank"))
    args = p.parse_args()
    if args.worker:
        which, nq, ng, d = args.worker
        return worker(which, int(nq), int(ng), int(d))
    small = (int(args.queries * args.dense_scale), int(args.gallery * args.dense_scale), args.dim)
    rows = [run("ours", *small), run("torchreid_dense", *small), run("ours", args.queries, args.gallery, args.dim)]
    result = {
        "k1": 20,
        "k2": 6,
        "lambda": 0.3,
        "runs": rows,
        "environment": metadata(),
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
