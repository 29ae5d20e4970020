"""Open-set measures (Liao et al. 2014): a hand-computed 1-D toy and a brute force on random data."""

import doctest

import numpy as np
import pytest

from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.evaluation import open_set
from reid_srdl.evaluation.metrics import evaluate_reid
from reid_srdl.evaluation.open_set import (
    evaluate_open_set,
    open_set_scores,
    threshold_at_far,
)

# 1-D toy, integer positions so that every distance is exact in float32.
#        g0      g1      g2      g3      g4 (junk)  g5 (distractor)
G = [[0.0], [2.0], [6.0], [9.0], [11.0], [-1.0]]
G_PIDS = [1, 2, 1, 3, -1, 0]
G_CAMS = [1, 1, 0, 1, 1, 2]
#       q0 pid1 c0  q1 pid2 c0  q2 pid1 c2  q3 pid4 (absent)  q4 junk (ignored)
Q = [[1.0], [5.0], [7.0], [12.0], [2.0]]
Q_PIDS = [1, 2, 1, 4, -1]
Q_CAMS = [0, 0, 2, 0, 1]
# By hand:
#  q0: true match g0 (d 1; g2 is the same camera: removed); other identities g1 1, g5 2, g3 8
#      -> impostor 1; rank-1: g0 and g1 tie at 1, the smaller index g0 wins -> a match at 1.
#  q1: true match g1 (d 3); others g2 1, g3 4, g0 5, g5 6 -> impostor 1; rank-1 g2: no match.
#  q2: true matches g0 (7) and g2 (1); others g3 2, g1 5, g5 8 -> impostor 2; rank-1 g2, a match at 1.
#  q3: no true match (not a known probe); nearest other identity g3 at 3 (junk g4 at 1 ignored).
IMPOSTOR = [1.0, 1.0, 2.0, 3.0]
GENUINE = [1.0, 3.0, 7.0, 1.0]


