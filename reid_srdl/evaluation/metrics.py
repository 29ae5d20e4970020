"""Re-id ranking metrics: CMC, mAP and mINP under the Market-1501 protocol.

Numpy arrays in, numbers out.  The protocol (as the official Market-1501 code and
torchreid's ``eval_market1501``):

* the gallery is ranked by Euclidean distance to each query, ties broken by the smaller
  gallery index (torchreid sorts with ``np.argsort``'s default, unstable quicksort, so its
  order of tied items is unspecified; compare against it on tie-free features);
* from each query's ranking we remove the gallery items with the query's pid AND camera, and
  junk (pid -1);  distractors (pid 0) stay as negatives;
* a query left without any true match is skipped, and counted in ``num_queries`` only.

Exact and memory-bounded: queries are processed in blocks of full distance rows (one sgemm
each, into a reused buffer) and no query x gallery index matrix is ever built.  A true match's
rank is one plus the number of valid items before it, counted for every match of a block at
once by one compiled pass over each distance row (:mod:`reid_srdl.evaluation.match_ranks`,
:mod:`reid_srdl.evaluation.rank_kernel`) -- no sort of any gallery row, no Python loop per
query -- so CMC, mAP and mINP are exact.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from reid_srdl.core.arrays import EvaluationInputError, check_features, check_ids, positive_int
from reid_srdl.evaluation.match_ranks import (
    JUNK_PID,  # noqa: F401  (the protocol's junk pid, imported from here by open_set and users)
    DistanceOverflowError,
    ProtocolIds,
    QueryScores,
    block_ranks,
    mark_removed,
    query_scores,
    top_k_rows,
    true_match_ranks,
)

# numpy only (no faiss): the metrics import on a machine without faiss.
from reid_srdl.index.distances import gemm_rows, pairwise_squared_l2, squared_norms

DISTRACTOR_PID = 0
REPORTED_RANKS = (1, 5, 10, 20)
AP_METHODS = ("torchreid", "official")
POOLS = ("mean", "max")
# Distance rows per block: ~256 MB of float32 whatever the gallery size.
_BLOCK_ELEMENTS = 1 << 26
_OVERFLOW = "squared distances overflow float32; the features are too large (scale them down)"


# ------------------------------------------------------------------------- input checks
def _check_choice(value: str, choices, what: str) -> str:
    if value not in choices:
        raise EvaluationInputError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
    return value


# ------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ReIDResult:
    """``cmc[r-1]``: fraction of valid queries whose first true match is at rank <= r."""

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_queries: int
    num_valid_queries: int

    def rank(self, r: int) -> float:
        if not 1 <= r <= len(self.cmc):
            raise EvaluationInputError(f"rank {r} is outside the computed CMC curve (1..{len(self.cmc)})")
        return float(self.cmc[r - 1])

    def to_dict(self) -> Dict[str, float]:
        """rank1/5/10/20, mAP, mINP as fractions in [0, 1], and the query counts.

        A rank beyond ``len(cmc)`` (``max_rank`` < 20) is left out rather than invented.
        """
        out: Dict[str, float] = {f"rank{r}": self.rank(r) for r in REPORTED_RANKS if r <= len(self.cmc)}
        out.update(
            mAP=float(self.mAP),
            mINP=float(self.mINP),
            num_queries=int(self.num_queries),
            num_valid_queries=int(self.num_valid_queries),
        )
        return out


@dataclass(frozen=True)
class MultiQuery:
    """The gt_bbox images of the multi-query protocol: features ``(M, D)``, pids, camids."""

    features: np.ndarray
    pids: np.ndarray
    camids: np.ndarray


# ------------------------------------------------------------------------- multi-query
def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def pool_multi_query(
    q_feats,
    q_pids,
    q_camids,
    multi_query: MultiQuery,
    pool: str = "mean",
    normalize: bool = False,
) -> np.ndarray:
    """Multi-query features: each query is replaced by the pooled gt_bbox features of its
    (pid, camera), as in the official Market-1501 multi-query evaluation.

    ``pool``: ``"mean"`` (element-wise average) or ``"max"`` (element-wise maximum).
    A query whose (pid, camera) has no gt_bbox image keeps its own feature.
    ``normalize=True`` L2-normalises every resulting query feature (pooled or kept), so
    that all queries live on the same scale.
    """
    _check_choice(pool, POOLS, "pool")
    q = check_features(q_feats, "query features")
    q_pids = check_ids(q_pids, len(q), "query pids")
    q_camids = check_ids(q_camids, len(q), "query camids")
    m = check_features(multi_query.features, "multi-query features")
    if m.shape[1] != q.shape[1]:
        raise EvaluationInputError(
            f"multi-query features have {m.shape[1]} dimensions but query features have {q.shape[1]}"
        )
    m_pids = check_ids(multi_query.pids, len(m), "multi-query pids")
    m_camids = check_ids(multi_query.camids, len(m), "multi-query camids")

    # One group per distinct (pid, camera) of the gt_bbox set, pooled once.
    keys, group_of = np.unique(np.stack([m_pids, m_camids], axis=1), axis=0, return_inverse=True)
    group_of = group_of.reshape(-1)
    order = np.argsort(group_of, kind="stable")
    starts = np.searchsorted(group_of[order], np.arange(len(keys)))
    if pool == "mean":
        pooled = np.add.reduceat(m[order].astype(np.float64), starts, axis=0)
        pooled /= np.bincount(group_of, minlength=len(keys))[:, None]
        pooled = pooled.astype(np.float32)
    else:
        pooled = np.maximum.reduceat(m[order], starts, axis=0)

    # Find each query's group (if any) by a search in the sorted (pid, camera) keys.
    q_keys = np.stack([q_pids, q_camids], axis=1)
    pos = _find_rows(keys, q_keys)
    out = q.copy()
    has_group = pos >= 0
    out[has_group] = pooled[pos[has_group]]
    return l2_normalize(out) if normalize else out


def _find_rows(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query row in the lexicographically sorted 2-column ``sorted_keys``, or -1."""
    # Pack (pid, camera) into one structured scalar so that numpy can searchsorted the pairs.
    dtype = np.dtype([("pid", np.int64), ("cam", np.int64)])
    table = np.ascontiguousarray(sorted_keys).view(dtype).reshape(-1)
    wanted = np.ascontiguousarray(queries).view(dtype).reshape(-1)
    pos = np.searchsorted(table, wanted)
    found = pos < len(table)
    found[found] = table[pos[found]] == wanted[found]
    return np.where(found, pos, -1)


