#!/usr/bin/env python
"""Bounded load test of tools/serve.py on 127.0.0.1: concurrent image searches with a few
adds in between; p50/p99 latency, queries/s, errors, and the gallery intact afterwards.

    python benchmarks/bench_serve_load.py                         # 8 clients x 200 queries, 15k gallery
    python benchmarks/bench_serve_load.py --gallery-size 300 --clients 2 --queries 5 --adds 2   # smoke
    python benchmarks/bench_serve_load.py --store milvus          # 2 serve.py over milvus-lite server
    python benchmarks/bench_serve_load.py --store milvus --gallery-size 300 --clients 2 --queries 5 --adds 2

The gallery holds ``--gallery-size`` random features of the model's dimension (what the
server searches) with paths to a few generated crops; every query is a real upload that the
server decodes, embeds with the network (``--model``, default: a fresh small_reid at 128x64)
and searches exactly.  The servers run in their own processes (``tools/serve.py``).

``--store npz`` (the default): one server over an ``.npz`` gallery file, which every add
rewrites; afterwards the file is reloaded and must hold every vector.

``--store milvus``: ``milvus-lite server`` on 127.0.0.1 holds the gallery (converted from the
same ``.npz`` with ``tools/search.py convert``), and ``--servers`` (default 2) serve.py
processes serve it; the searches are spread over all of them in turn.  Adds go through the
first one only (the owner's token, ``--allow-add``; the others are read-only), and right after
each acknowledged add the added image is searched through another process: its top hit must
be the new item (distance < 1e-3, the source the adding server stored it under).  Afterwards
every process's ``/stats`` must count every item.

Results: benchmarks/results/bench_serve_load[-milvus]-<cpu>.json (with machine, date and
commit).  Run it on an idle machine: other processes on the same cores change every latency.
The script exits 1 on any error, an add not seen through another process, or a damaged gallery.
"""

import argparse
import io
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from bench_record import metadata, result_path, write_json

from reid_srdl.search.stores.lite_server import free_port

SEEN_DISTANCE = 1e-3  # an added image searched again is its own nearest item (float noise only)


def jpeg(rng, h=128, w=64) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def prepare(folder: str, size: int, model_path: str, seed: int) -> str:
    """A gallery file of ``size`` random features (the model's dimension), each with its own
    crop file, and a model file."""
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
    for i in range(16):
        with open(os.path.join(crops, f"{i:07d}.jpg"), "wb") as f:
            f.write(jpeg(rng))
    # One file per item: a store's item id is a function of its source, so items sharing a
    # path would be one item after the conversion.  Hard links of the 16 images cost no space.
    names = [os.path.join(crops, f"{i:07d}.jpg") for i in range(size)]
    for i in range(16, size):
        os.link(names[i % 16], names[i])
    feats = rng.standard_normal((size, dim)).astype(np.float32)
    pids = np.arange(size) % max(1, size // 10)
    gallery = os.path.join(folder, "gallery.npz")
    ReIDSearcher(feats, pids, np.arange(size) % 6, names).save(gallery)
    return gallery, model_path


def start_milvus_server(data_dir: str):
    """``milvus-lite server`` on 127.0.0.1 (a free port): (process, uri); one line if it cannot start."""
    from reid_srdl.search.stores.base import StoreError
    from reid_srdl.search.stores.lite_server import start_lite_server

    try:
        return start_lite_server(data_dir)
    except StoreError as e:
        raise SystemExit(str(e)) from None


def convert_to(gallery: str, uri: str) -> None:
    """The ``.npz`` gallery into the store at ``uri``, by the one command a user runs."""
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "search.py"), "convert", gallery, "--store", uri],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"tools/search.py convert failed:\n{done.stdout}{done.stderr}")


