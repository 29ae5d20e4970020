#!/usr/bin/env python
"""Bounded load test of tools/serve.py on 127.0.0.1: concurrent image searches with a few
adds in between; p50/p99 latency, queries/s, errors, and the gallery file intact afterwards.

    python benchmarks/bench_serve_load.py                         # 8 clients x 200 queries, 15k gallery
    python benchmarks/bench_serve_load.py --gallery-size 300 --clients 2 --queries 5 --adds 2   # smoke

The gallery holds ``--gallery-size`` random features of the model's dimension (what the
server searches) with paths to a few generated crops; every query is a real upload that the
server decodes, embeds with the network (``--model``, default: a fresh small_reid at 128x64)
and searches exactly.  The server runs in its own process (``tools/serve.py``).  Results:
benchmarks/results/bench_serve_load-<cpu>.json (with machine, date and commit).  Run it on an idle
machine: other processes on the same cores change every latency.
"""

import argparse
import io
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_record import metadata, result_path, write_json


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg(rng, h=128, w=64) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def prepare(folder: str, size: int, model_path: str, seed: int) -> str:
    """A gallery file of ``size`` random features (the model's dimension) and a model file."""
    import torch

    from reid_srdl.core.checkpoint import save_model_file
    from reid_srdl.models import build_model
    from reid_srdl.models.model_file import load_model_file
    from reid_srdl.search import ReIDSearcher

    rng = np.random.default_rng(seed)
    if model_path is None:
        torch.manual_seed(seed)
        model_path = os.path.join(folder, "final.pt")
        save_model_file(
            build_model("small_reid", 10, feature_dim=128).eval(), model_path, task="reid", height=128, width=64
        )
    net, _ = load_model_file(model_path)
    dim = net.spec["feature_dim"]
    crops = os.path.join(folder, "crops")
    os.makedirs(crops)
    names = []
    for i in range(16):
        names.append(os.path.join(crops, f"{i:04d}.jpg"))
        with open(names[-1], "wb") as f:
            f.write(jpeg(rng))
    feats = rng.standard_normal((size, dim)).astype(np.float32)
    pids = np.arange(size) % max(1, size // 10)
    gallery = os.path.join(folder, "gallery.npz")
    ReIDSearcher(feats, pids, np.arange(size) % 6, [names[i % len(names)] for i in range(size)]).save(gallery)
    return gallery, model_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery-size", type=int, default=15000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--queries", type=int, default=200, help="queries per client")
    p.add_argument("--adds", type=int, default=4, help="POST /gallery calls spread over the run (2 images each)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--model", help="model file (default: a fresh small_reid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=result_path("bench_serve_load"))
    args = p.parse_args(argv)

    import httpx

    with tempfile.TemporaryDirectory() as folder:
        gallery, model = prepare(folder, args.gallery_size, args.model, args.seed)
        token = secrets.token_urlsafe(32)  # adds are the owner's: the server takes it from the environment
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                os.path.join(ROOT, "tools", "serve.py"),
                "--gallery",
                gallery,
                "--model",
                model,
                "--port",
                str(port),
                "--allow-model-mismatch",
                "--upload-dir",
                os.path.join(folder, "uploads"),
                "--allow-add",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "REID_SRDL_TOKEN": token},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while True:
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"the server did not start:\n{server.stdout.read() if server.stdout else ''}")
                time.sleep(0.2)
            rng = np.random.default_rng(args.seed + 1)
            bodies = [jpeg(rng) for _ in range(32)]
            add_bodies = [jpeg(rng) for _ in range(2 * args.adds)]
            latencies, errors, lock = [], [], threading.Lock()
            total = args.clients * args.queries
            done = [0]

            def client(c: int) -> None:
                with httpx.Client(base_url=url, timeout=120) as http:
                    for i in range(args.queries):
                        body = bodies[(c * args.queries + i) % len(bodies)]
                        t0 = time.perf_counter()
                        try:
                            r = http.post(
                                "/search", files={"file": ("q.jpg", body, "image/jpeg")}, data={"k": str(args.k)}
                            )
                            ok = r.status_code == 200 and len(r.json()["hits"]) == args.k
                        except httpx.HTTPError as e:
                            ok, r = False, e
                        dt = time.perf_counter() - t0
                        with lock:
                            done[0] += 1
                            latencies.append(dt)
                            if not ok:
                                errors.append(str(getattr(r, "text", r))[:200])

            def adder() -> None:
                with httpx.Client(base_url=url, timeout=300) as http:
                    for a in range(args.adds):
                        while done[0] < (a + 1) * total / (args.adds + 1):
                            time.sleep(0.05)
                        # Images not added before: the server counts a repeated image as a duplicate.
                        files = [("files", (f"a{a}_{j}.jpg", add_bodies[2 * a + j], "image/jpeg")) for j in range(2)]
                        r = http.post("/gallery", files=files, headers={"Authorization": f"Bearer {token}"})
                        if r.status_code != 200:
                            with lock:
                                errors.append(f"add: {r.status_code} {r.text[:200]}")

            threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
            threads.append(threading.Thread(target=adder))
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            stats = httpx.get(url + "/stats", timeout=30).json()
        finally:
            server.terminate()
            server.wait(timeout=30)
        from reid_srdl.search import ReIDSearcher

        expected = args.gallery_size + 2 * args.adds
        reloaded = ReIDSearcher.load(gallery)
        intact = len(reloaded) == expected == stats["images"] and np.isfinite(reloaded.features).all()

    lat = np.asarray(latencies) * 1000
    result = {
        "gallery_size": args.gallery_size,
        "clients": args.clients,
        "queries_per_client": args.queries,
        "adds": args.adds,
        "k": args.k,
        "queries": len(lat),
        "errors": len(errors),
        "first_errors": errors[:5],
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "queries_per_second": len(lat) / wall,
        "wall_seconds": wall,
        "gallery_intact": bool(intact),
        "gallery_images_after": expected,
        "environment": metadata(),
    }
    write_json(args.out, result)
    print("| gallery | clients x queries | adds | p50 (ms) | p99 (ms) | queries/s | errors | gallery intact |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.gallery_size} | {args.clients} x {args.queries} | {args.adds} | {result['p50_ms']:.1f} | "
        f"{result['p99_ms']:.1f} | {result['queries_per_second']:.1f} | {len(errors)} | {intact} |"
    )
    return 0 if not errors and intact else 1


if __name__ == "__main__":
    sys.exit(main())
