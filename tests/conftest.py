"""Shared fixtures.

``tiny_market_root``: a small synthetic Market-1501 set (8 identities, ~0.2 s to write),
written once per test session.  ``tiny_reid_root``: that Market-1501 set plus tiny synthetic
DukeMTMC-reID, MSMT17, CUHK03 and VIPeR under one root (tests/data_reid_helpers.py), once
per session.  Pass the returned folder as ``data.root`` (with
``data.synthetic=false``, or true: a complete set is used as it is) or as torchreid's
``ImageDataManager(root=...)``.
"""

import os
import sys

import pytest

# Lets tests import the helper module tests/fixtures_data.py.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TINY_MARKET = dict(num_ids=8, seed=0, images_per_id_camera=3, gt_bbox_per_id_camera=2)


@pytest.fixture(scope="session")
def tiny_market_root(tmp_path_factory) -> str:
    from reid_srdl.data.synthetic import make_synthetic_market

    root = str(tmp_path_factory.mktemp("tiny_market"))
    make_synthetic_market(root, **TINY_MARKET)
    return root


@pytest.fixture(scope="session")
def tiny_reid_root(tmp_path_factory) -> str:
    from data_reid_helpers import write_all

    return write_all(str(tmp_path_factory.mktemp("tiny_reid")))


@pytest.fixture
def single_thread():
    """One torch intra-op thread for tests of tiny tensors: a second thread gains nothing, and
    on 2 shared cores OpenMP waiting for a busy core made such tests up to 50x slower.
    Restored afterwards.  Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- gallery stores
@pytest.fixture(scope="session")
def lite_server(tmp_path_factory):
    """``milvus-lite server`` on 127.0.0.1 for the whole session (one per xdist worker)."""
    import subprocess

    from store_helpers import has_pymilvus, start_lite_server

    if not has_pymilvus():
        pytest.skip("pymilvus / milvus-lite not installed (pip install -e '.[milvus]')")
    proc, uri = start_lite_server(str(tmp_path_factory.mktemp("milvus_server")))
    yield uri
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(params=("faiss", "lite", "server"))
def target(request, tmp_path):
    """Where one test's gallery lives, in each engine in turn (store_helpers.Target)."""
    from store_helpers import Target, has_pymilvus

    if request.param != "faiss" and not has_pymilvus():
        pytest.skip("pymilvus / milvus-lite not installed (pip install -e '.[milvus]')")
    uri = request.getfixturevalue("lite_server") if request.param == "server" else None
    return Target(request.param, tmp_path, uri)
