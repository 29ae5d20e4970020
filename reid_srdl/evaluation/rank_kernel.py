"""The compiled loop that ranks the true matches of distance rows: one read of each distance.

numba (``nogil``, so that the caller's threads rank rows side by side; ``cache=True``, so
that the compilation, some seconds per dtype, happens once per installation).  Numpy alone
needs some ten passes over each block of distances (finish, compare, key, bucket, histogram,
gathers), which at d=512 cost as much as the GEMM.  Here each row is read once, a chunk of
``CHUNK`` items at a time: the chunk's distances are finished into a small buffer that stays
in the L1 cache (``+ ||g||^2 + ||q||^2``, clamped at 0: the same float operations as
:func:`reid_srdl.index.distances.finish_squared_l2`, so the same bits), then counted.

A true match ``(d_k, j_k)`` has as many items before it as there are valid items with
``(distance, column) < (d_k, j_k)``: items of columns before ``j_k`` at ``<= d_k``, items of
columns after it at ``< d_k``.  Two ways to count them, chosen per row:

* a row with at most ``compare_limit`` true matches (re-id's usual few dozen) compares the
  chunk with each match in turn: vectorised compare-and-count loops (SIMD; ~0.06 ns per item
  and match on an AVX-512 core), no branch per item;
* a row with more (a class-sized "identity") buckets its items instead, independently of the
  number of matches: with its matches sorted by ``(distance, column)``, the window from the
  nearest to the farthest is cut into ``buckets`` equal buckets (a monotone map of the
  distance), a table gives each bucket the number of matches in lower buckets, and only an
  item of a bucket that holds a match is compared with that bucket's matches, so ties go by
  gallery index exactly; ``hist[p]`` counts the items after exactly ``p`` matches, and the
  cumulative histogram gives the ranks.

Removed items (same pid and camera) are few: they are counted like the others and taken out
again.  Junk columns get ``+inf`` from ``col_add``; +inf and NaN never come before a match.
Loops index with unsigned integers: numba's wrap-around of negative signed indices would
otherwise keep LLVM from vectorising them (a gather per item, 7x slower).

The kernel asks LLVM for 512-bit vectors where the CPU has them: LLVM's tuning for Intel's
AVX-512 server cores prefers 256-bit vectors (``prefer-256-bit``), which halves the
compare-and-count loops' width; on a 2-core Intel Xeon (Emerald Rapids) the compare path took
4.1 ns per item with 27 matches, 2.6 ns with 512-bit vectors (AMD's Zen 4 tuning already
uses them).  The hint is one function attribute of this kernel, not numba's process-wide
CPU features, so the caller's own numba code compiles as before; a CPU without 512-bit
registers ignores it.
"""

import numba
import numpy as np
from numba import int32, int64, types, uint64
from numba.extending import intrinsic

OK = 0
COMPARE_LIMIT = 32  # rows with more true matches bucket (measured crossover: ~30 on AVX-512)
NOT_FINITE = 1  # a true match's distance is not finite
CHUNK = 2048  # items finished into the per-chunk buffer (8 KB of float32: L1)
_COPIES = 4  # interleaved histograms: consecutive items rarely wait on the same counter


PREFER_VECTOR_WIDTH = '"prefer-vector-width"="512"'  # an LLVM string attribute of the function


@intrinsic
def _prefer_wide_vectors(typingctx):
    """Give the function that calls this the LLVM attribute :data:`PREFER_VECTOR_WIDTH`
    (an intrinsic's code is emitted into its caller, so ``builder.function`` is the kernel)."""

    def codegen(context, builder, signature, args):
        # llvmlite's attribute set accepts only its list of enum attributes; a string
        # attribute is written into the function's definition as it is, and LLVM's X86
        # backend reads it when it picks the vector width of that function.
        set.add(builder.function.attributes, PREFER_VECTOR_WIDTH)
        return context.get_dummy_value()

    return types.none(), codegen


@numba.njit(nogil=True, cache=True, inline="always")
def _distance(x, col, row, floor):
    # (x + col) + row: the order of finish_squared_l2's two in-place additions; then the
    # clamp (floor 0; -inf: none).  NaN stays NaN, as np.maximum leaves it.
    d = (x + col) + row
    if d < floor:
        d = floor
    return d


@numba.njit(nogil=True, cache=True, inline="always")
def _count_at_or_under(buf, lo, hi, bound):
    count = int32(0)
    for i in range(uint64(lo), uint64(hi)):
        count += int32(buf[i] <= bound)
    return count


@numba.njit(nogil=True, cache=True, inline="always")
def _count_under(buf, lo, hi, bound):
    count = int32(0)
    for i in range(uint64(lo), uint64(hi)):
        count += int32(buf[i] < bound)
    return count


@numba.njit(nogil=True, cache=True, inline="always")
def _bucket(d, lo, scale, top):
    """0 below the window, 1..top in it, top + 1 past it (and for NaN): non-decreasing in
    ``d``, equal for equal distances."""
    t = (d - lo) * scale if scale > 0 else d - d  # scale 0 (one bucket): 0, or NaN past +inf
    if t < 0:
        t = -1.0
    if not t < top:
        t = top
    return int64(t) + 1


@numba.njit(nogil=True, cache=True, inline="always")
def _before_in_bucket(p, end, d, col, m_dist, m_col):
    """From ``p``, past the sorted matches ``< end`` at or before item ``(d, col)``."""
    while p < end and (m_dist[p] < d or (m_dist[p] == d and m_col[p] <= col)):
        p += 1
    return p


