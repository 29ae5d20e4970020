"""evaluation.ranking.evaluate_ranking: the one pool -> distance -> score path, against the
steps done by hand (pooling, k-reciprocal distances, scoring a distance matrix)."""

import numpy as np
import pytest

from reid_srdl.evaluation.metrics import MultiQuery, evaluate_reid, pool_multi_query
from reid_srdl.evaluation.ranking import Rerank, evaluate_ranking
from reid_srdl.evaluation.rerank import k_reciprocal_distances
from reid_srdl.evaluation.streaming import evaluate_distances


@pytest.fixture
def split():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 8))
    q_pids, g_pids = np.arange(6), np.repeat(np.arange(6), 4)
    q = (centres[q_pids] + 0.8 * rng.normal(size=(6, 8))).astype(np.float32)
    g = (centres[g_pids] + 0.8 * rng.normal(size=(24, 8))).astype(np.float32)
    q_cams, g_cams = np.zeros(6, int), np.tile([0, 1, 2, 3], 6)
    m_pids = np.repeat(np.arange(6), 3)
    mq = MultiQuery((centres[m_pids] + 0.8 * rng.normal(size=(18, 8))).astype(np.float32), m_pids, np.zeros(18, int))
    return q, g, q_pids, g_pids, q_cams, g_cams, mq


def test_single_query_is_evaluate_reid_and_ignores_normalize(split):
    q, g, *ids, _mq = split
    expected = evaluate_reid(q, g, *ids)
    for normalize in (False, True):  # normalize concerns pooled features only
        got = evaluate_ranking(q, g, *ids, normalize=normalize)
        assert np.array_equal(got.cmc, expected.cmc) and got.mAP == expected.mAP


def test_multi_query_rerank_is_pool_then_k_reciprocal_then_score(split):
    q, g, q_pids, g_pids, q_cams, g_cams, mq = split
    rerank = Rerank(k1=5, k2=2, lambda_value=0.4)
    pooled = pool_multi_query(q, q_pids, q_cams, mq, pool="max", normalize=True)
    dist = k_reciprocal_distances(pooled, g, 5, 2, 0.4)
    expected = evaluate_distances(dist, q_pids, g_pids, q_cams, g_cams)
    got = evaluate_ranking(
        q, g, q_pids, g_pids, q_cams, g_cams, multi_query=mq, pool="max", normalize=True, rerank=rerank
    )
    assert np.array_equal(got.cmc, expected.cmc) and got.mAP == pytest.approx(expected.mAP, abs=0)
    assert rerank.describe() == "re-ranked k1=5 k2=2 lambda=0.4"