def start_serve(store: str, model: str, folder: str, token: str, writer: bool) -> tuple:
    """One tools/serve.py process: (process, url)."""
    port = free_port()
    argv = [sys.executable, os.path.join(ROOT, "tools", "serve.py"), "--store", store, "--model", model]
    argv += ["--port", str(port), "--allow-model-mismatch", "--image-root", folder]
    if writer:
        argv += ["--allow-add", "--upload-dir", os.path.join(folder, "uploads")]
    env = {**os.environ, "REID_SRDL_TOKEN": token} if writer else os.environ
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return proc, f"http://127.0.0.1:{port}"


def wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    import httpx

    deadline = time.time() + seconds
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise SystemExit(f"the server did not start:\n{proc.communicate()[0][-2000:]}")
        time.sleep(0.2)


def stored_source(folder: str, body: bytes) -> str:
    """Where the adding server stores an uploaded image (its name is a hash of its pixels)."""
    from PIL import Image

    from reid_srdl.serve.service import content_name

    with Image.open(io.BytesIO(body)) as im:
        return os.path.join(folder, "uploads", content_name(im.convert("RGB")))


def load(args, urls, token, folder) -> dict:
    """The clients and the adder against ``urls`` (adds through the first; with several
    servers each add is then searched through the next one)."""
    import httpx

    rng = np.random.default_rng(args.seed + 1)
    bodies = [jpeg(rng) for _ in range(32)]
    add_bodies = [jpeg(rng) for _ in range(2 * args.adds)]
    latencies, errors, lock = [], [], threading.Lock()
    per_server = [0] * len(urls)
    seen, total, done = [], args.clients * args.queries, [0]

    def client(c: int) -> None:
        https = [httpx.Client(base_url=u, timeout=120) for u in urls]
        try:
            for i in range(args.queries):
                n = c * args.queries + i
                which = n % len(urls)  # the searches go to every server in turn
                body = bodies[n % len(bodies)]
                t0 = time.perf_counter()
                try:
                    r = https[which].post(
                        "/search", files={"file": ("q.jpg", body, "image/jpeg")}, data={"k": str(args.k)}
                    )
                    ok = r.status_code == 200 and len(r.json()["hits"]) == args.k
                except httpx.HTTPError as e:
                    ok, r = False, e
                dt = time.perf_counter() - t0
                with lock:
                    done[0] += 1
                    latencies.append(dt)
                    per_server[which] += 1
                    if not ok:
                        errors.append(f"{urls[which]}: {str(getattr(r, 'text', r))[:200]}")
        finally:
            for h in https:
                h.close()

    def adder() -> None:
        with httpx.Client(timeout=300) as http:
            for a in range(args.adds):
                while done[0] < (a + 1) * total / (args.adds + 1):
                    time.sleep(0.05)
                # Images not added before: the server counts a repeated image as a duplicate.
                pair = add_bodies[2 * a : 2 * a + 2]
                files = [("files", (f"a{a}_{j}.jpg", b, "image/jpeg")) for j, b in enumerate(pair)]
                r = http.post(urls[0] + "/gallery", files=files, headers={"Authorization": f"Bearer {token}"})
                if r.status_code != 200 or r.json().get("added") != 2:
                    with lock:
                        errors.append(f"add: {r.status_code} {r.text[:200]}")
                    continue
                if len(urls) < 2:
                    continue
                # Acknowledged by the first server: at once, the other one finds it.
                other = urls[1 + a % (len(urls) - 1)]
                for b in pair:
                    r = http.post(other + "/search", files={"file": ("q.jpg", b, "image/jpeg")}, data={"k": "1"})
                    top = r.json()["hits"][0] if r.status_code == 200 and r.json()["hits"] else {}
                    found = top.get("distance", np.inf) < SEEN_DISTANCE and top.get("source") == stored_source(
                        folder, b
                    )
                    with lock:
                        seen.append(bool(found))
                        if not found:
                            errors.append(f"add {a} not found through {other}: {r.status_code} {str(top)[:200]}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    threads.append(threading.Thread(target=adder))
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    images = [httpx.get(u + "/stats", timeout=60).json()["images"] for u in urls]
    return {
        "latencies": latencies,
        "errors": errors,
        "wall": wall,
        "per_server": per_server,
        "seen": seen,
        "images": images,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", choices=("npz", "milvus"), default="npz", help="the gallery's engine (see above)")
    p.add_argument("--servers", type=int, help="serve.py processes (milvus only; default 2)")
    p.add_argument("--gallery-size", type=int, default=15000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--queries", type=int, default=200, help="queries per client")
    p.add_argument("--adds", type=int, default=4, help="POST /gallery calls spread over the run (2 images each)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--model", help="model file (default: a fresh small_reid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="result file (default: benchmarks/results/bench_serve_load[-milvus]-<cpu>.json)")
    args = p.parse_args(argv)
    if args.servers is None:
        args.servers = 2 if args.store == "milvus" else 1
    if args.store == "npz" and args.servers != 1:
        p.error("--servers: an .npz gallery has one writer; several servers need --store milvus")
    if args.servers < 1 or args.clients < 1 or args.queries < 1 or args.adds < 0 or args.gallery_size < args.k:
        p.error("--servers, --clients and --queries must be >= 1, --adds >= 0, --gallery-size >= --k")
    out = args.out or result_path("bench_serve_load", "milvus" if args.store == "milvus" else "")

    token = secrets.token_urlsafe(32)  # adds are the owner's: the server takes it from the environment
    procs = []
    with tempfile.TemporaryDirectory() as folder:
        gallery, model = prepare(folder, args.gallery_size, args.model, args.seed)
        try:
            if args.store == "milvus":
                milvus, store = start_milvus_server(os.path.join(folder, "milvus"))
                procs.append(milvus)
                convert_to(gallery, store)
            else:
                store = gallery
            servers = [start_serve(store, model, folder, token, writer=i == 0) for i in range(args.servers)]
            procs += [proc for proc, _ in servers]
            for proc, url in servers:
                wait_healthy(url, proc)
            run = load(args, [url for _, url in servers], token, folder)
        finally:
            for proc in reversed(procs):  # the serve.py processes first, the Milvus server last
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        expected = args.gallery_size + 2 * args.adds
        intact = all(n == expected for n in run["images"])
        if args.store == "npz":
            from reid_srdl.search import ReIDSearcher

            reloaded = ReIDSearcher.load(gallery)
            intact = intact and len(reloaded) == expected and bool(np.isfinite(reloaded.features).all())

    errors, seen = run["errors"], run["seen"]
    lat = np.asarray(run["latencies"]) * 1000
    result = {
        "store": "milvus-lite server" if args.store == "milvus" else "npz",
        "servers": args.servers,
        "gallery_size": args.gallery_size,
        "clients": args.clients,
        "queries_per_client": args.queries,
        "adds": args.adds,
        "k": args.k,
        "queries": len(lat),
        "queries_per_server": run["per_server"],
        "errors": len(errors),
        "first_errors": errors[:5],
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "queries_per_second": len(lat) / run["wall"],
        "wall_seconds": run["wall"],
        "adds_seen_through_another_server": f"{sum(seen)}/{len(seen)}" if args.servers > 1 else None,
        "images_per_server_after": run["images"],
        "gallery_intact": bool(intact),
        "gallery_images_after": expected,
        "environment": metadata(),
    }
    write_json(out, result)
    seen_col = result["adds_seen_through_another_server"] or "-"
    print("| store | servers | gallery | clients x queries | adds | seen elsewhere | p50 (ms) | p99 (ms) | queries/s | "
          "errors | gallery intact |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {result['store']} | {args.servers} | {args.gallery_size} | {args.clients} x {args.queries} | {args.adds} | "
        f"{seen_col} | {result['p50_ms']:.1f} | {result['p99_ms']:.1f} | {result['queries_per_second']:.1f} | "
        f"{len(errors)} | {intact} |"
    )
    for e in errors[:5]:
        print(f"error: {e}", file=sys.stderr)
    print(f"wrote {out}")
    return 0 if not errors and intact and all(seen) else 1


if __name__ == "__main__":
    sys.exit(main())
