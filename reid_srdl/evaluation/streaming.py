"""Exact re-id evaluation of galleries larger than RAM, streamed in shards, and evaluation
from precomputed distance rows (e.g. re-ranked ones).

``evaluate_reid`` needs every query's distances to the whole gallery (mAP counts every true
match's rank).  Here the gallery features are read ``shard_rows`` rows at a time from any
array-like with slicing -- typically ``np.load(path, mmap_mode="r")`` of a ``.npy`` file far
bigger than memory -- in two passes:

1. each query's distances to its true matches (same pid, other camera) are collected;
2. for each shard, each query counts the valid gallery items strictly closer than each of
   its true matches (exact ties: those with a smaller gallery index, as in ``metrics``).

A true match's rank is one plus that count, which is what ``match_ranks`` computes
from a full row: CMC, mAP and mINP come out identical to the in-memory path.  Memory: the
query features, the gallery ids, one shard, and one ``(query block x shard)`` distance block.
Both passes cut the same blocks, so a distance is computed the same way both times.
"""

from typing import Optional

import numpy as np

from reid_srdl.core.arrays import EvaluationInputError, check_features, check_ids, positive_int
from reid_srdl.evaluation.match_ranks import (
    JUNK_PID,
    DistanceOverflowError,
    ProtocolIds,
    block_ranks,
    query_scores,
)
from reid_srdl.evaluation.metrics import AP_METHODS, ReIDResult, _check_choice, summarise
from reid_srdl.index.exact import pairwise_squared_l2, squared_norms

DEFAULT_SHARD_ROWS = 1 << 18  # 262,144 gallery rows: 512 MB of float32 at d=512
_BLOCK_ELEMENTS = 1 << 25  # query rows x shard rows per distance block (128 MB)


def _check_max_rank(max_rank) -> None:
    positive_int(max_rank, "max_rank")


