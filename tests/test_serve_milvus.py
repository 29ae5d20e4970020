"""Several tools/serve.py processes over one Milvus gallery, through a Milvus-protocol server
(``milvus-lite server`` on 127.0.0.1, started by the stores' helper): an add through one process
is found by a search through another, with its camera, and its crop is served by both.

This process holds no Milvus connection: the gallery is built in a subprocess.  (pymilvus 3
caches connections per URI; one closed here and reused after a minute of idling was refused
by milvus-lite's server with "Too many pings" -- a test-process hazard, not the servers'.)"""

import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="httpx is in the test extra")

from serve_helpers import build_gallery

from reid_srdl.search.stores import item_id
from reid_srdl.search.stores.lite_server import free_port
from reid_srdl.serve.service import content_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "milvus-owner-token-0123456789"


@pytest.fixture
def milvus_server(tmp_path):
    """A milvus-lite server of this test alone (its default collection is ours to use)."""
    from store_helpers import has_pymilvus, start_lite_server

    if not has_pymilvus():
        pytest.skip("pymilvus / milvus-lite not installed (pip install -e '.[milvus]')")
    proc, uri = start_lite_server(str(tmp_path / "milvus_data"))
    yield uri
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def build_in_subprocess(gallery: dict, uri: str) -> int:
    """build_store(gallery, uri) run by another Python process; returns the number of items."""
    script = (
        "import json, pathlib, sys\n"
        f"sys.path[:0] = [{REPO!r}, {os.path.join(REPO, 'tests')!r}]\n"
        "from serve_helpers import build_store\n"
        "g = json.loads(sys.argv[1]); g['tmp'] = pathlib.Path(g['tmp'])\n"
        "print(len(build_store(g, sys.argv[2])['items']))\n"
    )
    plain = {k: (str(v) if k == "tmp" else v) for k, v in gallery.items()}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(plain), uri], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def start_server(store_uri, model, port, upload_dir, roots):
    argv = [sys.executable, os.path.join(REPO, "tools", "serve.py"), "--store", store_uri, "--model", model]
    argv += ["--port", str(port), "--allow-add", "--upload-dir", upload_dir]
    for root in roots:
        argv += ["--image-root", root]
    env = dict(os.environ, REID_SRDL_TOKEN=TOKEN)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_healthy(url, proc, seconds=120):
    deadline = time.time() + seconds
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"serve.py did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.3)


@pytest.mark.slow
def test_an_add_through_one_server_is_found_through_another(tiny_market_root, tmp_path, milvus_server):
    from PIL import Image

    gallery = build_gallery(tiny_market_root, tmp_path)
    n = build_in_subprocess(gallery, milvus_server)
    uploads = str(tmp_path / "uploads")
    roots = [str(tmp_path)]
    ports = [free_port(), free_port()]
    procs = [start_server(milvus_server, gallery["model"], p, uploads, roots) for p in ports]
    a, b = (f"http://127.0.0.1:{p}" for p in ports)
    try:
        for url, proc in zip((a, b), procs):
            wait_healthy(url, proc)
        assert httpx.get(b + "/stats").json()["images"] == n
        new = gallery["queries"][4]
        with open(new, "rb") as f:
            body = f.read()
        r = httpx.post(
            a + "/gallery",
            files=[("files", ("new.jpg", body, "image/jpeg"))],
            data={"cameras": "lobby", "pids": "901"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        )
        assert r.status_code == 200 and r.json()["added"] == 1, r.text
        with Image.open(new) as im:
            expected_source = os.path.join(uploads, content_name(im.convert("RGB")))
        expected_id = item_id(expected_source, -1, None)
        # Through the other process: found first, at distance 0, with what A stored.
        out = httpx.post(b + "/search", files={"file": ("q.jpg", body, "image/jpeg")}, data={"k": "3"}, timeout=120)
        top = out.json()["hits"][0]
        assert top["id"] == expected_id and top["distance"] < 1e-3 and top["id_str"] == str(expected_id)
        assert (top["camera"], top["pid"], top["source"]) == ("lobby", 901, expected_source)
        assert httpx.get(b + "/stats").json()["images"] == n + 1
        crop = httpx.get(b + top["image_url"])
        assert crop.status_code == 200
        with Image.open(new) as im:
            served = np.asarray(Image.open(io.BytesIO(crop.content)).convert("RGB"))
            assert np.array_equal(served, np.asarray(im.convert("RGB")))  # a lossless copy of the upload
        # And the picked item, through A, leaves itself out.
        picked = httpx.post(a + "/search", data={"gallery_id": top["id_str"], "k": "3"}, timeout=60).json()
        assert picked["query"]["id"] == expected_id and expected_id not in [h["id"] for h in picked["hits"]]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
