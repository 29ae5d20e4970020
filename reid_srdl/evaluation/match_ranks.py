"""The ranks of every true match of a block of queries, without sorting any gallery row.

Numpy only, vectorised over a whole block of distance rows: no Python loop per query.

The protocol ranking of a query orders its valid gallery items (removed ones excluded) by
``(distance, gallery index)``; the rank of a true match is one plus the number of valid items
before it.  Only items no farther than the query's farthest true match can come before one,
so, per block (:class:`TrueMatchRanker`):

1. the farthest true match of each row gives a threshold, and one comparison over the block
   keeps the *candidates* (valid items at or under their row's threshold; removed items are
   +inf and never pass);
2. a non-negative float32's bit pattern, read as an integer, orders like the float: each
   item's bucket is its key's high bits within its row's window (nearest to farthest true
   match, at most two binades; below it, bucket 0) -- a few integer operations over the
   block -- and one ``bincount`` of the candidates' buckets gives each row's cumulative
   histogram: the candidates before a match's bucket;
3. inside the *hot* buckets (those holding a match) the few candidates there are sorted as
   packed 64-bit ``(row, key, column)`` keys, so ties are broken by gallery index exactly;
   a match's rank is one plus the candidates in earlier buckets plus those of its own bucket
   that precede it.

Non-float32 distances (or a gallery too large for the column bits) take the same candidates
through ``np.lexsort`` over ``(row, distance, column)`` instead (:func:`true_match_ranks`).

The first-hit rank (CMC) is the smallest true-match rank, so no top-k list is needed for the
metrics; :func:`top_k_rows` gives one (for ranked-list pictures) after a partial selection.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

JUNK_PID = -1
_EMPTY = np.zeros(0, dtype=np.int64)
_KEY_BITS = 32  # a float32 distance's order-preserving key
_WINDOW_BITS = 24  # two binades of float32 keys (23 mantissa bits each): a row's widest window


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


# --------------------------------------------------------------------------- keys
def int_keys(values: np.ndarray, nonnegative: bool = False) -> np.ndarray:
    """int32 keys that order like the (non-NaN) float32 ``values``, ties as ties.

    A non-negative float's bit pattern, read as an int32, orders like the float (the
    ``nonnegative`` fast path is a view, no copy); a negative one gets its magnitude bits
    flipped, so that larger magnitudes come first.  -0.0 is made +0.0 first: the two zeros,
    equal as floats, must share a key.
    """
    if nonnegative:
        return values.view(np.int32)
    bits = (values + np.float32(0)).view(np.int32)  # -0.0 + 0.0 = +0.0
    return np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)


def packed_row_limit(num_cols: int) -> int:
    """Rows of one block whose ``(row, 32-bit key, column)`` keys fit 64 bits (0: none)."""
    row_bits = 64 - _KEY_BITS - _col_bits(num_cols)
    return 0 if row_bits < 1 else 1 << min(row_bits, 40)


def _col_bits(num_cols: int) -> int:
    return max(1, int(num_cols - 1).bit_length())


def _packed(rows: np.ndarray, keys: np.ndarray, cols: np.ndarray, col_bits: int) -> np.ndarray:
    """uint64 ``(row, key, column)``, ordered as the triples are; ``keys`` int32-ranged."""
    unsigned = (keys.astype(np.int64) + (1 << 31)).astype(np.uint64)  # int32 order -> unsigned
    packed = rows.astype(np.uint64) << np.uint64(_KEY_BITS + col_bits)
    packed |= unsigned << np.uint64(col_bits)
    packed |= cols.astype(np.uint64)
    return packed


# --------------------------------------------------------------------------- true-match ranks
class TrueMatchRanker:
    """Ranks the true matches of blocks of up to ``max_rows`` float32 rows of ``num_cols``
    distances, with scratch buffers kept between blocks (no page faults per block).

    Per block (see the module docstring): the candidates are the items at or under their
    row's farthest true match.  Each row's window of keys -- from its nearest true match up to
    its farthest, at most two binades -- is cut into equal buckets (the key's high bits, a
    per-row shift); bucket 0 takes everything below the window.  A true match's rank is one
    plus its row's candidates in lower buckets (a cumulative histogram: one ``bincount``)
    plus those of its own bucket that come before it by ``(key, column)``: only the
    candidates of these *hot* buckets are sorted, a few percent of them.
    """

    def __init__(self, num_cols: int, max_rows: int, buckets: Optional[int] = None):
        if max_rows > packed_row_limit(num_cols):
            raise ValueError(f"{max_rows} rows of {num_cols} columns do not fit a 64-bit (row, key, column) key")
        self.num_cols, self.max_rows = num_cols, max_rows
        # Buckets per row's window: ~num_cols/16 keeps the histogram small beside the block it
        # counts; any number >= 2 gives the same ranks (fewer: more candidates sorted).
        # (At least 2: a window always fits 2 buckets at some shift, see _windows.)
        self.buckets = max(256, num_cols // 16) if buckets is None else max(2, int(buckets))
        self._bins = np.empty(max_rows * num_cols, dtype=np.int32)
        self._mask = np.empty(max_rows * num_cols, dtype=bool)

    def ranks(
        self, block: np.ndarray, pos_rows: np.ndarray, pos_cols: np.ndarray, nonnegative: bool = False
    ) -> np.ndarray:
        """1-based rank of each true match ``(pos_rows[i], pos_cols[i])`` in its row's ranking.

        ``block``: ``(B, G)`` C-contiguous float32 distances, removed items at +inf.  A row ranks
        its items by ``(distance, column)``; an item at +inf (removed) comes after every true
        match and never counts.  ``nonnegative``: the caller guarantees no negative value and
        no -0.0 (distances clamped at 0), so that the bits are the keys.

        Raises:
            DistanceOverflowError: a true match's distance is not finite.
        """
        num_rows, num_cols = block.shape
        if pos_rows.size == 0:
            return _EMPTY
        pos_values = block[pos_rows, pos_cols]
        if not np.isfinite(pos_values).all():
            raise DistanceOverflowError("a true match's distance is not finite")
        threshold = np.full(num_rows, -np.inf, dtype=np.float32)
        np.maximum.at(threshold, pos_rows, pos_values)
        size = num_rows * num_cols
        mask = self._mask[:size].reshape(num_rows, num_cols)
        # Candidates: no farther than the row's farthest match (ties in; NaN, +inf out), by row.
        np.less_equal(block, threshold[:, None], out=mask)
        flat = np.flatnonzero(mask)

        keys = int_keys(block, nonnegative)
        pos_keys = keys[pos_rows, pos_cols].astype(np.int64)
        shift, base = self._windows(pos_rows, pos_keys, num_rows)
        stride = self.buckets + 2  # bins per row: bucket 0 + at most buckets + 1 in the window
        row_offset = np.arange(num_rows, dtype=np.int64) * stride
        # Every item's bin, row * stride + bucket, over the whole block (broadcast per-row
        # shift and base: cheaper than expanding them per candidate).
        bins = self._bins[:size].reshape(num_rows, num_cols)
        np.right_shift(keys, shift.astype(np.int32)[:, None], out=bins)
        # bucket = max(shifted, base) - base: 0 below the window.  The max comes first so that
        # no candidate's subtraction can overflow int32 (items past the threshold may: unused).
        np.maximum(bins, base.astype(np.int32)[:, None], out=bins)
        bins -= base.astype(np.int32)[:, None]
        bins += row_offset.astype(np.int32)[:, None]
        cand_bins = np.take(bins.reshape(-1), flat).astype(np.intp)  # intp: bincount and take want it
        pos_bins = bins[pos_rows, pos_cols].astype(np.intp)

        counts = np.bincount(cand_bins, minlength=num_rows * stride)
        below = np.cumsum(counts) - counts  # candidates in earlier bins (earlier rows' too)
        hot = np.zeros(num_rows * stride, dtype=bool)
        hot[pos_bins] = True
        chosen = np.compress(np.take(hot, cand_bins), flat)
        col_bits = _col_bits(num_cols)
        chosen_rows = chosen // num_cols
        packed = _packed(chosen_rows, np.take(keys.reshape(-1), chosen), chosen - chosen_rows * num_cols, col_bits)
        packed.sort()
        bucket = pos_bins - row_offset[pos_rows]
        row_shift, row_base = shift[pos_rows], base[pos_rows]
        first_key = np.where(bucket > 0, (row_base + bucket) << row_shift, -(1 << 31))  # smallest key of the bin
        start = np.searchsorted(packed, _packed(pos_rows, first_key, np.zeros_like(pos_cols), col_bits))
        within = np.searchsorted(packed, _packed(pos_rows, pos_keys, pos_cols, col_bits)) - start
        before_row = below[row_offset[pos_rows]]  # candidates of the rows before
        return below[pos_bins] - before_row + within + 1

    def _windows(self, pos_rows, pos_keys, num_rows: int):
        """Per row: the smallest shift that cuts its window into at most ``buckets`` buckets,
        and the base below which a shifted key lies under the window (bucket 0).

        The window runs from the row's nearest true match up to its farthest but spans at
        most two binades: a near-duplicate at distance ~0 would stretch it over the whole key
        range and leave the crowded distances in a few coarse buckets; a match below the
        window is in bucket 0, which is then one more hot bucket.
        """
        hi = np.full(num_rows, -(1 << 31), dtype=np.int64)
        lo = np.full(num_rows, (1 << 31) - 1, dtype=np.int64)
        np.maximum.at(hi, pos_rows, pos_keys)
        np.minimum.at(lo, pos_rows, pos_keys)
        lo = np.maximum(np.minimum(lo, hi), hi - (1 << _WINDOW_BITS))
        shift = np.zeros(num_rows, dtype=np.int64)
        # A window spans <= 2**24 keys, so past shift 24 its ends differ by at most 1 < buckets.
        for _ in range(_WINDOW_BITS + 1):
            wide = (hi >> shift) - (lo >> shift) >= self.buckets
            if not wide.any():
                break
            shift += wide
        # (A row without true matches has no candidates either; keep its base in int32 range.)
        return shift, np.clip((lo >> shift) - 1, -(1 << 31), (1 << 31) - 1)


def true_match_ranks(
    block: np.ndarray, pos_rows: np.ndarray, pos_cols: np.ndarray, nonnegative: bool = False
) -> np.ndarray:
    """1-based rank of each true match ``(pos_rows[i], pos_cols[i])`` in its row's ranking,
    for one block of any float dtype (see :meth:`TrueMatchRanker.ranks`).  float32 blocks go
    through :class:`TrueMatchRanker`; others by a ``np.lexsort`` of the candidates over
    ``(row, value, column)``."""
    block = np.ascontiguousarray(block)
    num_rows, num_cols = block.shape
    if block.dtype == np.float32 and 0 < num_rows <= packed_row_limit(num_cols):
        return TrueMatchRanker(num_cols, num_rows).ranks(block, pos_rows, pos_cols, nonnegative)
    if pos_rows.size == 0:
        return _EMPTY
    pos_values = block[pos_rows, pos_cols]
    if not np.isfinite(pos_values).all():
        raise DistanceOverflowError("a true match's distance is not finite")
    threshold = np.full(num_rows, -np.inf, dtype=block.dtype)
    np.maximum.at(threshold, pos_rows, pos_values)
    flat = np.flatnonzero(block <= threshold[:, None])
    rows, cols = np.divmod(flat, num_cols)
    values = np.take(block.reshape(-1), flat) + block.dtype.type(0)  # -0.0 == +0.0
    order = np.lexsort((cols, values, rows))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    row_starts = np.searchsorted(flat, np.arange(num_rows + 1) * num_cols)
    return position[np.searchsorted(flat, pos_rows * num_cols + pos_cols)] - row_starts[pos_rows] + 1


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
