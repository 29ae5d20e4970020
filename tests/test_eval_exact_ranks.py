"""The vectorised ranking of the true matches (evaluation/match_ranks.py) is exact, ties included.

Oracles: a brute-force loop over queries that sorts every row in full (``np.lexsort`` by
distance, then gallery index -- the protocol's order), torchreid's ``evaluate_rank`` fed a
tie-free matrix of those positions, and the official Market-1501 loop (test_eval_metrics).
The data are built to tie: integer-valued features whose squared distances are exact small
integers, duplicated gallery rows, junk (pid -1), distractors (pid 0), same-pid-same-camera
items, queries without a valid match and a junk query.
"""

import tracemalloc
import warnings

import numpy as np
import pytest
from test_eval_metrics import official_market_oracle

import reid_srdl.evaluation.metrics as metrics
from reid_srdl.evaluation.match_ranks import (
    BlockPairs,
    DistanceOverflowError,
    ProtocolIds,
    block_ranks,
    mark_removed,
    top_k_rows,
    true_match_ranks,
)
from reid_srdl.evaluation.metrics import evaluate_reid, ranked_gallery
from reid_srdl.evaluation.streaming import evaluate_distances
from reid_srdl.index.distances import gemm_rows, pairwise_squared_l2


# ----------------------------------------------------------------------------- data and oracles
def tied_case(seed, nq=40, ng=300, dim=3, ids=12, cams=3, levels=3, junk=20):
    """Integer features in [-levels, levels]: squared distances are exact integers, and
    with few dimensions most of them tie.  Some gallery rows are copies of queries
    (distance 0), some pids are junk, some distractors; the last query is junk (pid -1) and
    one query's identity has no gallery image."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-levels, levels + 1, (nq, dim)).astype(np.float32)
    g = rng.integers(-levels, levels + 1, (ng, dim)).astype(np.float32)
    q_pids = rng.integers(1, ids + 1, nq)
    g_pids = rng.integers(0, ids + 1, ng)
    g_pids[rng.choice(ng, junk, replace=False)] = -1
    q_pids[-1] = -1  # a junk query: no true match, counted only
    q_pids[0] = ids + 5  # an identity the gallery does not hold
    g[:10] = q[1:11]  # exact duplicates of queries
    g_pids[:10] = q_pids[1:11]
    return q, g, q_pids, g_pids, rng.integers(0, cams, nq), rng.integers(0, cams, ng)


def exact_distances(q, g):
    """Squared distances in float64: exact for small integer features (and equal to the
    float32 ones the metrics compute, which are then exact too)."""
    q, g = q.astype(np.float64), g.astype(np.float64)
    return ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)


def brute_force_ranks(dist, q_pids, g_pids, q_camids, g_camids):
    """Per query: 1-based ranks of its true matches in the full protocol ordering, or None."""
    out = []
    for i in range(len(dist)):
        if q_pids[i] == -1:
            out.append(None)
            continue
        removed = (g_pids == -1) | ((g_pids == q_pids[i]) & (g_camids == q_camids[i]))
        kept = np.flatnonzero(~removed)
        order = kept[np.lexsort((kept, dist[i, kept]))]  # by distance, ties by gallery index
        good = (g_pids[order] == q_pids[i]) & (g_camids[order] != q_camids[i])
        out.append(np.flatnonzero(good) + 1 if good.any() else None)
    return out


def brute_force_metrics(rank_lists, max_rank, ap="torchreid"):
    valid = [r for r in rank_lists if r is not None]
    cmc = np.zeros(max_rank)
    aps, inps = [], []
    for r in valid:
        k = np.arange(1, len(r) + 1)
        if ap == "torchreid":
            aps.append(np.mean(k / r))
        else:
            before = np.array([1.0 if rk == 1 else (kk - 1) / (rk - 1) for kk, rk in zip(k, r)])
            aps.append(np.mean((before + k / r) / 2))
        inps.append(len(r) / r[-1])
        if r[0] <= max_rank:
            cmc[r[0] - 1 :] += 1
    return cmc / len(valid), float(np.mean(aps)), float(np.mean(inps)), len(valid)


def assert_same(result, cmc, mAP, mINP, num_valid):
    np.testing.assert_array_equal(result.cmc, cmc)
    assert result.mAP == pytest.approx(mAP, abs=1e-12)
    assert result.mINP == pytest.approx(mINP, abs=1e-12)
    assert result.num_valid_queries == num_valid


# ----------------------------------------------------------------------------- evaluate_reid
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ap", ["torchreid", "official"])
def test_ties_junk_distractors_against_brute_force(seed, ap):
    case = tied_case(seed)
    expected = brute_force_metrics(brute_force_ranks(exact_distances(*case[:2]), *case[2:]), 20, ap)
    assert 0 < expected[1] < 1 and expected[3] < len(case[0]) - 1  # not degenerate, some skipped
    assert_same(evaluate_reid(*case, max_rank=20, ap=ap), *expected)


@pytest.mark.parametrize("seed", range(3))
def test_ties_agree_with_torchreid_given_the_protocol_order(seed):
    """torchreid's evaluate_rank sorts with an unstable argsort; handed the protocol's
    positions (tie-free; junk moved after everything, where it changes neither CMC nor AP)
    it must give our CMC and mAP on data full of ties."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchreid.reid.metrics import evaluate_rank
    q, g, q_pids, g_pids, q_camids, g_camids = tied_case(seed)
    dist = exact_distances(q, g)
    position = np.empty_like(dist)
    for i in range(len(dist)):
        key = np.where(g_pids == -1, np.inf, dist[i])
        position[i, np.lexsort((np.arange(len(g)), key))] = np.arange(len(g))
    # torchreid counts a junk query's junk gallery items as matches; we skip that query.
    keep = q_pids != -1
    cmc, mAP = evaluate_rank(
        position[keep], q_pids[keep], g_pids, q_camids[keep], g_camids, max_rank=20, use_cython=False
    )
    r = evaluate_reid(q, g, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    np.testing.assert_allclose(r.cmc, cmc, atol=1e-6)
    assert r.mAP == pytest.approx(mAP, abs=1e-6)


def test_ties_agree_with_the_official_loop():
    case = tied_case(11, nq=30, ng=200)
    keep = case[2] != -1  # the official loop has no junk queries
    case = (case[0][keep], case[1], case[2][keep], case[3], case[4][keep], case[5])
    cmc, mAP, mINP = official_market_oracle(*case, max_rank=10)
    r = evaluate_reid(*case, max_rank=10, ap="official")
    np.testing.assert_allclose(r.cmc, cmc, atol=1e-12)
    assert (r.mAP, r.mINP) == (pytest.approx(mAP, abs=1e-12), pytest.approx(mINP, abs=1e-12))


def test_results_do_not_depend_on_blocks_threads_or_overlap(monkeypatch):
    rng = np.random.default_rng(5)
    q, g = rng.standard_normal((70, 16)).astype(np.float32), rng.standard_normal((900, 16)).astype(np.float32)
    g[::7] = np.round(g[::7])  # some float ties among the random values
    case = (q, g, rng.integers(1, 30, 70), rng.integers(-1, 30, 900), rng.integers(0, 4, 70), rng.integers(0, 4, 900))
    ref = evaluate_reid(*case, threads=1)
    for kwargs in (
        dict(chunk_size=1),
        dict(chunk_size=3, threads=2),
        dict(chunk_size=8, threads=3, overlap=True),
        dict(threads=2, overlap=True),
    ):
        r = evaluate_reid(*case, **kwargs)
        np.testing.assert_array_equal(r.cmc, ref.cmc)
        assert (r.mAP, r.mINP, r.num_valid_queries) == (ref.mAP, ref.mINP, ref.num_valid_queries), kwargs


def test_bad_threads_is_one_clear_error():
    case = tied_case(0)
    with pytest.raises(metrics.EvaluationInputError, match="threads must be a positive integer; got 0"):
        evaluate_reid(*case, threads=0)


# ----------------------------------------------------------------------------- the ranking kernel
def block_case(seed, rows=25, cols=400, spread=True):
    """A distance block with ties, a zero, values over many binades, removed items (+inf)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 40, (rows, cols)).astype(np.float32)
    if spread:  # some rows over ten binades: most items share a few coarse buckets
        values[::3] *= np.float32(2.0) ** rng.integers(0, 10, (len(values[::3]), cols)).astype(np.float32)
    values[:, 5] = 0.0
    pos_rows = np.repeat(np.arange(rows), 6)
    pos_cols = np.concatenate([np.sort(rng.choice(cols, 6, replace=False)) for _ in range(rows)])
    removed = rng.random((rows, cols)) < 0.1
    removed[pos_rows, pos_cols] = False
    values[removed] = np.inf
    return values, pos_rows, pos_cols


def brute_ranks(block, pos_rows, pos_cols):
    out = np.empty(len(pos_rows), dtype=np.int64)
    for n, (r, c) in enumerate(zip(pos_rows, pos_cols)):
        row = block[r].astype(np.float64)
        out[n] = 1 + np.count_nonzero(row < row[c]) + np.count_nonzero(row[:c] == row[c])
    return out


# Both ways of counting: compare (rows with at most compare_limit matches) and bucket.
WAYS = {"compare": dict(compare_limit=10**6), "bucket": dict(compare_limit=0)}


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("buckets", [None, 1, 2, 3, 5, 64, 10_000])
@pytest.mark.parametrize("seed", range(3))
def test_kernel_exact_whatever_the_bucket_count(seed, buckets, way):
    """One bucket compares every item with every match; many leave most buckets empty;
    the ranks are the brute-force ones either way, in float32 and float64."""
    block, pos_rows, pos_cols = block_case(seed)
    expected = brute_ranks(block, pos_rows, pos_cols)
    pairs = BlockPairs(pos_rows, pos_cols, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    for dtype in (np.float32, np.float64):
        np.testing.assert_array_equal(block_ranks(block.astype(dtype), pairs, buckets=buckets, **WAYS[way]), expected)


@pytest.mark.parametrize("cols", [1, 7, 2048, 2049, 5000])
def test_kernel_rows_across_chunks_and_many_matches(cols):
    """Rows shorter and longer than a chunk (2048 items), matches on the chunk edges, and
    rows past the compare limit (bucketed) beside rows under it, in one block."""
    rng = np.random.default_rng(cols)
    block = rng.integers(0, 50, (12, cols)).astype(np.float32)
    counts = [1, 2, 40, 33, 32, 5, 1, 100, 3, 60, 1, 2]
    pos_cols = np.concatenate([np.sort(rng.choice(cols, min(c, cols), replace=False)) for c in counts])
    pos_rows = np.repeat(np.arange(12), [min(c, cols) for c in counts])
    edges = np.array([0, 2047, 2048, cols - 1])
    pos_cols[pos_rows == 7] = np.sort(np.unique(np.r_[edges[edges < cols], pos_cols[pos_rows == 7]]))[
        : (pos_rows == 7).sum()
    ]
    pairs = BlockPairs(pos_rows, pos_cols, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    expected = brute_ranks(block, pos_rows, pos_cols)
    for way in WAYS.values():
        np.testing.assert_array_equal(block_ranks(block, pairs, **way), expected)
    np.testing.assert_array_equal(block_ranks(block, pairs), expected)
    shuffled = np.concatenate([rng.permutation(pos_cols[pos_rows == r]) for r in range(12)])  # any order per row
    pairs = BlockPairs(pos_rows, shuffled, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    for way in WAYS.values():
        np.testing.assert_array_equal(block_ranks(block, pairs, **way), brute_ranks(block, pos_rows, shuffled))


def test_kernel_negative_values_zeros_integers_and_float16():
    block, pos_rows, pos_cols = block_case(4, spread=False)
    block -= np.float32(20)  # negative distances (any monotone score is allowed in evaluate_distances)
    block[block == 0] = np.float32(-0.0)  # -0.0 ties with +0.0
    block[2, 7] = np.float32(0.0)
    expected = brute_ranks(block, pos_rows, pos_cols)
    pairs = BlockPairs(pos_rows, pos_cols, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    for buckets in (None, 1, 3):
        for way in WAYS.values():
            np.testing.assert_array_equal(block_ranks(block, pairs, buckets=buckets, **way), expected)
    np.testing.assert_array_equal(true_match_ranks(block.astype(np.float64), pos_rows, pos_cols), expected)
    np.testing.assert_array_equal(true_match_ranks(block.astype(np.float16), pos_rows, pos_cols), expected)
    finite = np.where(np.isinf(block), 1000, block).astype(np.int64)  # integer scores: widened to float64
    np.testing.assert_array_equal(true_match_ranks(finite, pos_rows, pos_cols), brute_ranks(finite, pos_rows, pos_cols))


def test_kernel_finishes_gemm_rows_removes_pairs_and_junk():
    """From ``-2 q.g`` rows, with the norms added and the clamp at 0 done by the kernel,
    removed pairs and +inf junk columns left out: the ranks of the finished, marked block,
    whose distances are exact small integers full of ties (and zeros: duplicates)."""
    q, g, q_pids, g_pids, q_camids, g_camids = tied_case(9)
    ids = ProtocolIds(q_pids, q_camids, g_pids, g_camids)
    pairs = ids.pairs(0, len(q))
    assert pairs.removed_rows.size and ids.junk.size
    dot = (q * np.float32(-2.0)) @ g.T
    g_add = np.einsum("ij,ij->i", g, g)
    g_add[ids.junk] = np.inf
    finished = exact_distances(q, g)
    mark_removed(finished, pairs, ids.junk)
    expected = brute_ranks(finished, pairs.pos_rows, pairs.pos_cols)
    for way in WAYS.values():
        ranks = block_ranks(dot, pairs, np.einsum("ij,ij->i", q, q), g_add, clamp=True, buckets=7, **way)
        np.testing.assert_array_equal(ranks, expected)


def test_kernel_rows_without_matches_and_an_infinite_match():
    block, pos_rows, pos_cols = block_case(1, rows=6)
    keep = (pos_rows != 0) & (pos_rows != 3)  # rows 0 and 3: no true match
    pos_rows, pos_cols = pos_rows[keep], pos_cols[keep]
    block[4, :50] = np.nan  # NaN items never come before a match
    block[4, pos_cols[pos_rows == 4]] = 3.0
    pairs = BlockPairs(pos_rows, pos_cols, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    for way in WAYS.values():
        np.testing.assert_array_equal(block_ranks(block, pairs, **way), brute_ranks(block, pos_rows, pos_cols))
    assert true_match_ranks(block, pos_rows[:0], pos_cols[:0]).size == 0
    for bad in (np.inf, np.nan):
        block[pos_rows[-1], pos_cols[-1]] = bad
        for way in WAYS.values():
            with pytest.raises(DistanceOverflowError):
                block_ranks(block, pairs, **way)


def test_the_kernel_asks_for_512_bit_vectors_and_gets_them_where_the_cpu_has_them():
    """The width hint is an attribute of the kernel's own LLVM function (not numba's process-
    wide CPU features), and on a CPU with AVX-512 the compiled kernel uses zmm registers --
    LLVM's Intel server tuning would otherwise stay at 256 bits (ymm)."""
    import llvmlite.binding as llvm
    import numba

    from reid_srdl.evaluation import rank_kernel

    fresh = numba.njit(nogil=True)(rank_kernel.rank_rows.py_func)  # compiled here, not read from the cache
    block, pos_rows, pos_cols = block_case(0, rows=3)
    pairs = BlockPairs(pos_rows, pos_cols, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    expected = brute_ranks(block, pos_rows, pos_cols)
    pos_start = np.searchsorted(pos_rows, np.arange(len(block) + 1)).astype(np.int64)
    ranks = np.zeros(len(pos_cols), dtype=np.int64)
    empty = np.zeros(len(block) + 1, dtype=np.int64)
    args = (block, np.zeros(len(block), np.float32), np.zeros(block.shape[1], np.float32), np.float32(-np.inf))
    fresh(*args, pos_start, pos_cols.astype(np.int64), empty, empty[:0], 64, 10**6, ranks)
    np.testing.assert_array_equal(ranks, expected)
    np.testing.assert_array_equal(block_ranks(block, pairs), expected)
    (ir,) = fresh.inspect_llvm().values()
    assert rank_kernel.PREFER_VECTOR_WIDTH in ir
    llvm.initialize_native_target()
    features = numba.config.CPU_FEATURES or llvm.get_host_cpu_features().flatten()
    (asm,) = fresh.inspect_asm().values()
    # Without the hint this kernel has no zmm instruction on an Intel AVX-512 server core
    # (checked on Emerald Rapids); without AVX-512 there are no 512-bit registers to use.
    assert ("zmm" in asm) == ("+avx512f" in features.split(","))


def test_evaluate_distances_with_ties_against_brute_force():
    q, g, q_pids, g_pids, q_camids, g_camids = tied_case(3)
    dist = exact_distances(q, g) - 7.0  # float64, negative values, ties
    expected = brute_force_metrics(brute_force_ranks(dist, q_pids, g_pids, q_camids, g_camids), 15)
    assert_same(evaluate_distances(dist, q_pids, g_pids, q_camids, g_camids, max_rank=15), *expected)
    assert_same(evaluate_distances(dist.astype(np.float32), q_pids, g_pids, q_camids, g_camids, max_rank=15), *expected)


# ----------------------------------------------------------------------------- top-k
def test_top_k_rows_ties_by_column_and_nan_left_out():
    rng = np.random.default_rng(2)
    block = rng.integers(0, 6, (30, 50)).astype(np.float32)
    block[rng.random(block.shape) < 0.2] = np.nan
    block[3, :] = np.nan
    block[4, :45] = np.nan  # fewer than k valid items
    for k in (1, 7, 60):
        cols, values = top_k_rows(block, k)
        for r in range(len(block)):
            valid = np.flatnonzero(~np.isnan(block[r]))
            order = valid[np.lexsort((valid, block[r, valid]))][:k]
            np.testing.assert_array_equal(cols[r, : len(order)], order)
            assert (cols[r, len(order) :] == -1).all() and np.isnan(values[r, len(order) :]).all()
            np.testing.assert_array_equal(values[r, : len(order)], block[r, order])


def test_ranked_gallery_with_ties_against_brute_force():
    q, g, q_pids, g_pids, q_camids, g_camids = tied_case(6)
    idx, dist = ranked_gallery(q, g, q_pids, g_pids, q_camids, g_camids, k=12)
    full = exact_distances(q, g)
    for i in range(len(q)):
        removed = (g_pids == -1) | ((g_pids == q_pids[i]) & (g_camids == q_camids[i]) & (q_pids[i] != -1))
        kept = np.flatnonzero(~removed)
        order = kept[np.lexsort((kept, full[i, kept]))][:12]
        np.testing.assert_array_equal(idx[i], order)
        np.testing.assert_allclose(dist[i], np.sqrt(full[i, order]))


# ----------------------------------------------------------------------------- distances, memory
def test_a_query_rows_products_are_within_the_float32_bound_in_any_block():
    """Whatever block a query row is in (alone, first, middle, last of 9), its products are
    float32 GEMM sums: within Higham's bound gamma_K * sum|q_k g_k| of the exact float64
    value.  (Bits can differ with the block: OpenBLAS's AVX2 kernels round rows outside
    whole 12-row tiles differently; its AVX-512 kernels do not.)"""
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((9, 256)).astype(np.float32), rng.standard_normal((3000, 256)).astype(np.float32)
    exact = q.astype(np.float64) @ g.astype(np.float64).T
    u, k = 2.0**-24, q.shape[1]
    bound = k * u / (1 - k * u) * (np.abs(q).astype(np.float64) @ np.abs(g).astype(np.float64).T)
    block = gemm_rows(q, g)
    assert (np.abs(block - exact) <= bound).all()
    out = np.empty((2, 3000), dtype=np.float32)
    for i in (0, 4, 8):
        alone = gemm_rows(q[i : i + 1], g, out=out)
        assert alone.shape == (1, 3000) and (np.abs(alone[0] - exact[i]) <= bound[i]).all()
    # the finished distances: twice the products' bound, the two norms' (sums of squares:
    # gamma_K times the sum), and the two additions' roundings
    dist = pairwise_squared_l2(q[4:5], g)[0]
    want = ((q[4].astype(np.float64) - g.astype(np.float64)) ** 2).sum(1)
    norms = (q[4].astype(np.float64) ** 2).sum() + (g.astype(np.float64) ** 2).sum(1)
    gamma = k * u / (1 - k * u)
    slack = 2 * bound[4] + gamma * norms + 2 * u * (norms + 2 * np.abs(exact[4])) * (1 + gamma)
    assert (np.abs(dist - want) <= slack).all()


def test_memory_stays_within_the_blocks(monkeypatch):
    """Worst case (features without structure: nearly every item is a candidate): the peak
    of numpy allocations stays near one distance block (the ranking keeps no per-item
    scratch), far below the full query x gallery matrix."""
    rng = np.random.default_rng(0)
    nq, ng, dim = 1200, 20000, 8
    q, g = rng.standard_normal((nq, dim)).astype(np.float32), rng.standard_normal((ng, dim)).astype(np.float32)
    ids = (rng.integers(1, 300, nq), rng.integers(1, 300, ng), rng.integers(0, 6, nq), rng.integers(0, 6, ng))
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 1 << 21)  # 8 MB of distances per block
    full_matrix = nq * ng * 4  # 96 MB
    evaluate_reid(*tied_case(0))  # the compiled kernel loaded before the count
    tracemalloc.start()
    try:
        evaluate_reid(q, g, *ids, threads=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    block = (1 << 21) * 4
    matches = len(ProtocolIds(ids[0], ids[2], ids[1], ids[3]).pairs(0, nq).pos_rows)
    per_match = 12 * 8 * matches  # the matches' ranks, queries, and the int64/float64 arrays of query_scores
    assert peak < block + per_match + 2**20, peak
    assert peak < full_matrix / 3


def test_pairs_match_a_per_query_split():
    q_pids, q_camids, g_pids, g_camids = tied_case(8)[2:]
    ids = ProtocolIds(q_pids, q_camids, g_pids, g_camids)
    pairs = ids.pairs(3, 30)
    for r, i in enumerate(range(3, 30)):
        same = np.flatnonzero(g_pids == q_pids[i]) if q_pids[i] != -1 else np.zeros(0, dtype=int)
        np.testing.assert_array_equal(pairs.pos_cols[pairs.pos_rows == r], same[g_camids[same] != q_camids[i]])
        np.testing.assert_array_equal(pairs.removed_cols[pairs.removed_rows == r], same[g_camids[same] == q_camids[i]])
    block = np.zeros((27, len(g_pids)), dtype=np.float32)
    mark_removed(block, pairs, ids.junk)
    assert np.isinf(block[:, g_pids == -1]).all()
    assert np.isinf(block[pairs.removed_rows, pairs.removed_cols]).all()
    assert np.isinf(block).sum() == 27 * (g_pids == -1).sum() + np.sum(g_pids[pairs.removed_cols] != -1)
