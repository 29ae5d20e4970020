"""Exact L2 search (faiss) against a plain numpy brute force, and the protocol top-k lists."""

import numpy as np
import pytest

from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.evaluation.metrics import ranked_gallery
from reid_srdl.index import exact as search
from reid_srdl.index.exact import ExactL2Index, _search_overfetch, pairwise_squared_l2


def brute_force_knn(xq, xb, k, exclude=None):
    """Reference: float64 distances, full sort by (distance, index)."""
    d = ((xq.astype(np.float64)[:, None] - xb.astype(np.float64)[None]) ** 2).sum(-1)
    ids = []
    for row in d:
        order = np.lexsort((np.arange(len(xb)), row))
        if exclude is not None:
            order = order[~exclude[order]]
        ids.append(order[:k])
    return d, np.array(ids)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((12, 6)).astype(np.float32), rng.standard_normal((80, 6)).astype(np.float32)


def test_pairwise_squared_l2_matches_float64(data):
    xq, xb = data
    expected, _ = brute_force_knn(xq, xb, 1)
    got = pairwise_squared_l2(xq, xb)
    assert got.dtype == np.float32 and got.shape == (12, 80)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_pairwise_squared_l2_is_never_negative():
    x = np.full((3, 64), 1000.0, dtype=np.float32)  # identical vectors: rounding could go below 0
    assert pairwise_squared_l2(x, x).min() == 0.0


def test_knn_matches_brute_force(data):
    xq, xb = data
    index = ExactL2Index(6)
    index.add(xb[:50])
    index.add(xb[50:])
    assert index.ntotal == 80
    sq, ids = index.search(xq, 7)
    ref_d, ref_ids = brute_force_knn(xq, xb, 7)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(sq, np.take_along_axis(ref_d, ref_ids, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(index.vectors(), xb)


def test_knn_ties_go_to_the_smaller_index():
    xb = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [5, 5]], dtype=np.float32)  # 4 at distance 1
    index = ExactL2Index(2)
    index.add(xb)
    sq, ids = index.search(np.zeros((1, 2), np.float32), 3)
    assert ids.tolist() == [[0, 1, 2]] and sq.tolist() == [[1.0, 1.0, 1.0]]


def test_exclusion_with_selector_and_overfetch_agree_with_brute_force(data):
    xq, xb = data
    exclude = np.zeros(80, dtype=bool)
    exclude[::3] = True
    index = ExactL2Index(6)
    index.add(xb)
    _, ref_ids = brute_force_knn(xq, xb, 5, exclude)
    _, ids = index.search(xq, 5, exclude=exclude)  # CPU: faiss IDSelectorBitmap
    np.testing.assert_array_equal(ids, ref_ids)
    _, ids_gpu_path = _search_overfetch(index._cpu, xq, 5, exclude)  # the path GPU indexes take
    np.testing.assert_array_equal(ids_gpu_path, ref_ids)


def test_k_beyond_the_index_is_padded_with_minus_one():
    index = ExactL2Index(1)
    index.add(np.array([[0.0], [2.0]], dtype=np.float32))
    _, ids = index.search(np.array([[0.0]], dtype=np.float32), 4, exclude=np.array([True, False]))
    assert ids.tolist() == [[1, -1, -1, -1]]


def test_docstring_example_runs():
    import doctest

    result = doctest.testmod(search)
    assert result.attempted >= 3 and result.failed == 0


@pytest.mark.parametrize("gpus, expected", [(0, False), (1, True), (4, True)])
def test_gpu_is_used_only_when_faiss_sees_one(monkeypatch, gpus, expected):
    import faiss

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: gpus)
    assert search.use_gpu() is expected


def test_metrics_import_and_run_without_faiss():
    """evaluation/metrics.py needs numpy only: with faiss made unimportable, evaluate_reid runs."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['faiss'] = None\n"
        "from reid_srdl.evaluation.metrics import evaluate_reid\n"
        "r = evaluate_reid([[0.0], [5.0]], [[0.1], [5.2], [9.0]], [1, 2], [1, 2, 3], [0, 0], [1, 1, 1])\n"
        "assert 'faiss' not in sys.modules or sys.modules['faiss'] is None\n"
        "print(r.rank(1), r.mAP)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1.0", "1.0"]  # both queries: nearest other-camera item is theirs


# ----------------------------------------------------------------------------- ranked lists
def test_ranked_gallery_follows_the_protocol():
    q = np.array([[0.0]], dtype=np.float32)
    #              junk  same pid+cam  distractor  hit  tie(neg)  tie(hit)
    g = np.array([[0.1], [0.2], [0.3], [0.4], [0.5], [-0.5]], dtype=np.float32)
    g_pids = [-1, 1, 0, 1, 5, 1]
    g_cams = [1, 0, 1, 2, 1, 1]
    idx, dist = ranked_gallery(q, g, [1], g_pids, [0], g_cams, k=5)
    assert idx.tolist() == [[2, 3, 4, 5, -1]]  # junk and same-camera removed; tie by index
    np.testing.assert_allclose(dist[0, :4], [0.3, 0.4, 0.5, 0.5], rtol=1e-6)
    assert dist[0, 4] == np.inf
    with pytest.raises(EvaluationInputError, match="k must be a positive integer"):
        ranked_gallery(q, g, [1], g_pids, [0], g_cams, k=0)
