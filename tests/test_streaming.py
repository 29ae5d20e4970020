"""Gallery streamed from a memory-mapped .npy in shards: exactly the in-memory evaluation."""

import numpy as np
import pytest

from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.evaluation.metrics import evaluate_reid
from reid_srdl.evaluation.streaming import evaluate_distances, evaluate_reid_streaming
from reid_srdl.index.exact import pairwise_squared_l2


def case(seed=1, nq=60, ng=2000, d=32):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(40, d))
    qp, gp = rng.integers(1, 40, nq), rng.integers(-1, 40, ng)  # junk (-1) and distractors (0) included
    q = (centers[qp] + rng.normal(size=(nq, d))).astype(np.float32)
    g = (centers[np.abs(gp)] + rng.normal(size=(ng, d))).astype(np.float32)
    g[11] = g[[i for i in range(ng) if gp[i] == qp[0]][0]]  # an exact tie with a true match
    return q, g, qp, gp, rng.integers(0, 6, nq), rng.integers(0, 6, ng)


@pytest.mark.slow
@pytest.mark.parametrize("shard_rows", [1, 333, 2000, 5000])
def test_streamed_memmap_equals_in_memory(tmp_path, shard_rows):
    q, g, qp, gp, qc, gc = case()
    path = tmp_path / "gallery.npy"
    np.save(path, g)
    mapped = np.load(path, mmap_mode="r")
    ours = evaluate_reid_streaming(q, mapped, qp, gp, qc, gc, shard_rows=shard_rows)
    ref = evaluate_reid(q, g, qp, gp, qc, gc)
    assert ours.mAP == ref.mAP and ours.mINP == ref.mINP
    np.testing.assert_array_equal(ours.cmc, ref.cmc)
    assert (ours.num_queries, ours.num_valid_queries) == (ref.num_queries, ref.num_valid_queries)


def test_hand_computed_ranks_across_shards():
    # 1-D: query at 0, pid 1 cam 0; gallery by distance: [pid1 cam1 @1], [pid2 @2], [pid1 cam1 @3].
    q = np.array([[0.0]], dtype=np.float32)
    g = np.array([[3.0], [2.0], [1.0], [0.5]], dtype=np.float32)
    gp, gc = np.array([1, 2, 1, 1]), np.array([1, 1, 1, 0])  # the 0.5 one: same camera -> removed
    res = evaluate_reid_streaming(q, g, [1], gp, [0], gc, shard_rows=1, max_rank=3)
    assert res.mAP == pytest.approx((1 / 1 + 2 / 3) / 2)
    np.testing.assert_array_equal(res.cmc, [1.0, 1.0, 1.0])


def test_evaluate_distances_equals_feature_path():
    q, g, qp, gp, qc, gc = case(seed=2, ng=500)
    ref = evaluate_reid(q, g, qp, gp, qc, gc)
    ours = evaluate_distances(pairwise_squared_l2(q, g), qp, gp, qc, gc)
    assert ours.mAP == ref.mAP
    np.testing.assert_array_equal(ours.cmc, ref.cmc)


def test_bad_inputs_are_named():
    q, g, qp, gp, qc, gc = case(ng=100)
    with pytest.raises(EvaluationInputError, match="query features have 32 dimensions but gallery features have 31"):
        evaluate_reid_streaming(q, g[:, :31], qp, gp, qc, gc)
    with pytest.raises(EvaluationInputError, match="gallery pids: has 99 entries"):
        evaluate_reid_streaming(q, g, qp, gp[:99], qc, gc)
    bad = g.copy()
    bad[150 % 100] = np.nan
    with pytest.raises(EvaluationInputError, match="gallery features rows 40:60"):
        evaluate_reid_streaming(q, bad, qp, gp, qc, gc, shard_rows=20)
