# SPDX-License-Identifier: MIT OR Apache-2.0
"""THE FILE YOU EDIT: the pq_l2 kernel (PQ L2 distance table + ADC scan + top-k).

Contract: HARNESS.md (the loop) and pq_l2/program.md (this kernel's API and priors).
The baseline below ports Lance's algorithm as it is: codes transposed to [m][n] once,
per query an m x 256 distance table, one table row added per sub-vector, then top-k.
"""
import numpy as np
from numba import njit


@njit(cache=False)
def _distance_table(codebook, query):
    # codebook [m, num_centroids, sub_dim] -> table [m, num_centroids] of squared L2.
    m, num_centroids, sub_dim = codebook.shape
    table = np.empty((m, num_centroids), np.float32)
    for i in range(m):
        base = i * sub_dim
        for c in range(num_centroids):
            acc = np.float32(0.0)
            for d in range(sub_dim):
                diff = query[base + d] - codebook[i, c, d]
                acc += diff * diff
            table[i, c] = acc
    return table


@njit(cache=False)
def _scan(table, codes_t):
    # codes_t [m, n]: one table row is gathered and added per sub-vector, as in Lance.
    m, n = codes_t.shape
    dists = np.zeros(n, np.float32)
    for i in range(m):
        row = table[i]
        codes_row = codes_t[i]
        for j in range(n):
            dists[j] += row[codes_row[j]]
    return dists


@njit(cache=False)
def _sift_down(heap_d, heap_i, size, pos):
    # Max-heap on distance: the root is the worst of the current best k.
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        big = left
        right = left + 1
        if right < size and heap_d[right] > heap_d[left]:
            big = right
        if heap_d[big] <= heap_d[pos]:
            return
        heap_d[pos], heap_d[big] = heap_d[big], heap_d[pos]
        heap_i[pos], heap_i[big] = heap_i[big], heap_i[pos]
        pos = big


@njit(cache=False)
def _top_k(dists, k):
    n = dists.shape[0]
    k = min(k, n)
    heap_d = dists[:k].copy()
    heap_i = np.arange(k)
    for pos in range(k // 2 - 1, -1, -1):
        _sift_down(heap_d, heap_i, k, pos)
    for j in range(k, n):
        if dists[j] < heap_d[0]:
            heap_d[0] = dists[j]
            heap_i[0] = j
            _sift_down(heap_d, heap_i, k, 0)
    for size in range(k - 1, 0, -1):  # heapsort's second half: the worst goes last
        heap_d[0], heap_d[size] = heap_d[size], heap_d[0]
        heap_i[0], heap_i[size] = heap_i[size], heap_i[0]
        _sift_down(heap_d, heap_i, size, 0)
    return heap_i, heap_d


class PqKernel:
    def __init__(self, shape, codebook, codes):
        self.shape = shape
        self.codebook = codebook
        self.codes_t = np.ascontiguousarray(codes.T)  # [m, n], done once at index load

    def probe_top_k(self, query, k):
        table = _distance_table(self.codebook, query)
        dists = _scan(table, self.codes_t)
        return _top_k(dists, k)
