"""Re-id metrics (CMC / mAP / mINP, single and multi-query), feature extraction and top-k.

Expected values are worked out by hand (1-D features you can rank by eye), or come from an
oracle: torchreid's evaluate_rank, or a brute-force transcription of the official Market-1501
evaluation loop (full sort, junk skipped, trapezoid AP).
"""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.evaluation.metrics import (
    MultiQuery,
    ReIDResult,
    average_precision,
    evaluate_reid,
    pool_multi_query,
    positive_ranks,
)
from reid_srdl.inference.classification import evaluate_classifier, topk_accuracy
from reid_srdl.inference.features import extract_features
from reid_srdl.inference.options import ExtractionOptions


def col(*xs):
    """1-D features as an (N, 1) float32 column."""
    return np.array(xs, dtype=np.float32).reshape(-1, 1)


def one_query(gallery_x, g_pids, g_camids, q_x=0.0, q_pid=1, q_cam=0, **kw):
    return evaluate_reid(col(q_x), col(*gallery_x), [q_pid], g_pids, [q_cam], g_camids, **kw)


# ----------------------------------------------------------------------------- by hand
def test_ap_half_plus_two_thirds():
    # ranking: negative, hit (precision 1/2), hit (precision 2/3)
    r = one_query([1, 2, 3], [2, 1, 1], [1, 1, 1], max_rank=3)
    assert r.mAP == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-12)
    assert r.mINP == pytest.approx(2 / 3, abs=1e-12)
    np.testing.assert_allclose(r.cmc, [0, 1, 1])
    assert (r.num_queries, r.num_valid_queries) == (1, 1)


def test_official_trapezoid_ap_by_hand():
    # hits at ranks 2 and 3: ((0 + 1/2)/2 + (1/2 + 2/3)/2) / 2 = 5/12
    r = one_query([1, 2, 3], [2, 1, 1], [1, 1, 1], ap="official")
    assert r.mAP == pytest.approx(5 / 12, abs=1e-12)
    # hits at ranks 1 and 3: precision "before" rank 1 is 1 -> ((1 + 1)/2 + (1/2 + 2/3)/2) / 2 = 19/24
    r = one_query([1, 2, 3], [1, 2, 1], [1, 1, 1], ap="official")
    assert r.mAP == pytest.approx(19 / 24, abs=1e-12)
    assert average_precision(np.array([1, 3]), "torchreid") == pytest.approx((1 + 2 / 3) / 2)


def test_junk_and_same_camera_removed_distractors_kept():
    #            junk  same pid+cam  distractor  hit   negative  hit
    gallery_x = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    g_pids = [-1, 1, 0, 1, 5, 1]
    g_cams = [1, 0, 1, 2, 1, 1]
    r = one_query(gallery_x, g_pids, g_cams, max_rank=4)
    # valid ranking: distractor, hit (rank 2), negative, hit (rank 4)
    assert r.mAP == pytest.approx((1 / 2 + 2 / 4) / 2, abs=1e-12)
    assert r.mINP == pytest.approx(2 / 4, abs=1e-12)
    np.testing.assert_allclose(r.cmc, [0, 1, 1, 1])


def test_query_whose_only_match_shares_its_camera_is_skipped_and_counted():
    q = col(0.0, 0.0)
    g = col(1.0, 2.0, 3.0)
    # query 0 (pid 1) has a match in another camera; query 1 (pid 3) only in its own camera
    r = evaluate_reid(q, g, [1, 3], [1, 3, 2], [0, 0], [1, 0, 1], max_rank=3)
    assert (r.num_queries, r.num_valid_queries) == (2, 1)
    assert r.mAP == 1.0 and r.cmc[0] == 1.0


