"""Helpers of the gallery-store tests: engines to run the contract against, data with
identity structure, brute-force references, subprocesses."""

import os
import subprocess
import sys
import uuid

import numpy as np

from reid_srdl.search.stores import GalleryItem, open_store
from reid_srdl.search.stores.lite_server import free_port, start_lite_server  # noqa: F401  (the tests' names)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINES = ("faiss", "lite", "server")
HOSTILE_CAMERAS = ["c1", 'c"2', "c\\3", 'c1" or camera != "', "c'4", "c²", ""]


def has_pymilvus() -> bool:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError:
        return False
    return True


class Target:
    """Where one test's gallery lives, in one engine: ``open(dim=..., create=...)`` opens it in
    this process, ``spec`` says how another process opens it (``open_store(**spec)``)."""

    def __init__(self, engine: str, tmp_path, server_uri=None):
        self.engine = engine
        if engine == "faiss":
            self.spec = {"path_or_uri": str(tmp_path / "store")}
        elif engine == "lite":
            self.spec = {"path_or_uri": str(tmp_path / "gallery.db")}
        else:
            self.spec = {"path_or_uri": server_uri, "collection": f"t{uuid.uuid4().hex[:12]}"}

    def open(self, **kwargs):
        return open_store(**self.spec, **kwargs)


def gallery(n=120, dim=16, ids=12, seed=0, cameras=HOSTILE_CAMERAS):
    """Features with identity structure (a centre per person + noise) and varied items:
    hostile camera names, times (some unknown), boxes (some none), tracks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim)) * 3
    pids = rng.integers(0, ids, n)
    x = (centres[pids] + rng.standard_normal((n, dim))).astype(np.float32)
    items = []
    for i in range(n):
        items.append(
            GalleryItem(
                source=f"cam{i % 3}.mp4",
                camera=cameras[i % len(cameras)],
                timestamp=None if i % 7 == 0 else 1.7e9 + 10.0 * i,
                frame=i,
                box=None if i % 5 == 0 else (i, 2 * i, 30 + i % 4, 60),
                track=i % 9,
                pid=int(pids[i]) if i % 6 else -1,
            )
        )
    queries = (centres[rng.integers(0, ids, 6)] + rng.standard_normal((6, dim))).astype(np.float32)
    return x, items, queries


def brute_force(x, items, query, admit=None):
    """Ids and float64 L2 distances of the admitted items, nearest first."""
    d = np.sqrt(((x.astype(np.float64) - query.astype(np.float64)) ** 2).sum(axis=1))
    keep = [i for i in range(len(items)) if admit is None or admit(items[i])]
    order = sorted(keep, key=lambda i: d[i])
    return np.asarray([items[i].id for i in order], dtype=np.int64), d[order]


def assert_same_ranking(got_ids, got_d, exp_ids, exp_d, k, atol=1e-5):
    """The store's top k against brute force: same distances position by position (within
    atol), each id one of the expected ids at that distance (ties compared as sets), no
    repeats, padding -1 / inf beyond the admitted items."""
    n = min(k, len(exp_ids))
    assert (got_ids[n:] == -1).all() and np.isinf(got_d[n:]).all()
    np.testing.assert_allclose(got_d[:n], exp_d[:n], rtol=0, atol=atol)
    for i in range(n):
        assert got_ids[i] in set(exp_ids[np.abs(exp_d - got_d[i]) <= atol].tolist())
    assert len(set(got_ids[:n].tolist())) == n


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -c code`` from the repository root, importing this checkout."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def popen_python(code: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
