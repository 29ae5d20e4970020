"""Shared fixtures; the things they build come from tests/tiny_runs.py (the one builder).

``tiny_market_root``: a small synthetic Market-1501 set (8 identities, ~0.2 s to write),
written once per test session.  ``tiny_reid_root``: that Market-1501 set plus tiny synthetic
DukeMTMC-reID, MSMT17, CUHK03 and VIPeR under one root, once per session.  Pass the returned
folder as ``data.root`` (with ``data.synthetic=false``, or true: a complete set is used as it
is) or as torchreid's ``ImageDataManager(root=...)``.  ``tiny_run(method, recipe)``: a finished
tiny run folder of a method at its contract options (tests/method_contracts.py), trained once
per session (per xdist worker); read it, never write into it.
"""

import os
import sys

import pytest

# Lets tests import the helper modules beside this file (tiny_runs, fixtures_data, ...).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The scripts (tools/, benchmarks/, experiments/) import the installed package; the ones the
# tests start as subprocesses import it from this checkout, wherever `pip install -e` pointed.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join([_REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p])


@pytest.fixture(scope="session")
def tiny_market_root(tmp_path_factory) -> str:
    from tiny_runs import write_market

    return write_market(str(tmp_path_factory.mktemp("tiny_market")))


@pytest.fixture(scope="session")
def tiny_reid_root(tmp_path_factory) -> str:
    from tiny_runs import write_reid_sets

    return write_reid_sets(str(tmp_path_factory.mktemp("tiny_reid")))


@pytest.fixture(scope="session")
def tiny_run(tiny_market_root, tmp_path_factory):
    """``tiny_run(method, recipe="ce")``: the run folder of tiny_runs.train_run, cached."""
    from method_contracts import contract_of, overrides
    from tiny_runs import train_run

    cache = {}

    def get(method: str, recipe: str = "ce") -> str:
        if (method, recipe) not in cache:
            teacher = get("vanilla") if contract_of(method).teacher else None
            out = tmp_path_factory.mktemp(f"tiny_run_{method}_{recipe}")
            cache[method, recipe] = train_run(
                tiny_market_root, out, method, *overrides(method), recipe=recipe, teacher=teacher
            )
        return cache[method, recipe]

    return get


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