def test_ties_broken_by_gallery_index():
    # the negative and the hit are at exactly the same distance (1 and -1 from 0)
    neg_first = one_query([1.0, -1.0], [2, 1], [1, 1], max_rank=2)
    hit_first = one_query([-1.0, 1.0], [1, 2], [1, 1], max_rank=2)
    assert neg_first.mAP == 0.5 and neg_first.rank(1) == 0.0
    assert hit_first.mAP == 1.0 and hit_first.rank(1) == 1.0
    # ranks counted directly: the tied negative (index 0) goes before the hit (index 3)
    row = np.array([1.0, 0.5, 2.0, 1.0, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(positive_ranks(row, np.array([3, 2])), [3, 5])


def test_cmc_padded_when_gallery_shorter_than_max_rank():
    r = one_query([1, 2], [2, 1], [1, 1], max_rank=5)
    np.testing.assert_allclose(r.cmc, [0, 1, 1, 1, 1])
    assert len(r.cmc) == 5


def test_top_level_exports():
    import reid_srdl

    assert reid_srdl.evaluate_reid is evaluate_reid and reid_srdl.ReIDResult is ReIDResult


def test_to_dict_keys_and_values():
    r = ReIDResult(cmc=np.linspace(0.05, 1.0, 20), mAP=0.25, mINP=0.125, num_queries=7, num_valid_queries=6)
    d = r.to_dict()
    assert list(d) == ["rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "num_queries", "num_valid_queries"]
    assert d["rank1"] == pytest.approx(0.05) and d["rank5"] == pytest.approx(0.25)
    assert d["rank10"] == pytest.approx(0.5) and d["rank20"] == pytest.approx(1.0)
    assert (d["mAP"], d["mINP"], d["num_queries"], d["num_valid_queries"]) == (0.25, 0.125, 7, 6)


# ----------------------------------------------------------------------------- oracles
def random_case(seed, nq=30, ng=200, dim=8, ids=15, cams=4, junk=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    g = rng.standard_normal((ng, dim)).astype(np.float32)
    q_pids = rng.integers(1, ids + 1, nq)
    g_pids = rng.integers(0, ids + 1, ng)  # 0 = distractors
    g_pids[rng.choice(ng, junk, replace=False)] = -1
    return q, g, q_pids, g_pids, rng.integers(0, cams, nq), rng.integers(0, cams, ng)


def torchreid_oracle(q, g, q_pids, g_pids, q_camids, g_camids, max_rank):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Cython evaluation is unavailable"
        from torchreid.reid.metrics import compute_distance_matrix, evaluate_rank
    distmat = compute_distance_matrix(torch.from_numpy(q), torch.from_numpy(g)).numpy()
    return evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, use_cython=False)


def official_market_oracle(q, g, q_pids, g_pids, q_camids, g_camids, max_rank):
    """The official Market-1501 evaluation loop (compute_AP.m), transcribed: a full sort,
    junk = pid -1 or same pid and camera, trapezoid AP; also mINP from the last hit."""
    dist = ((q.astype(np.float64)[:, None, :] - g.astype(np.float64)[None, :, :]) ** 2).sum(-1)
    cmc_sum, aps, inps = np.zeros(max_rank), [], []
    for i in range(len(q)):
        index = np.lexsort((np.arange(len(g)), dist[i]))  # by distance, ties by index
        good = set(np.flatnonzero((g_pids == q_pids[i]) & (g_camids != q_camids[i])))
        junk = set(np.flatnonzero((g_pids == -1) | ((g_pids == q_pids[i]) & (g_camids == q_camids[i]))))
        if not good:
            continue
        ap, old_recall, old_precision, hits, j, last_rank = 0.0, 0.0, 1.0, 0, 0, 0
        first = None
        for n in index:
            if n in junk:
                continue
            j += 1
            if n in good:
                hits += 1
                first = j if first is None else first
                last_rank = j
            recall, precision = hits / len(good), hits / j
            ap += (recall - old_recall) * (old_precision + precision) / 2
            old_recall, old_precision = recall, precision
            if hits == len(good):
                break
        aps.append(ap)
        inps.append(len(good) / last_rank)
        if first <= max_rank:
            cmc_sum[first - 1 :] += 1
    return cmc_sum / len(aps), float(np.mean(aps)), float(np.mean(inps))


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_torchreid_evaluate_rank(seed):
    case = random_case(seed)  # no junk: torchreid drops junk when it loads the data
    cmc, mAP = torchreid_oracle(*case, max_rank=20)
    r = evaluate_reid(*case, max_rank=20)
    np.testing.assert_allclose(r.cmc, cmc, atol=1e-6)
    assert r.mAP == pytest.approx(mAP, abs=1e-6)
    assert 0 < r.mAP < 1  # a random case, not a degenerate one


@pytest.mark.parametrize("seed", range(4))
def test_official_ap_and_minp_agree_with_official_loop_with_junk(seed):
    case = random_case(100 + seed, junk=25)
    cmc, mAP, mINP = official_market_oracle(*case, max_rank=10)
    r = evaluate_reid(*case, max_rank=10, ap="official")
    np.testing.assert_allclose(r.cmc, cmc, atol=1e-12)
    assert r.mAP == pytest.approx(mAP, abs=1e-9)
    assert r.mINP == pytest.approx(mINP, abs=1e-9)
    # the precision just before a hit never exceeds the precision at it
    assert r.mAP < evaluate_reid(*case, max_rank=10, ap="torchreid").mAP


def test_chunking_does_not_change_results():
    case = random_case(7, junk=10)
    full = evaluate_reid(*case)
    for chunk in (1, 7):
        r = evaluate_reid(*case, chunk_size=chunk)
        np.testing.assert_array_equal(r.cmc, full.cmc)
        assert (r.mAP, r.mINP, r.num_valid_queries) == (full.mAP, full.mINP, full.num_valid_queries)


# ----------------------------------------------------------------------------- properties
def test_cmc_non_decreasing_and_in_unit_interval():
    r = evaluate_reid(*random_case(3, nq=40, ng=300), max_rank=50)
    assert np.all(np.diff(r.cmc) >= 0)
    assert 0 <= r.cmc[0] and r.cmc[-1] <= 1


def test_perfect_ranking_gives_one():
    pids = np.arange(0, 10)
    centers = np.eye(10, dtype=np.float32) * 5
    g_pids = np.repeat(pids, 3)
    g_cams = np.tile([0, 1, 2], 10)
    q_pids = pids[1:]  # distractor id 0 stays in the gallery only
    r = evaluate_reid(centers[q_pids], centers[g_pids], q_pids, g_pids, np.zeros(9, int), g_cams)
    assert r.rank(1) == 1.0 and r.mAP == 1.0 and r.mINP == 1.0
    assert r.num_valid_queries == 9


def test_gallery_permutation_invariance():
    q, g, qp, gp, qc, gc = random_case(11, junk=5)
    perm = np.random.default_rng(0).permutation(len(g))
    a = evaluate_reid(q, g, qp, gp, qc, gc)
    b = evaluate_reid(q, g[perm], qp, gp[perm], qc, gc[perm])
    np.testing.assert_allclose(a.cmc, b.cmc, atol=1e-12)
    assert a.mAP == pytest.approx(b.mAP, abs=1e-12) and a.mINP == pytest.approx(b.mINP, abs=1e-12)


# ----------------------------------------------------------------------------- multi-query
MQ = MultiQuery(
    features=np.array([[1, 2], [3, 0], [100, 100], [50, 50]], dtype=np.float32),
    pids=np.array([1, 1, 1, 2]),
    camids=np.array([0, 0, 1, 0]),  # (1, cam 0) twice; (1, cam 1) and (2, cam 0) are other groups
)


def test_multi_query_mean_and_max_pooling_by_hand():
    q = np.array([[9, 9], [7, 7]], dtype=np.float32)
    q_pids, q_cams = [1, 7], [0, 0]  # pid 7 has no gt_bbox image: keeps its own feature
    mean = pool_multi_query(q, q_pids, q_cams, MQ, pool="mean")
    np.testing.assert_allclose(mean, [[2, 1], [7, 7]])
    mx = pool_multi_query(q, q_pids, q_cams, MQ, pool="max")
    np.testing.assert_allclose(mx, [[3, 2], [7, 7]])
    unit = pool_multi_query(q, q_pids, q_cams, MQ, pool="mean", normalize=True)
    np.testing.assert_allclose(unit, [[2 / 5**0.5, 1 / 5**0.5], [2**-0.5, 2**-0.5]], rtol=1e-6)


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_multi_query_changes_the_ranking(pool):
    q = np.array([[9, 9]], dtype=np.float32)
    g = np.array([[2, 1], [9, 9]], dtype=np.float32)  # hit far from the raw query, negative on it
    args = (q, g, [1], [1, 2], [0], [1, 1])
    assert evaluate_reid(*args, max_rank=2).mAP == 0.5
    assert evaluate_reid(*args, max_rank=2, multi_query=MQ, pool=pool).mAP == 1.0


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "change, message",
    [
        (dict(g=np.zeros((3, 2), np.float32)), "query features have 1 dimensions but gallery features have 2"),
        (dict(q=col(np.nan)), "query features: contains NaN or inf"),
        (dict(g=col(1, np.inf, 3)), "gallery features: contains NaN or inf"),
        (dict(q=np.zeros((0, 1), np.float32), qp=[], qc=[]), "query features: is empty"),
        (dict(g=np.zeros((0, 1), np.float32), gp=[], gc=[]), "gallery features: is empty"),
        (dict(gp=[1, 2]), "gallery pids: has 2 entries but there are 3 features"),
        (dict(qc=[0, 0]), "query camids: has 2 entries but there are 1 features"),
        (dict(gp=[1.5, 2, 1]), "gallery pids: expected integers"),
        (dict(gc=[0, 0, 0]), "no valid query"),
        (dict(q=np.zeros(1, np.float32)), "expected a 2-D array"),
    ],
)
def test_bad_input_is_one_clear_error(change, message):
    a = dict(q=col(0.0), g=col(1, 2, 3), qp=[1], gp=[2, 1, 1], qc=[0], gc=[1, 1, 1])
    a.update(change)
    with pytest.raises(EvaluationInputError, match=message.replace("(", r"\(")):
        evaluate_reid(a["q"], a["g"], a["qp"], a["gp"], a["qc"], a["gc"])


def test_bad_options():
    args = (col(0.0), col(1.0), [1], [1], [0], [1])
    with pytest.raises(EvaluationInputError, match="ap must be one of torchreid, official"):
        evaluate_reid(*args, ap="voc")
    with pytest.raises(EvaluationInputError, match="max_rank must be a positive integer"):
        evaluate_reid(*args, max_rank=0)
    with pytest.raises(EvaluationInputError, match="pool must be one of mean, max"):
        evaluate_reid(*args, multi_query=MQ, pool="median")
    with pytest.raises(EvaluationInputError, match="multi-query features have 2 dimensions"):
        evaluate_reid(*args, multi_query=MQ)
    with pytest.raises(EvaluationInputError, match="give multi_query too"):
        evaluate_reid(*args, normalize=True)
    assert issubclass(EvaluationInputError, ValueError)


# ----------------------------------------------------------------------------- features
class ColumnNet(nn.Module):
    """Features = the first image row of channel 0 (so a flip reverses them), through a
    dropout that only eval mode makes exact; logits are unused."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(p=0.9)
        self.frozen = nn.BatchNorm1d(1)

    def forward(self, x):
        feats = self.drop(x[:, 0, 0, :])
        return feats.sum(1, keepdim=True), feats


def image_batches():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3)  # rows [0,1,2], [6,7,8]
    y = torch.tensor([[3.0, 0.0, 4.0]]).reshape(1, 1, 1, 3).expand(1, 1, 2, 3).contiguous()
    return [(x, torch.tensor([5, 6])), (y, torch.tensor([7]))]


def test_extract_features_flip_normalize_and_modes_restored():
    net = ColumnNet()
    net.train()
    net.frozen.eval()  # a submodule deliberately kept in eval mode
    plain = extract_features(net, image_batches())
    assert plain.dtype == np.float32 and plain.shape == (3, 3)
    np.testing.assert_array_equal(plain, [[0, 1, 2], [6, 7, 8], [3, 0, 4]])
    flipped = extract_features(net, image_batches(), ExtractionOptions(flip=True))
    np.testing.assert_allclose(flipped, [[1, 1, 1], [7, 7, 7], [3.5, 0, 3.5]])
    unit = extract_features(net, image_batches(), ExtractionOptions(normalize=True))
    np.testing.assert_allclose(unit[2], [0.6, 0, 0.8], rtol=1e-6)
    assert net.training and net.drop.training and not net.frozen.training


def test_extract_features_rejects_a_model_without_features():
    with pytest.raises(EvaluationInputError, match=r"must return \(logits, features\)"):
        extract_features(nn.Flatten(), image_batches())
    with pytest.raises(EvaluationInputError, match="yielded no batch"):
        extract_features(ColumnNet(), [])


# ----------------------------------------------------------------------------- top-k
LOGITS = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.3, 0.25, 0.45]])
LABELS = torch.tensor([2, 0, 0, 1])


def test_topk_accuracy_by_hand_with_k_clamped_to_class_count():
    # top-1: only sample 1; top-2: samples 0 and 1; top-5 with 3 classes: everything
    assert topk_accuracy(LOGITS, LABELS, ks=(1, 2, 5)) == {"top1": 0.25, "top2": 0.5, "top5": 1.0}


def test_evaluate_classifier_over_batches():
    class Passthrough(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return x * self.scale, x  # (logits, features)

    loader = [(LOGITS[:3], LABELS[:3], "extra"), (LOGITS[3:], LABELS[3:], "extra")]
    assert evaluate_classifier(Passthrough(), loader, "cpu") == {"top1": 0.25, "top5": 1.0}
    with pytest.raises(EvaluationInputError, match="labels must lie in 0..2"):
        topk_accuracy(LOGITS, torch.tensor([0, 1, 2, 3]))