# --------------------------------------------------------------------------- distances given
def evaluate_distances(
    dist, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, ap: str = "torchreid"
) -> ReIDResult:
    """CMC/mAP/mINP from a ``(Nq, Ng)`` distance matrix (any monotone distance: re-ranked,
    cosine, ...), with the protocol of ``metrics.evaluate_reid`` (same-camera duplicates and
    junk removed, ties broken by the smaller gallery index)."""
    _check_max_rank(max_rank)
    _check_choice(ap, AP_METHODS, "ap")
    d = np.asarray(dist)
    if d.ndim != 2:
        raise EvaluationInputError(f"distances: expected a 2-D (queries x gallery) array, got shape {d.shape}")
    if np.isnan(d).any():
        raise EvaluationInputError("distances: contain NaN")
    q_pids, q_camids = check_ids(q_pids, d.shape[0], "query pids"), check_ids(q_camids, d.shape[0], "query camids")
    g_pids, g_camids = check_ids(g_pids, d.shape[1], "gallery pids"), check_ids(g_camids, d.shape[1], "gallery camids")
    ids = ProtocolIds(q_pids, q_camids, g_pids, g_camids)
    junk = np.zeros(d.shape[1], dtype=np.float32 if d.dtype == np.float32 else np.float64)
    junk[ids.junk] = np.inf  # junk never counts
    # Rows in blocks of ~_BLOCK_ELEMENTS, in their own dtype (float32 stays float32: a
    # widening would not change any order), ranked as metrics.evaluate_reid ranks its own.
    step = max(1, _BLOCK_ELEMENTS // max(1, d.shape[1]))
    query_of, ranks = [], []
    for start in range(0, len(d), step):
        stop = min(len(d), start + step)
        pairs = ids.pairs(start, stop)
        try:
            ranks.append(block_ranks(d[start:stop], pairs, col_add=junk))
        except DistanceOverflowError:
            raise EvaluationInputError("distances: a true match's distance is infinite") from None
        query_of.append(pairs.pos_rows + start)
    scores = query_scores(len(d), np.concatenate(query_of), np.concatenate(ranks), ap)
    return summarise(scores, max_rank)


# --------------------------------------------------------------------------- streamed gallery
def _blocks(num_queries: int, shard_len: int):
    step = max(1, _BLOCK_ELEMENTS // max(1, shard_len))
    for start in range(0, num_queries, step):
        yield start, min(num_queries, start + step)


def evaluate_reid_streaming(
    q_feats,
    g_feats,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    ap: str = "torchreid",
    shard_rows: int = DEFAULT_SHARD_ROWS,
    progress: Optional[callable] = None,
) -> ReIDResult:
    """:func:`~reid_srdl.evaluation.metrics.evaluate_reid` (single query) with the gallery
    read ``shard_rows`` rows at a time from ``g_feats`` (an ``(Ng, D)`` array-like: a numpy
    memmap, ``np.load(..., mmap_mode="r")``, or any object with ``shape`` and row slicing).

    ``progress``: optional callable ``(pass_number, shard_index, num_shards)``.
    """
    _check_max_rank(max_rank)
    _check_choice(ap, AP_METHODS, "ap")
    if isinstance(shard_rows, bool) or not isinstance(shard_rows, (int, np.integer)) or shard_rows < 1:
        raise EvaluationInputError(f"shard_rows must be a positive integer; got {shard_rows!r}")
    shape = getattr(g_feats, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] == 0:
        raise EvaluationInputError(f"gallery features: expected a non-empty (N, D) array-like, got shape {shape}")
    q = check_features(q_feats, "query features")
    num_gallery, dim = int(shape[0]), int(shape[1])
    if q.shape[1] != dim:
        raise EvaluationInputError(f"query features have {q.shape[1]} dimensions but gallery features have {dim}")
    q_pids, q_camids = check_ids(q_pids, len(q), "query pids"), check_ids(q_camids, len(q), "query camids")
    g_pids = check_ids(g_pids, num_gallery, "gallery pids")
    g_camids = check_ids(g_camids, num_gallery, "gallery camids")
    ids = ProtocolIds(q_pids, q_camids, g_pids, g_camids)

    # Per query: true-match columns (ascending), their distances, and counts of closer items.
    pairs = ids.pairs(0, len(q))
    bounds = np.searchsorted(pairs.pos_rows, np.arange(len(q) + 1))
    removed_bounds = np.searchsorted(pairs.removed_rows, np.arange(len(q) + 1))
    positives = [pairs.pos_cols[bounds[i] : bounds[i + 1]] for i in range(len(q))]
    removed = [pairs.removed_cols[removed_bounds[i] : removed_bounds[i + 1]] for i in range(len(q))]
    pos_dist = [np.full(len(p), np.nan, dtype=np.float32) for p in positives]
    closer = [np.zeros(len(p), dtype=np.int64) for p in positives]
    starts = list(range(0, num_gallery, int(shard_rows)))

    def shards(pass_number):
        for s, start in enumerate(starts):
            stop = min(num_gallery, start + int(shard_rows))
            shard = check_features(g_feats[start:stop], f"gallery features rows {start}:{stop}")
            if progress is not None:
                progress(pass_number, s, len(starts))
            yield start, stop, shard

    def distance_rows(start, stop, shard):
        shard_sq = squared_norms(shard)
        invalid = np.zeros(stop - start, dtype=bool)
        invalid[(g_pids[start:stop] == JUNK_PID)] = True
        for b0, b1 in _blocks(len(q), stop - start):
            block = pairwise_squared_l2(q[b0:b1], shard, shard_sq)
            for i in range(b0, b1):
                if positives[i].size:
                    yield i, block[i - b0], invalid

    # Pass 1: the distance of every query to each of its true matches.
    for start, stop, shard in shards(1):
        for i, row, _invalid in distance_rows(start, stop, shard):
            pos = positives[i]
            lo, hi = np.searchsorted(pos, [start, stop])
            pos_dist[i][lo:hi] = row[pos[lo:hi] - start]

    # Pass 2: per shard, how many valid items are strictly closer than each true match.
    order = [np.argsort(d, kind="stable") for d in pos_dist]
    for start, stop, shard in shards(2):
        for i, row, invalid in distance_rows(start, stop, shard):
            row = row.copy()
            row[invalid] = np.inf
            rem = removed[i]
            rem = rem[(rem >= start) & (rem < stop)]
            row[rem - start] = np.inf
            sorted_pos = pos_dist[i][order[i]]
            # below[k] = #items with distance < sorted_pos[k]
            at_or_above = np.searchsorted(sorted_pos, row, side="right")  # #positives <= d
            counts = np.cumsum(np.bincount(at_or_above, minlength=len(sorted_pos) + 1))
            first_equal = np.searchsorted(sorted_pos, sorted_pos, side="left")
            below = counts[first_equal]  # d < p_k  <=>  #{p <= d} <= first index of the value p_k
            closer[i][order[i]] += below
            # Exact float ties with a true match: the smaller gallery index goes first.
            tied = np.flatnonzero(np.isin(row, sorted_pos))
            for col in tied:
                for k in np.flatnonzero(pos_dist[i] == row[col]):
                    if start + col < positives[i][k]:
                        closer[i][k] += 1

    query_of = np.repeat(np.arange(len(q)), [len(p) for p in positives])
    ranks = np.concatenate(closer) + 1 if len(q) else np.zeros(0, dtype=np.int64)
    return summarise(query_scores(len(q), query_of, ranks, ap), max_rank)
