"""The ranks of every true match of a block of queries, without sorting any gallery row.

No Python loop per query: one compiled pass over each distance row
(:mod:`reid_srdl.evaluation.rank_kernel`) ranks all of its true matches at once.

The protocol ranking of a query orders its valid gallery items (removed ones excluded) by
``(distance, gallery index)``; the rank of a true match is one plus the number of valid items
before it.  Only items no farther than the query's farthest true match can come before one,
so each row's items are compared with that threshold and only those under it are counted,
each in the histogram slot of the number of true matches at or before it (a bucket of the
window between the nearest and the farthest match tells, and ties are broken by gallery
index exactly).  The cumulative histogram gives every match's rank.

The first-hit rank (CMC) is the smallest true-match rank, so no top-k list is needed for the
metrics; :func:`top_k_rows` gives one (for ranked-list pictures) after a partial selection.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from reid_srdl.evaluation.rank_kernel import COMPARE_LIMIT, NOT_FINITE, rank_rows

JUNK_PID = -1
_EMPTY = np.zeros(0, dtype=np.int64)


class DistanceOverflowError(ValueError):
    """A true match's distance is not finite (float32 overflow); the caller names the fix."""


# --------------------------------------------------------------------------- who is who
@dataclass(frozen=True)
class BlockPairs:
    """The (row, column) pairs of a block of queries: true matches (same pid, other camera)
    and removed items (same pid, same camera); rows ascending, columns ascending per row."""

    pos_rows: np.ndarray
    pos_cols: np.ndarray
    removed_rows: np.ndarray
    removed_cols: np.ndarray


class ProtocolIds:
    """Query and gallery identities under the Market-1501 protocol, indexed once.

    The gallery's columns are grouped by pid (a stable sort: ascending within a pid), so the
    same-pid columns of any block of queries come out of one ``searchsorted`` and one gather.
    """

    def __init__(self, q_pids: np.ndarray, q_camids: np.ndarray, g_pids: np.ndarray, g_camids: np.ndarray):
        self.q_pids, self.q_camids = q_pids, q_camids
        self.g_camids = g_camids
        self._order = np.argsort(g_pids, kind="stable")
        self._sorted_pids = g_pids[self._order]
        self.junk = np.flatnonzero(g_pids == JUNK_PID)

    def pairs(self, start: int, stop: int) -> BlockPairs:
        """True-match and removed pairs of queries ``start:stop`` (rows counted from ``start``)."""
        pids, cams = self.q_pids[start:stop], self.q_camids[start:stop]
        lo = np.searchsorted(self._sorted_pids, pids, side="left")
        hi = np.searchsorted(self._sorted_pids, pids, side="right")
        hi[pids == JUNK_PID] = lo[pids == JUNK_PID]  # a junk query matches nothing, removes nothing
        lengths = hi - lo
        rows = np.repeat(np.arange(len(pids)), lengths)
        first = np.repeat(lo - (np.cumsum(lengths) - lengths), lengths)  # sorted position of each pair
        cols = self._order[first + np.arange(len(rows))]
        same_cam = self.g_camids[cols] == cams[rows]
        other = ~same_cam
        return BlockPairs(rows[other], cols[other], rows[same_cam], cols[same_cam])


def mark_removed(block: np.ndarray, pairs: BlockPairs, junk: np.ndarray, value: float = np.inf) -> None:
    """Write ``value`` over junk columns and each row's removed items, in place."""
    if junk.size:
        block[:, junk] = value
    if pairs.removed_rows.size:
        block[pairs.removed_rows, pairs.removed_cols] = value


