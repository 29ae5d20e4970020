"""The compiled loop that ranks the true matches of distance rows: one pass over each row.

numba (``nogil``, so that the caller's threads rank rows side by side; ``cache=True``, so
that the compilation, a few seconds per dtype, happens once per machine).  Numpy alone needs
some ten passes over each block of distances (finish, compare, key, bucket, histogram,
gathers), which at d=512 cost as much as the GEMM; here each distance is read once, finished
(``+ ||g||^2 + ||q||^2``, clamped at 0, the same float operations as
:func:`reid_srdl.index.distances.finish_squared_l2`, so the same bits) and, when it is no
farther than its row's farthest true match, counted.

Per row, with its ``M`` true matches sorted by ``(distance, column)``:

* ``hist[p]``: the valid items that come after exactly ``p`` true matches in the protocol
  order (``p`` true matches at or before them by ``(distance, column)``), so the k-th match
  (0-based) has ``hist[0] + ... + hist[k]`` items before it;
* ``p`` of an item: the window from the nearest to the farthest match is cut into equal
  buckets (a monotone map of the distance); the matches of lower buckets all come before the
  item, those of higher buckets after, and only the matches of its own bucket -- usually
  none -- are compared, by ``(distance, column)``, so ties go by gallery index exactly;
* removed items (same pid and camera) are few: they are counted like the others and then
  taken out again; junk columns get ``+inf`` from ``col_add`` and are never counted.
"""

import numba
import numpy as np

OK = 0
NOT_FINITE = 1  # a true match's distance is not finite


@numba.njit(nogil=True, cache=True, inline="always")
def _distance(x, col, row, floor):
    # (x + col) + row: the order of finish_squared_l2's two in-place additions; then the
    # clamp (floor 0; -inf: none).  NaN stays NaN, as np.maximum leaves it.
    d = (x + col) + row
    if d < floor:
        d = floor
    return d


@numba.njit(nogil=True, cache=True, inline="always")
def _bucket(d, lo, scale, top):
    """0 below the window, else 1 + the equal-width bucket of ``d - lo`` (at most ``top``):
    non-decreasing in ``d``, equal for equal distances."""
    if d < lo:
        return 0
    if scale == 0.0:
        return 1
    t = (np.float64(d) - lo) * scale
    return 1 + min(int(t), top - 1)


@numba.njit(nogil=True, cache=True, inline="always")
def _matches_at_or_before(d, col, b, first, m_dist, m_col):
    """``p``: the sorted matches at or before item ``(d, col)`` of bucket ``b``."""
    p = first[b]
    end = first[b + 1]
    while p < end and (m_dist[p] < d or (m_dist[p] == d and m_col[p] <= col)):
        p += 1
    return p


@numba.njit(nogil=True, cache=True)
def rank_rows(block, row_add, col_add, floor, pos_start, pos_cols, rem_start, rem_cols, buckets, ranks):
    """Write into ``ranks[pos_start[r]:pos_start[r+1]]`` the 1-based ranks of the true matches
    ``pos_cols[...]`` of each row ``r`` of ``block``; return :data:`OK` or :data:`NOT_FINITE`.

    The distance of item ``j`` of row ``r`` is ``(block[r, j] + col_add[j]) + row_add[r]``,
    raised to ``floor`` if below it (a scalar of the block's dtype: 0 clamps, -inf does not);
    a row ranks its valid items by ``(distance, column)``;
    ``rem_cols[rem_start[r]:rem_start[r+1]]`` are removed, as is every item whose distance is
    +inf or NaN.  ``buckets``: buckets per row's window (any number >= 1 gives the same ranks).
    """
    num_rows, num_cols = block.shape
    most = 0
    for r in range(num_rows):
        most = max(most, pos_start[r + 1] - pos_start[r])
    m_dist = np.empty(most, dtype=block.dtype)
    m_col = np.empty(most, dtype=np.int64)
    m_slot = np.empty(most, dtype=np.int64)
    hist = np.empty(most + 1, dtype=np.int64)
    first = np.empty(buckets + 2, dtype=np.int64)
    for r in range(num_rows):
        p0 = pos_start[r]
        m = pos_start[r + 1] - p0
        if m == 0:
            continue
        row = block[r]
        ra = row_add[r]
        # The row's true matches, sorted by (distance, column) (insertion sort: a few dozen).
        for k in range(m):
            c = pos_cols[p0 + k]
            d = _distance(row[c], col_add[c], ra, floor)
            if not np.isfinite(d):
                return NOT_FINITE
            i = k
            while i > 0 and (m_dist[i - 1] > d or (m_dist[i - 1] == d and m_col[i - 1] > c)):
                m_dist[i], m_col[i], m_slot[i] = m_dist[i - 1], m_col[i - 1], m_slot[i - 1]
                i -= 1
            m_dist[i], m_col[i], m_slot[i] = d, c, p0 + k
        lo = np.float64(m_dist[0])
        threshold = m_dist[m - 1]
        span = np.float64(threshold) - lo
        scale = (buckets - 1) / span if span > 0.0 and np.isfinite(span) else 0.0
        # first[b]: the matches in buckets below b (bucket 0, below the window, holds none).
        first[:] = 0
        for k in range(m):
            first[_bucket(m_dist[k], lo, scale, buckets) + 1] += 1
        for b in range(1, buckets + 2):
            first[b] += first[b - 1]
        hist[: m + 1] = 0
        for j in range(num_cols):
            d = _distance(row[j], col_add[j], ra, floor)
            if d <= threshold:
                hist[_matches_at_or_before(d, j, _bucket(d, lo, scale, buckets), first, m_dist, m_col)] += 1
        for i in range(rem_start[r], rem_start[r + 1]):
            j = rem_cols[i]
            d = _distance(row[j], col_add[j], ra, floor)
            if d <= threshold:
                hist[_matches_at_or_before(d, j, _bucket(d, lo, scale, buckets), first, m_dist, m_col)] -= 1
        before = 0
        for k in range(m):
            before += hist[k]
            ranks[m_slot[k]] = before + 1
    return OK