@numba.njit(nogil=True, cache=True)
def rank_rows(block, row_add, col_add, floor, pos_start, pos_cols, rem_start, rem_cols, buckets, compare_limit, ranks):
    """Write into ``ranks[pos_start[r]:pos_start[r+1]]`` the 1-based ranks of the true matches
    ``pos_cols[...]`` of each row ``r`` of ``block``; return :data:`OK` or :data:`NOT_FINITE`.

    The distance of item ``j`` of row ``r`` is ``(block[r, j] + col_add[j]) + row_add[r]``,
    raised to ``floor`` if below it (a scalar of the block's dtype: 0 clamps, -inf does not);
    a row ranks its valid items by ``(distance, column)``;
    ``rem_cols[rem_start[r]:rem_start[r+1]]`` are removed, as is every item whose distance is
    +inf or NaN.  Rows with at most ``compare_limit`` matches compare, others bucket
    (``buckets`` >= 1 per window); either way the ranks are the same.
    """
    _prefer_wide_vectors()
    num_rows, num_cols = block.shape
    most = 0
    for r in range(num_rows):
        most = max(most, pos_start[r + 1] - pos_start[r])
    m_dist = np.empty(most, dtype=block.dtype)
    m_col = np.empty(most, dtype=np.int64)
    m_slot = np.empty(most, dtype=np.int64)
    before = np.empty(most, dtype=np.int64)
    hist_len = most + 1
    hist = np.empty(_COPIES * hist_len, dtype=np.int64)
    # A bucketed row takes at least 4 buckets per match (a bucket then rarely holds one), at
    # most half a bucket per item (the table is reset for each row).
    most_buckets = max(buckets, min(4 * most, num_cols // 2))
    first = np.empty(most_buckets + 3, dtype=np.int64)  # matches in lower buckets
    code = np.empty(most_buckets + 2, dtype=np.int64)  # first[b], or -1 - first[b] when b holds a match
    buf = np.empty(CHUNK, dtype=block.dtype)
    pbuf = np.empty(CHUNK, dtype=np.int64)
    for r in range(num_rows):
        p0 = pos_start[r]
        m = pos_start[r + 1] - p0
        if m == 0:
            continue
        row = block[r]
        ra = row_add[r]
        for k in range(m):
            c = pos_cols[p0 + k]
            d = _distance(row[c], col_add[c], ra, floor)
            if not np.isfinite(d):
                return NOT_FINITE
            m_dist[k], m_col[k], m_slot[k] = d, c, p0 + k
        if m <= compare_limit:
            before[:m] = 0
            for s in range(0, num_cols, CHUNK):
                n = min(num_cols - s, CHUNK)
                chunk_x, chunk_add = row[s:], col_add[s:]
                for i in range(uint64(n)):
                    buf[i] = _distance(chunk_x[i], chunk_add[i], ra, floor)
                for k in range(m):
                    at, bound = m_col[k] - s, m_dist[k]
                    if at >= n:  # the whole chunk precedes the match's column
                        before[k] += _count_at_or_under(buf, 0, n, bound)
                    elif at < 0:  # the whole chunk follows it
                        before[k] += _count_under(buf, 0, n, bound)
                    else:
                        before[k] += _count_at_or_under(buf, 0, at, bound) + _count_under(buf, at + 1, n, bound)
            for i in range(rem_start[r], rem_start[r + 1]):
                j = rem_cols[i]
                d = _distance(row[j], col_add[j], ra, floor)
                for k in range(m):
                    if d < m_dist[k] or (d == m_dist[k] and j < m_col[k]):
                        before[k] -= 1
            for k in range(m):
                ranks[m_slot[k]] = before[k] + 1
            continue
        # Bucketed: the matches sorted by (distance, column) (two stable sorts), the window
        # [nearest, farthest match] in `row_buckets` equal buckets.
        order = np.argsort(m_col[:m], kind="mergesort")
        order = order[np.argsort(m_dist[:m][order], kind="mergesort")]
        m_dist[:m], m_col[:m], m_slot[:m] = m_dist[:m][order], m_col[:m][order], m_slot[:m][order]
        row_buckets = max(buckets, min(4 * m, num_cols // 2))
        lo = m_dist[0]
        span = m_dist[m - 1] - lo
        scale = (row_buckets - 1) / span if span > 0 and np.isfinite(span) else 0.0
        top = float(row_buckets)
        first[: row_buckets + 3] = 0
        for k in range(m):
            first[_bucket(m_dist[k], lo, scale, top) + 1] += 1
        for b in range(1, row_buckets + 3):
            first[b] += first[b - 1]
        for b in range(row_buckets + 2):
            code[b] = first[b] if first[b + 1] == first[b] else -1 - first[b]
        hist[:] = 0
        for s in range(0, num_cols, CHUNK):
            n = min(num_cols - s, CHUNK)
            chunk_x, chunk_add = row[s:], col_add[s:]
            for i in range(uint64(n)):  # vectorised: distance, bucket, table
                pbuf[i] = code[_bucket(_distance(chunk_x[i], chunk_add[i], ra, floor), lo, scale, top)]
            for i in range(uint64(n)):
                p = pbuf[i]
                if p < 0:  # a bucket with matches: compare with them
                    j = s + int64(i)
                    d = _distance(row[j], col_add[j], ra, floor)
                    p = _before_in_bucket(-1 - p, first[_bucket(d, lo, scale, top) + 1], d, j, m_dist, m_col)
                hist[(i % uint64(_COPIES)) * uint64(hist_len) + uint64(p)] += 1
        for i in range(rem_start[r], rem_start[r + 1]):
            j = rem_cols[i]
            d = _distance(row[j], col_add[j], ra, floor)
            b = _bucket(d, lo, scale, top)
            hist[_before_in_bucket(first[b], first[b + 1], d, j, m_dist, m_col)] -= 1
        total = 0
        for k in range(m):
            for c in range(_COPIES):
                total += hist[c * hist_len + k]
            ranks[m_slot[k]] = total + 1
    return OK
