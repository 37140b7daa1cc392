# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: the pq_l2 oracle. Independent of kernels.py; only the judge process uses it.

Distances are computed term by term in float64 from the float32 inputs, which makes them
exact to ~1e-16 relative: the truth the float32 kernel is held to.

Tolerance. Every term (q - c)^2 is non-negative, so float32 arithmetic in any order has a
relative error bound (Higham, Accuracy and Stability of Numerical Algorithms, sec. 3.1/4.2):
a term costs three roundings (the difference, counted twice once squared, and the square),
the sub_dim terms of a table entry and the m entries of a distance add with at most
sub_dim - 1 and m - 1 more, each at most u = 2^-24. So |kernel - exact| <= gamma(n) * exact
with n = sub_dim + m + 1 and gamma(n) = n*u / (1 - n*u). Summation order, FMA (fewer
roundings) and float64 accumulation all stay inside it; a dropped or doubled sub-vector, a
wrong centroid, sqrt, float16 or u8-quantised tables and the q^2 + c^2 - 2qc rewrite (terms
no longer non-negative: it cancels catastrophically on large_dynamic_range) fall outside it.
MAX_ABS_ERR is the floor near zero, where subnormals and flush-to-zero live.

Over many vectors the sum over sub-vectors is compiled (numba), so that the judge can check
every output it times; it is the same float64 definition, term by term in order, and the
tests hold the two to each other.
"""
import functools

import numpy as np

MAX_ABS_ERR = 1e-4  # absolute floor of the tolerance, for distances near zero
COMPILED_FROM = 1 << 16  # table lookups (n x m) from which the compiled sum is worth its import
COMPILED_SELECT_FROM = 1 << 12  # distances from which the compiled selection is
UNIT_ROUNDOFF = 2.0**-24  # float32
ROUNDINGS_PER_TERM = 3  # (q - c) rounded, counted twice by the square, and the square


def distance_table(codebook, query):
    """[m, num_centroids] float64: the squared L2 from each query slice to each centroid."""
    m, _, sub_dim = codebook.shape
    q = query.astype(np.float64).reshape(m, 1, sub_dim)
    return ((q - codebook.astype(np.float64)) ** 2).sum(axis=2)


def exact_distances(codebook, codes, query):
    """Squared L2 from `query` to every encoded vector, float64, [n]."""
    if codes.size >= COMPILED_FROM:
        return _compiled()[0](codebook, np.ascontiguousarray(codes), query)
    table = distance_table(codebook, query)
    return table[np.arange(len(table)), codes.astype(np.intp)].sum(axis=1)


def smallest(exact, k):
    """The k smallest distances, ascending: what a top-k must match."""
    if k >= len(exact):
        return np.sort(exact)
    if len(exact) >= COMPILED_SELECT_FROM:
        return _compiled()[1](exact, k)
    return np.sort(np.partition(exact, k - 1)[:k])


def _distances(codebook, codes, query):
    """exact_distances, compiled: the same terms in float64, each sum in order."""
    m, num_centroids, sub_dim = codebook.shape
    table = np.empty((m, num_centroids))
    for i in range(m):
        for c in range(num_centroids):
            total = 0.0
            for d in range(sub_dim):
                diff = np.float64(query[i * sub_dim + d]) - np.float64(codebook[i, c, d])
                total += diff * diff
            table[i, c] = total
    n = codes.shape[0]
    out = np.empty(n)
    for j in range(n):
        total = 0.0
        for i in range(m):
            total += table[i, codes[j, i]]
        out[j] = total
    return out


def _smallest(exact, k):
    """smallest, compiled: a max-heap of the k smallest in one pass, then sorted."""
    heap = np.empty(k)
    heap[:] = np.sort(exact[:k])[::-1]  # descending is a valid max-heap
    for j in range(k, exact.shape[0]):
        if exact[j] < heap[0]:
            heap[0] = exact[j]
            pos = 0
            while 2 * pos + 1 < k:  # sift down
                child = 2 * pos + 1
                if child + 1 < k and heap[child + 1] > heap[child]:
                    child += 1
                if heap[child] <= heap[pos]:
                    break
                swap = heap[pos]
                heap[pos] = heap[child]
                heap[child] = swap
                pos = child
    return np.sort(heap)


@functools.cache
def _compiled():
    from numba import njit  # imported on first use: it costs the judge 0.3 s

    return tuple(njit(cache=True, nogil=True)(f) for f in (_distances, _smallest))


def relative_bound(shape):
    sub_dim = shape.dim // shape.num_sub_vectors
    n = (sub_dim - 1) + (shape.num_sub_vectors - 1) + ROUNDINGS_PER_TERM
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def tolerance(exact, shape):
    return np.maximum(MAX_ABS_ERR, relative_bound(shape) * exact)


def reference_top_k(exact, k):
    """Ids and distances of the k smallest, ascending (ties by id)."""
    ids = np.argsort(exact, kind="stable")[:k]
    return ids, exact[ids]


def topk_consistent(ids, dists, exact, k, shape, best=None):
    """None if (ids, dists) is a correct top-k for these exact distances, else the reason.
    `best`: smallest(exact, min(k, n)), when the caller has it already.

    Positional: the j-th returned distance matches the j-th true smallest within tolerance.
    Honest: each returned distance matches the true distance of the id it names. Together
    they allow ids to differ from the oracle's only inside a band of tied distances."""
    n = len(exact)
    want = min(k, n)
    for name, arr in (("ids", ids), ("dists", dists)):
        if type(arr) is not np.ndarray:
            return f"{name} is {type(arr).__name__}, not numpy.ndarray"
        if arr.shape != (want,):
            return f"{name} has shape {arr.shape}, expected ({want},)"
    if ids.dtype.kind not in "iu":
        return f"ids dtype {ids.dtype} is not an integer type"
    if dists.dtype != np.float32:
        return f"dists dtype {dists.dtype} is not float32"
    if not np.all(np.isfinite(dists)):
        return f"dists contain non-finite values: {dists[~np.isfinite(dists)][:3]}"
    if want and (ids.min() < 0 or ids.max() >= n):
        return f"ids out of range [0, {n}): {ids[(ids < 0) | (ids >= n)][:3]}"
    if len(np.unique(ids)) != want:
        return "ids are not distinct"
    if np.any(np.diff(dists) < 0):
        j = int(np.argmax(np.diff(dists) < 0))
        return f"dists not ascending at position {j}: {dists[j]} > {dists[j + 1]}"
    got = dists.astype(np.float64)
    true_of_ids = exact[ids]
    bad = np.abs(got - true_of_ids) > tolerance(true_of_ids, shape)
    if np.any(bad):
        j = int(np.argmax(bad))
        return (f"position {j}: id {ids[j]} has distance {true_of_ids[j]:.9g}, kernel says "
                f"{got[j]:.9g} (tolerance {tolerance(true_of_ids[j], shape):.3g})")
    best = smallest(exact, want) if best is None else best
    bad = np.abs(got - best) > tolerance(best, shape)
    if np.any(bad):
        j = int(np.argmax(bad))
        return (f"position {j}: the {j + 1}-th smallest distance is {best[j]:.9g}, kernel "
                f"returned {got[j]:.9g} (id {ids[j]}; tolerance {tolerance(best[j], shape):.3g})")
    return None