def test_toy_distances_by_hand():
    s = open_set_scores(Q, G, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    assert sorted(s.impostor.tolist()) == IMPOSTOR
    assert sorted(s.genuine.tolist()) == sorted(GENUINE)
    assert s.top1_distance.tolist() == [1.0, 1.0, 1.0]
    assert s.top1_is_match.tolist() == [True, False, True]
    assert s.num_queries == 5 and s.num_known == 3


@pytest.mark.parametrize(
    "far, threshold, achieved, tar, dir_",
    [
        # 1 of 4 impostors allowed, but the two at distance 1 go together: nothing fits.
        (0.25, np.nextafter(1.0, -np.inf), 0.0, 0.0, 0.0),
        (0.50, 1.0, 2 / 4, 2 / 4, 2 / 3),  # accepts both impostors at 1; genuine 1, 1; DIR q0, q2
        (0.75, 2.0, 3 / 4, 2 / 4, 2 / 3),
        (1.00, 3.0, 4 / 4, 3 / 4, 2 / 3),  # genuine 7 stays out
        (0.00, np.nextafter(1.0, -np.inf), 0.0, 0.0, 0.0),
    ],
)
def test_toy_operating_points_by_hand(far, threshold, achieved, tar, dir_):
    res = evaluate_open_set(Q, G, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, fars=[far])
    p = res.point(far)
    assert p.threshold == threshold
    assert (p.achieved_far, p.tar, p.dir) == pytest.approx((achieved, tar, dir_), abs=1e-12)
    assert (res.num_known_probes, res.num_impostor_probes, res.num_genuine_pairs) == (3, 4, 4)


def test_dir_without_a_threshold_is_the_closed_set_rank1():
    s = open_set_scores(Q, G, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    closed = evaluate_reid(Q, G, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    assert open_set.detection_identification_rate(s, np.inf) == pytest.approx(closed.rank(1)) == pytest.approx(2 / 3)


def test_to_dict_and_table():
    res = evaluate_open_set(Q, G, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, fars=[0.5])
    d = res.to_dict()
    assert d["threshold@FAR=50%"] == 1.0 and d["DIR@FAR=50%"] == pytest.approx(2 / 3)
    assert d["num_impostor_probes"] == 4
    table = open_set.format_open_set_table(res)
    assert "50%" in table and "66.67" in table


def brute_force(q, g, q_pids, g_pids, q_cams, g_cams, far):
    """Independent: pair loops in float64, thresholds found by scanning every candidate."""
    genuine, impostor, known = [], [], []
    for i in range(len(q)):
        if q_pids[i] == -1:
            continue
        d = [float(np.sqrt(((q[i].astype(np.float64) - g[j]) ** 2).sum())) for j in range(len(g))]
        others = [d[j] for j in range(len(g)) if g_pids[j] not in (q_pids[i], -1)]
        if others:
            impostor.append(min(others))
        same = [g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i] for j in range(len(g))]
        valid = [j for j in range(len(g)) if g_pids[j] != -1 and not same[j]]
        matches = [j for j in valid if g_pids[j] == q_pids[i]]
        if not matches:
            continue
        genuine += [d[j] for j in matches]
        top = min(valid, key=lambda j: (d[j], j))
        known.append((g_pids[top] == q_pids[i], d[top]))
    candidates = sorted(set(impostor)) + [np.nextafter(min(impostor), -np.inf)]
    ok = [t for t in candidates if sum(x <= t for x in impostor) / len(impostor) <= far]
    tau = max(ok)
    return (
        tau,
        sum(x <= tau for x in impostor) / len(impostor),
        sum(x <= tau for x in genuine) / len(genuine),
        sum(m and dist <= tau for m, dist in known) / len(known),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, 4))
    g_pids = rng.integers(0, 12, 150)
    g_pids[rng.random(150) < 0.05] = -1  # junk
    g_cams = rng.integers(0, 4, 150)
    g = (centres[np.maximum(g_pids, 0)] + 0.7 * rng.standard_normal((150, 4))).astype(np.float32)
    q_pids = rng.integers(0, 15, 60)  # pids 12-14 are absent from the gallery
    q_cams = rng.integers(0, 4, 60)
    q = (centres[q_pids % 12] * (q_pids < 12)[:, None] + 0.7 * rng.standard_normal((60, 4))).astype(np.float32)
    fars = [0.01, 0.05, 0.1, 0.3]
    res = evaluate_open_set(q, g, q_pids, g_pids, q_cams, g_cams, fars=fars, chunk_size=7)
    for far in fars:
        tau, achieved, tar, dir_ = brute_force(q, g, q_pids, g_pids, q_cams, g_cams, far)
        p = res.point(far)
        # float32 GEMM distances vs float64 pairs: the expansion loses ~1e-5 absolute near 0.
        assert p.threshold == pytest.approx(tau, rel=1e-5, abs=2e-4)
        assert (p.achieved_far, p.tar, p.dir) == pytest.approx((achieved, tar, dir_), abs=1e-12)


def test_bad_input_is_one_clear_error():
    with pytest.raises(EvaluationInputError, match=r"false accept rate must be a number in \[0, 1\]"):
        threshold_at_far([1.0], 5)
    with pytest.raises(EvaluationInputError, match="none of the 1 queries has a true match"):
        evaluate_open_set([[0.0]], [[1.0]], [1], [2], [0], [1])
    with pytest.raises(EvaluationInputError, match="no identity other than"):
        evaluate_open_set([[0.0]], [[1.0]], [1], [1], [0], [1])
    with pytest.raises(EvaluationInputError, match="no operating point at FAR 0.2"):
        evaluate_open_set(Q, G, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, fars=[0.5]).point(0.2)


def test_docstring_examples():
    result = doctest.testmod(open_set)
    assert result.attempted >= 3 and result.failed == 0


def test_distribution_plot_is_a_png(tmp_path):
    from reid_srdl.evaluation.plots import plot_open_set

    path = tmp_path / "dist.png"
    plot_open_set(GENUINE, IMPOSTOR, {"FAR 50%": 1.0}, str(path), note="test machine")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(EvaluationInputError, match="at least one genuine"):
        plot_open_set([], IMPOSTOR, {}, str(tmp_path / "x.png"))


def test_end_of_run_evaluation_stores_the_thresholds(tmp_path):
    """engine.evaluate: metrics.json's "open_set" entry is evaluate_open_set of the single-query
    features, the distribution PNG is written, and the result table shows ranking rows only."""
    from types import SimpleNamespace

    from reid_srdl.config import EvalConfig
    from reid_srdl.engine.evaluate import evaluate_model, results_table

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((20, 8))
    g_pids, g_cams = np.repeat(np.arange(20), 4), np.tile(np.arange(4), 20)
    q_pids, q_cams = np.arange(20).repeat(6), np.tile(np.arange(6), 20) % 4
    feats = {
        "query": (centres[q_pids] + 0.6 * rng.standard_normal((120, 8))).astype(np.float32),
        "gallery": (centres[g_pids] + 0.6 * rng.standard_normal((80, 8))).astype(np.float32),
    }
    split = lambda name, pids, cams: SimpleNamespace(loader=name, pids=pids, camids=cams)
    data = SimpleNamespace(
        task="reid", query=split("query", q_pids, q_cams), gallery=split("gallery", g_pids, g_cams), multi_query=None
    )
    results = evaluate_model(
        None,
        data,
        "cpu",
        EvalConfig(plot=True),
        str(tmp_path),
        "deployed",
        progress=False,
        extract=lambda model, loader, device, **_: feats[loader],
    )
    expected = evaluate_open_set(feats["query"], feats["gallery"], q_pids, g_pids, q_cams, g_cams).to_dict()
    assert results["open_set"] == expected
    assert (tmp_path / "open_set_deployed.png").read_bytes()[:4] == b"\x89PNG"
    summary = {
        "task": "reid",
        "method": "m",
        "model": "n",
        "data": "d",
        "epochs": 1,
        "train_seconds": 1.0,
        "train_flops": 0,
        "results": {"deployed": results},
    }
    assert "open set" not in results_table(summary) and "single query" in results_table(summary)