# --------------------------------------------------------------------------- true-match ranks
def default_buckets(num_cols: int) -> int:
    """Buckets per row's window: enough that a bucket rarely holds a true match (an item
    of a bucket with matches is compared with them one by one), few enough that the per-row
    table (8 bytes a bucket, reset per row) stays small beside the row it serves."""
    return max(16, min(4096, num_cols // 16))


def block_ranks(
    block: np.ndarray,
    pairs: BlockPairs,
    row_add: Optional[np.ndarray] = None,
    col_add: Optional[np.ndarray] = None,
    clamp: bool = False,
    buckets: Optional[int] = None,
    compare_limit: int = COMPARE_LIMIT,
) -> np.ndarray:
    """1-based rank of each true match ``(pairs.pos_rows[i], pairs.pos_cols[i])`` in its
    row's ranking, in the order of ``pairs``.

    ``block``: ``(B, G)`` float32 or float64 rows (another dtype is widened to float64), read
    as distances ``(block + col_add[None, :]) + row_add[:, None]`` (the additions default to
    0; ``col_add`` +inf removes a column), clamped at 0 when ``clamp``: a GEMM's ``-2 q.g``
    rows are finished on the fly, without a pass of their own.  A row ranks its valid items
    by ``(distance, column)``; ``pairs``' removed items, and items at +inf or NaN, never
    count.  A row with at most ``compare_limit`` true matches compares every item with each
    match (vectorised), one with more buckets its items (``buckets``: see
    :func:`default_buckets`); any ``compare_limit`` and ``buckets`` >= 1 give the same ranks.

    Raises:
        DistanceOverflowError: a true match's distance is not finite.
    """
    if block.dtype != np.float32:
        block = block.astype(np.float64)
    block = np.ascontiguousarray(block)
    num_rows, num_cols = block.shape
    dtype = block.dtype
    row_add = np.zeros(num_rows, dtype) if row_add is None else np.ascontiguousarray(row_add, dtype=dtype)
    col_add = np.zeros(num_cols, dtype) if col_add is None else np.ascontiguousarray(col_add, dtype=dtype)
    rows = np.arange(num_rows + 1)
    ranks = np.empty(len(pairs.pos_rows), dtype=np.int64)
    status = rank_rows(
        block,
        row_add,
        col_add,
        dtype.type(0 if clamp else -np.inf),
        np.searchsorted(pairs.pos_rows, rows).astype(np.int64),
        pairs.pos_cols.astype(np.int64, copy=False),
        np.searchsorted(pairs.removed_rows, rows).astype(np.int64),
        pairs.removed_cols.astype(np.int64, copy=False),
        default_buckets(num_cols) if buckets is None else max(1, int(buckets)),
        int(compare_limit),
        ranks,
    )
    if status == NOT_FINITE:
        raise DistanceOverflowError("a true match's distance is not finite")
    return ranks


def true_match_ranks(block: np.ndarray, pos_rows: np.ndarray, pos_cols: np.ndarray) -> np.ndarray:
    """1-based rank of each true match ``(pos_rows[i], pos_cols[i])`` (rows ascending) in its
    row's ranking by ``(distance, column)``; removed items already at +inf in ``block``."""
    pairs = BlockPairs(np.asarray(pos_rows), np.asarray(pos_cols), _EMPTY, _EMPTY)
    return block_ranks(np.asarray(block), pairs)


def top_k_rows(block: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The first ``k`` columns of each row of ``block`` by ``(distance, column)``, NaN items
    left out: ``(columns, values)``, each ``(B, k)``, padded with -1 / NaN.

    A partial selection (``np.partition``) finds each row's k-th smallest value; only the
    items at or under it are keyed and sorted.
    """
    num_rows, num_cols = block.shape
    kth = min(k, num_cols) - 1
    threshold = np.partition(block, kth, axis=1)[:, kth]  # NaN sort last: a row short of k valid items gets NaN
    threshold[np.isnan(threshold)] = np.inf
    flat = np.flatnonzero(block <= threshold[:, None])
    rows, cols = np.divmod(flat, num_cols)
    values = block.reshape(-1)[flat]
    order = np.lexsort((cols, values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    starts = np.searchsorted(rows, np.arange(num_rows))
    position = np.arange(len(rows)) - starts[rows]
    keep = position < k
    out_cols = np.full((num_rows, k), -1, dtype=np.int64)
    out_values = np.full((num_rows, k), np.nan, dtype=block.dtype)
    out_cols[rows[keep], position[keep]] = cols[keep]
    out_values[rows[keep], position[keep]] = values[keep]
    return out_cols, out_values


# --------------------------------------------------------------------------- per-query scores
@dataclass(frozen=True)
class QueryScores:
    """Per-query scores from the ranks of its true matches (NaN / 0 for a query without one)."""

    ap: np.ndarray  # float64: average precision
    inp: np.ndarray  # float64: #matches / rank of the last match
    first: np.ndarray  # int64: rank of the first match, 0 when there is none


def query_scores(num_queries: int, query_of: np.ndarray, ranks: np.ndarray, ap: str) -> QueryScores:
    """AP, INP and first-hit rank of each of ``num_queries`` queries from its true matches'
    ranks (``query_of[i]``: the query of rank ``ranks[i]``, any order).

    AP ``torchreid``: mean over the hits of ``k / r_k``; ``official``: mean over the hits of
    ``((k-1)/(r_k-1) + k/r_k) / 2``, the precision before a hit at rank 1 being 1.
    """
    ap_out = np.full(num_queries, np.nan)
    inp_out = np.full(num_queries, np.nan)
    first_out = np.zeros(num_queries, dtype=np.int64)
    if len(ranks) == 0:
        return QueryScores(ap_out, inp_out, first_out)
    order = np.lexsort((ranks, query_of))
    q, r = query_of[order], ranks[order].astype(np.float64)
    counts = np.bincount(q, minlength=num_queries)
    present = np.flatnonzero(counts)
    starts = np.concatenate(([0], np.cumsum(counts[present])[:-1]))
    k = np.arange(1, len(r) + 1, dtype=np.float64) - np.repeat(starts, counts[present])
    at_hit = k / r
    if ap == "torchreid":
        per_hit = at_hit
    else:
        before = np.ones_like(at_hit)
        np.divide(k - 1, r - 1, out=before, where=r > 1)
        per_hit = (before + at_hit) / 2
    n = counts[present].astype(np.float64)
    ap_out[present] = np.add.reduceat(per_hit, starts) / n
    last = starts + counts[present] - 1
    inp_out[present] = n / r[last]
    first_out[present] = r[starts].astype(np.int64)
    return QueryScores(ap_out, inp_out, first_out)
