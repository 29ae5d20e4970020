"""k-reciprocal re-ranking: equal to torchreid's dense reference implementation (the
original authors' code), plus hand-checkable limits."""

import numpy as np
import pytest
from torchreid.reid.utils.rerank import re_ranking

from reid_srdl import load_config
from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.evaluation.metrics import evaluate_reid
from reid_srdl.evaluation.rerank import k_reciprocal_distances
from reid_srdl.evaluation.streaming import evaluate_distances


def clustered(seed, nq=40, ng=160, d=16, ids=15, noise=0.5):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(ids, d))
    qp, gp = rng.integers(0, ids, nq), rng.integers(0, ids, ng)
    q = (centers[qp] + noise * rng.normal(size=(nq, d))).astype(np.float32)
    g = (centers[gp] + noise * rng.normal(size=(ng, d))).astype(np.float32)
    return q, g, qp, gp, rng.integers(0, 3, nq), rng.integers(3, 6, ng)


def euclidean(a, b):
    return np.sqrt(((a[:, None, :].astype(np.float64) - b[None]) ** 2).sum(-1))


@pytest.mark.parametrize("seed, k1, k2, lam", [(0, 20, 6, 0.3), (1, 20, 6, 0.3), (2, 7, 3, 0.5), (3, 10, 1, 0.0)])
def test_equals_the_dense_reference(seed, k1, k2, lam):
    q, g, *_ = clustered(seed)
    expected = re_ranking(euclidean(q, g), euclidean(q, q), euclidean(g, g), k1=k1, k2=k2, lambda_value=lam)
    ours = k_reciprocal_distances(q, g, k1=k1, k2=k2, lambda_value=lam, block_rows=17)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_lambda_one_is_the_row_normalised_squared_distance():
    q = np.array([[0.0], [1.0]], dtype=np.float32)
    g = np.array([[3.0], [-1.0], [2.0]], dtype=np.float32)
    # Row max of d^2 over all 5 items: query 0 -> 9 (to 3), query 1 -> 4 (to 3 or -1).
    expected = np.array([[9 / 9, 1 / 9, 4 / 9], [4 / 4, 4 / 4, 1 / 4]], dtype=np.float32)
    np.testing.assert_allclose(k_reciprocal_distances(q, g, k1=2, k2=1, lambda_value=1.0), expected, atol=1e-6)


def test_reranking_helps_on_clustered_data_and_evaluates():
    q, g, qp, gp, qc, gc = clustered(4, noise=0.9)
    plain = evaluate_reid(q, g, qp, gp, qc, gc)
    reranked = evaluate_distances(k_reciprocal_distances(q, g), qp, gp, qc, gc)
    assert reranked.num_valid_queries == plain.num_valid_queries
    assert reranked.mAP > plain.mAP  # the point of re-ranking: more true matches pulled up


def test_bad_options_are_named():
    q, g, *_ = clustered(0, nq=3, ng=5)
    with pytest.raises(EvaluationInputError, match="needs more than k1=20"):
        k_reciprocal_distances(q, g)
    with pytest.raises(EvaluationInputError, match="lambda must be in"):
        k_reciprocal_distances(q, g, k1=2, k2=1, lambda_value=1.5)
    with pytest.raises(Exception, match="eval.rerank_lambda must be in"):
        load_config(None, ["eval.rerank_lambda=2"])


def test_end_of_run_evaluation_reranks_single_and_multi_query():
    """eval.rerank through evaluate_model: both protocols against torchreid's dense
    re_ranking + evaluate_rank on hand-pooled multi-query features."""
    from types import SimpleNamespace

    from torchreid.reid.metrics.rank import evaluate_rank

    from reid_srdl.config import EvalConfig
    from reid_srdl.engine.evaluate import evaluate_model

    q, g, _qp, gp, _qc, gc = clustered(7, noise=1.5)  # hard enough that neither protocol is perfect
    # One query per (pid, camera), as in Market-1501 (equal pooled queries would tie).
    qp, qc = np.arange(40) % 15, np.arange(40) // 15
    rng = np.random.default_rng(8)
    centers = np.random.default_rng(7).normal(size=(15, 16))
    q = (centers[qp] + 1.5 * rng.normal(size=q.shape)).astype(np.float32)
    # gt_bbox: two more crops of each query's (pid, camera), as in Market-1501.
    m = np.concatenate([q + 0.3 * rng.normal(size=q.shape), q + 0.3 * rng.normal(size=q.shape)]).astype(np.float32)
    mp, mc = np.concatenate([qp, qp]), np.concatenate([qc, qc])
    feats = {"query": q, "gallery": g, "gt_bbox": m}
    split = lambda name, pids, cams: SimpleNamespace(loader=name, pids=pids, camids=cams)
    data = SimpleNamespace(
        task="reid",
        query=split("query", qp, qc),
        gallery=split("gallery", gp, gc),
        multi_query=split("gt_bbox", mp, mc),
    )
    cfg = EvalConfig(plot=False, rerank=True, multi_query=True, pool="mean")
    results = evaluate_model(
        None, data, "cpu", cfg, "", "test", progress=False, extract=lambda model, loader, device, **_: feats[loader]
    )

    pooled = np.stack([m[(mp == qp[i]) & (mc == qc[i])].mean(axis=0) for i in range(len(q))])
    for key, queries in (("single_query_rerank", q), ("multi_query_rerank", pooled)):
        dist = re_ranking(
            euclidean(queries, g), euclidean(queries, queries), euclidean(g, g), k1=20, k2=6, lambda_value=0.3
        )
        cmc, mAP = evaluate_rank(dist, qp, gp, qc, gc, max_rank=10, use_cython=False)
        assert results[key]["mAP"] == pytest.approx(mAP, abs=1e-5), key
        assert results[key]["rank1"] == pytest.approx(cmc[0], abs=1e-9), key
        assert results[key]["rank5"] == pytest.approx(cmc[4], abs=1e-9), key
    # Pooling changed the queries: the two re-ranked protocols are not the same numbers.
    assert results["multi_query_rerank"]["mAP"] != results["single_query_rerank"]["mAP"]
    assert max(results["multi_query_rerank"]["mAP"], results["single_query_rerank"]["mAP"]) < 1.0