# ------------------------------------------------------------------------- ranking core
def positive_ranks(sq_dist_row: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """1-based ranks, ascending, of the true matches in one query's ranking.

    ``sq_dist_row``: distances to every gallery item, with removed items (same camera, junk)
    set to +inf so that they rank after every true match.  ``positives``: the gallery columns
    of the true matches.  A true match's rank is one plus the number of items strictly closer,
    plus -- for exact ties -- the tied items with a smaller gallery index.
    """
    row = np.ascontiguousarray(sq_dist_row)[None, :]
    cols = np.asarray(positives, dtype=np.int64)
    try:
        ranks = true_match_ranks(row, np.zeros(len(cols), dtype=np.int64), cols)
    except DistanceOverflowError:
        raise EvaluationInputError(_OVERFLOW) from None
    return np.sort(ranks)


def average_precision(ranks: np.ndarray, method: str = "torchreid") -> float:
    """AP of one query from the ascending 1-based ranks of its true matches.

    ``torchreid``: mean over the hits of the precision at the hit, ``k / r_k``.
    ``official``: the Market-1501 code's trapezoid rule, mean over the hits of
    ``(precision just before the hit + precision at the hit) / 2``, where the precision
    just before the k-th hit is ``(k-1)/(r_k-1)`` (1 when the hit is at rank 1).
    """
    k = np.arange(1, len(ranks) + 1, dtype=np.float64)
    r = ranks.astype(np.float64)
    at_hit = k / r
    if method == "torchreid":
        return float(at_hit.mean())
    before = np.ones_like(at_hit)
    np.divide(k - 1, r - 1, out=before, where=r > 1)
    return float(((before + at_hit) / 2).mean())


def ranking_threads(threads: Optional[int] = None) -> int:
    """Threads that rank distance rows: ``threads``, or the cores this process may use (at
    most 4).  numpy releases the GIL in the heavy steps (comparisons, ``flatnonzero``, takes,
    ``bincount``, sorts), so the rows of a block rank in parallel."""
    if threads is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        return max(1, min(4, cores))
    return positive_int(threads, "threads")


def true_match_scores(
    q: np.ndarray,
    g: np.ndarray,
    ids: ProtocolIds,
    ap: str = "torchreid",
    chunk_size: Optional[int] = None,
    threads: Optional[int] = None,
    overlap: bool = False,
) -> QueryScores:
    """Per-query AP, INP and first-hit rank of ``q`` against ``g`` (checked float32 arrays).

    Queries go in blocks of ``chunk_size`` rows (default: ~256 MB of distances): one sgemm
    per block (BLAS' own threads) of ``-2 q.g`` into a buffer reused across blocks (no page
    faults per block); then ``threads`` threads each rank a share of the block's rows in one
    compiled pass (:func:`block_ranks`), which finishes each distance as it reads it
    (``+ ||g||^2 + ||q||^2``, clamped at 0; junk columns +inf).  ``overlap``: compute the
    next block's sgemm while this one is ranked (a second buffer; the two then share the
    cores).  The scores do not depend on the blocks, the threads or the overlap.
    """
    g_add = squared_norms(g)
    g_add[ids.junk] = np.inf  # junk never counts
    q_sq = squared_norms(q)
    step = block_rows(len(g), chunk_size)
    threads = ranking_threads(threads)
    starts = list(range(0, len(q), step))
    overlap = overlap and len(starts) > 1
    buffers = [np.empty((max(2, min(step, len(q))), len(g)), dtype=np.float32) for _ in range(2 if overlap else 1)]

    def gemm(i: int) -> np.ndarray:
        start = starts[i]
        return gemm_rows(q[start : start + step] * np.float32(-2.0), g, out=buffers[i % len(buffers)])

    def rank_rows(dist: np.ndarray, first: int, lo: int, hi: int):
        """Query rows lo:hi of the block whose first row is query ``first``."""
        pairs = ids.pairs(lo, hi)
        ranks = block_ranks(dist[lo - first : hi - first], pairs, q_sq[lo:hi], g_add, clamp=True)
        return pairs.pos_rows + lo, ranks

    parts = []
    pool = ThreadPoolExecutor(threads + overlap) if threads > 1 or overlap else None
    try:
        pending = pool.submit(gemm, 0) if overlap else None
        for i, start in enumerate(starts):
            stop = min(len(q), start + step)
            dist = pending.result() if overlap else gemm(i)
            if overlap and i + 1 < len(starts):
                pending = pool.submit(gemm, i + 1)
            # Contiguous row spans, one per thread, so the results come back in query order.
            cuts = [start + ((stop - start) * t) // threads for t in range(threads + 1)]
            spans = [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if lo < hi]
            if pool is None or len(spans) == 1:
                parts.append(rank_rows(dist, start, start, stop))
            else:
                futures = [pool.submit(rank_rows, dist, start, lo, hi) for lo, hi in spans]
                parts.extend(f.result() for f in futures)
    except DistanceOverflowError:
        raise EvaluationInputError(_OVERFLOW) from None
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    query_of = np.concatenate([p[0] for p in parts])
    ranks = np.concatenate([p[1] for p in parts])
    return query_scores(len(q), query_of, ranks, ap)


def block_rows(num_gallery: int, chunk_size: Optional[int]) -> int:
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or int(chunk_size) < 1:
            raise EvaluationInputError(f"chunk_size must be >= 1; got {chunk_size}")
        return int(chunk_size)
    return max(1, _BLOCK_ELEMENTS // num_gallery)


def _distance_blocks(q: np.ndarray, g: np.ndarray, chunk_size: Optional[int]):
    """Yield (first query row, squared distances of a block of queries to the gallery)."""
    g_sq = squared_norms(g)
    step = block_rows(len(g), chunk_size)
    for start in range(0, len(q), step):
        yield start, pairwise_squared_l2(q[start : start + step], g, g_sq)


# ------------------------------------------------------------------------- evaluation
def check_query_gallery(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids):
    """Checked arrays ``(q, g, q_pids, g_pids, q_camids, g_camids)``: finite features of one
    dimension, id vectors of matching lengths."""
    q = check_features(q_feats, "query features")
    g = check_features(g_feats, "gallery features")
    if q.shape[1] != g.shape[1]:
        raise EvaluationInputError(
            f"query features have {q.shape[1]} dimensions but gallery features have {g.shape[1]}"
        )
    return (
        q,
        g,
        check_ids(q_pids, len(q), "query pids"),
        check_ids(g_pids, len(g), "gallery pids"),
        check_ids(q_camids, len(q), "query camids"),
        check_ids(g_camids, len(g), "gallery camids"),
    )


def summarise(scores: QueryScores, max_rank: int) -> ReIDResult:
    """CMC, mAP and mINP from per-query scores; a query without a true match (first rank 0)
    is skipped and counted.  Sums run in query order, whatever the blocks were."""
    num_queries = len(scores.first)
    valid = scores.first > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise EvaluationInputError(
            f"no valid query: none of the {num_queries} queries has a true match in the gallery "
            f"(same pid, other camera, pid not -1); check that the pids/camids of the two sets agree"
        )
    first = scores.first[valid]
    first_hit_counts = np.bincount(first[first <= max_rank] - 1, minlength=max_rank)
    return ReIDResult(
        cmc=np.cumsum(first_hit_counts) / num_valid,
        mAP=float(np.sum(scores.ap[valid]) / num_valid),
        mINP=float(np.sum(scores.inp[valid]) / num_valid),
        num_queries=num_queries,
        num_valid_queries=num_valid,
    )


def evaluate_reid(
    q_feats,
    g_feats,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    ap: str = "torchreid",
    multi_query: Optional[MultiQuery] = None,
    pool: str = "mean",
    normalize: bool = False,
    chunk_size: Optional[int] = None,
    threads: Optional[int] = None,
    overlap: bool = False,
) -> ReIDResult:
    """CMC, mAP and mINP of a query set against a gallery (Market-1501 protocol).

    Args:
        q_feats, g_feats: ``(Nq, D)`` and ``(Ng, D)`` features, finite.
        q_pids, g_pids, q_camids, g_camids: integer vectors of matching lengths;
            gallery pid -1 is junk (removed), pid 0 a distractor (kept as a negative).
        max_rank: length of the returned CMC curve.  Ranks past the number of valid
            gallery items keep the last value (1.0), unlike torchreid which shortens it.
        ap: ``"torchreid"`` (mean precision at each hit, torchreid's ``evaluate_rank``) or
            ``"official"`` (the Market-1501 code's trapezoid AP); see :func:`average_precision`.
        multi_query: gt_bbox features, pids and camids for the multi-query protocol; each
            query is replaced by :func:`pool_multi_query` (``pool``, ``normalize``) first.
        chunk_size: queries per block of distance rows; default keeps a block near 256 MB.
        threads: threads that rank the rows of a block (default: the usable cores, at most 4).
        overlap: compute the next block's distances while this one is ranked (one more block
            of memory); see :func:`true_match_scores`.

    The results do not depend on ``chunk_size``, ``threads`` or ``overlap``.

    mINP (Ye et al., 2021): mean over valid queries of ``#true matches / rank of the last``.

    Raises:
        EvaluationInputError: bad shapes, NaN/inf, empty sets, unknown options, or no query
            with a true match in the gallery.
    """
    positive_int(max_rank, "max_rank")
    _check_choice(ap, AP_METHODS, "ap")
    q, g, q_pids, g_pids, q_camids, g_camids = check_query_gallery(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids)
    if multi_query is not None:
        q = pool_multi_query(q, q_pids, q_camids, multi_query, pool=pool, normalize=normalize)
    elif normalize:
        raise EvaluationInputError("normalize=True re-normalises pooled multi-query features; give multi_query too")
    block_rows(len(g), chunk_size)  # a bad chunk_size or threads is reported before any work
    ranking_threads(threads)
    ids = ProtocolIds(q_pids, q_camids, g_pids, g_camids)
    return summarise(true_match_scores(q, g, ids, ap, chunk_size, threads, overlap), max_rank)


def ranked_gallery(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, k: int = 10) -> Tuple[np.ndarray, np.ndarray]:
    """The top-``k`` of each query's protocol ranking (removed items left out).

    Returns ``(indices, distances)``, each ``(Nq, k)``: gallery indices ordered by
    (L2 distance, index), padded with -1 / inf when fewer than ``k`` items remain.
    A partial selection per block of queries (:func:`top_k_rows`), no full sort.
    """
    k = positive_int(k, "k")
    q, g, q_pids, g_pids, q_camids, g_camids = check_query_gallery(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids)
    ids = ProtocolIds(q_pids, q_camids, g_pids, g_camids)
    indices = np.full((len(q), k), -1, dtype=np.int64)
    distances = np.full((len(q), k), np.inf, dtype=np.float64)
    for start, block in _distance_blocks(q, g, None):
        stop = start + len(block)
        mark_removed(block, ids.pairs(start, stop), ids.junk, value=np.nan)  # NaN: never selected
        cols, values = top_k_rows(block, k)
        found = cols >= 0
        indices[start:stop][found] = cols[found]
        distances[start:stop][found] = np.sqrt(values[found].astype(np.float64))
    return indices, distances


def format_results_table(result: ReIDResult, title: str = "") -> str:
    """A small fixed-width table of Rank-1/5/10/20, mAP and mINP in percent."""
    values = result.to_dict()
    names = [f"Rank-{r}" for r in REPORTED_RANKS if f"rank{r}" in values] + ["mAP", "mINP"]
    keys = [f"rank{r}" for r in REPORTED_RANKS if f"rank{r}" in values] + ["mAP", "mINP"]
    width = max(8, max(len(n) for n in names) + 2)
    lines = []
    if title:
        lines.append(title)
    lines.append("".join(n.rjust(width) for n in names))
    lines.append("".join(f"{100 * values[k]:.2f}".rjust(width) for k in keys))
    lines.append(f"({result.num_valid_queries} of {result.num_queries} queries have a true match in the gallery)")
    return "\n".join(lines)
