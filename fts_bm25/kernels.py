# SPDX-License-Identifier: MIT OR Apache-2.0
"""THE FILE YOU EDIT: the fts_bm25 kernel (BM25 top-k over posting lists, as Lance searches).

Contract: HARNESS.md (the loop) and fts_bm25/program.md (this kernel's API and priors).
The baseline below ports Lance's block-max WAND (rust/lance-index/src/scalar/inverted/wand.rs,
`Wand::search`, `next`, `find_pivot_term`, `check_block_max`, `get_new_candidate`): one
iterator per query term kept sorted by current doc; a pivot where the terms' list maxima reach
the k-th score; skip by block maxima; score a candidate in float32, in query order; a min-heap
of the best k that a new document enters only with a strictly higher score.
"""
import math

import numpy as np
from numba import njit

K1 = np.float32(1.2)  # BM25 parameters, as Lance's scorer
B = np.float32(0.75)
BLOCK_SIZE = 128  # postings per block (Lance's default)
END = np.int64(1 << 62)  # the doc of an exhausted iterator
ROOT = np.int64(0)  # the heap's root, typed: a literal 0 argument costs a second compile
# Iterator fields: columns of the int64 state array `it`, one row per query term.
LO, HI, CUR, BLOCK, NUM_BLOCKS, FIRST_BLOCK, TERM, POSITION = range(8)


@njit(cache=False)
def _doc(it, doc_ids, i):
    return np.int64(doc_ids[it[i, CUR]]) if it[i, CUR] < it[i, HI] else END


@njit(cache=False)
def _block_first_doc(it, doc_ids, i, block):
    return np.int64(doc_ids[it[i, LO] + block * BLOCK_SIZE])


@njit(cache=False)
def _next(it, doc_ids, i, least):
    # Move to the first posting with doc >= least: skip whole blocks, then scan in the block.
    block = (it[i, CUR] - it[i, LO]) // BLOCK_SIZE
    while block + 1 < it[i, NUM_BLOCKS] and _block_first_doc(it, doc_ids, i, block + 1) <= least:
        block += 1
    cur = max(it[i, CUR], it[i, LO] + block * BLOCK_SIZE)
    while cur < it[i, HI] and doc_ids[cur] < least:
        cur += 1
    it[i, CUR] = cur
    it[i, BLOCK] = (cur - it[i, LO]) // BLOCK_SIZE


@njit(cache=False)
def _shallow_next(it, doc_ids, i, least):
    # Move only the block cursor (for its max score), not the posting cursor.
    while (it[i, BLOCK] + 1 < it[i, NUM_BLOCKS]
           and _block_first_doc(it, doc_ids, i, it[i, BLOCK] + 1) <= least):
        it[i, BLOCK] += 1


@njit(cache=False)
def _next_block_first_doc(it, doc_ids, i):
    if it[i, BLOCK] + 1 >= it[i, NUM_BLOCKS]:
        return END
    return _block_first_doc(it, doc_ids, i, it[i, BLOCK] + 1)


@njit(cache=False)
def _less(it, doc_ids, bound, a, b):
    # Lance's iterator order: current doc, then list upper bound, term id, query position.
    da, db = _doc(it, doc_ids, a), _doc(it, doc_ids, b)
    if da != db:
        return da < db
    if bound[a] != bound[b]:
        return bound[a] < bound[b]
    if it[a, TERM] != it[b, TERM]:
        return it[a, TERM] < it[b, TERM]
    return it[a, POSITION] < it[b, POSITION]


@njit(cache=False)
def _bubble_up(order, size, it, doc_ids, bound, index):
    # The iterator at `index` moved forward: restore the order after it.
    for j in range(index + 1, size):
        if not _less(it, doc_ids, bound, order[j], order[j - 1]):
            break
        order[j - 1], order[j] = order[j], order[j - 1]


@njit(cache=False)
def _sort(order, size, it, doc_ids, bound):
    for j in range(1, size):  # insertion sort: a handful of terms
        x = order[j]
        p = j
        while p > 0 and _less(it, doc_ids, bound, x, order[p - 1]):
            order[p] = order[p - 1]
            p -= 1
        order[p] = x


@njit(cache=False)
def _sift_down(heap_s, heap_d, size, pos):
    # Min-heap on score: the root is the k-th best so far.
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        small = left
        if left + 1 < size and heap_s[left + 1] < heap_s[left]:
            small = left + 1
        if heap_s[small] >= heap_s[pos]:
            return
        heap_s[pos], heap_s[small] = heap_s[small], heap_s[pos]
        heap_d[pos], heap_d[small] = heap_d[small], heap_d[pos]
        pos = small


@njit(cache=False)
def _sift_up(heap_s, heap_d, pos):
    while pos > 0:
        parent = (pos - 1) // 2
        if heap_s[parent] <= heap_s[pos]:
            return
        heap_s[pos], heap_s[parent] = heap_s[parent], heap_s[pos]
        heap_d[pos], heap_d[parent] = heap_d[parent], heap_d[pos]
        pos = parent


@njit(cache=False)
def _search(offsets, doc_ids, frequencies, block_offsets, block_max_scores, doc_lengths,
            total_tokens, query, k):
    num_docs = doc_lengths.shape[0]
    avgdl = np.float32(total_tokens) / np.float32(num_docs)
    n = query.shape[0]
    # np.empty and plain loops only: every numpy function a kernel uses costs a compile of its
    # own on the first call (README, Measured: where a warm trial's time went).
    it = np.empty((n, 8), np.int64)
    bound = np.empty(n, np.float32)  # the list's max score: Lance's approximate_upper_bound
    idf = np.empty(n, np.float32)
    order = np.empty(n, np.int64)  # iterators sorted by current doc (see _less)
    contribution = np.empty(n, np.float32)  # per query position: this candidate's term scores
    on_doc = np.empty(n, np.bool_)
    size = np.int64(0)  # typed: a literal 0 passed on to a callee compiles it a second time
    for position in range(n):  # an iterator per query position whose term has postings
        on_doc[position] = False
        t = query[position]
        lo, hi = offsets[t], offsets[t + 1]
        if hi == lo:
            continue
        it[size, LO], it[size, HI], it[size, CUR], it[size, BLOCK] = lo, hi, lo, 0
        it[size, NUM_BLOCKS] = block_offsets[t + 1] - block_offsets[t]
        it[size, FIRST_BLOCK], it[size, TERM], it[size, POSITION] = block_offsets[t], t, position
        top = np.float32(0.0)
        for b in range(block_offsets[t], block_offsets[t + 1]):
            top = max(top, block_max_scores[b])
        bound[size] = top
        df = np.float32(hi - lo)
        idf[size] = math.log((np.float32(num_docs) - df + np.float32(0.5))
                             / (df + np.float32(0.5)) + np.float32(1.0))
        order[size] = size
        size += 1
    _sort(order, size, it, doc_ids, bound)
    heap_s = np.empty(max(k, 1), np.float32)
    heap_d = np.empty(max(k, 1), np.int64)
    count = np.int64(0)
    threshold = np.float32(0.0)
    while k > 0 and size > 0:
        # find_pivot_term: the first iterator where the bounds so far reach the threshold.
        acc = np.float32(0.0)
        pivot = -1
        for p in range(size):
            acc += bound[order[p]]
            if acc >= threshold:
                pivot = p
                break
        if pivot < 0:
            break
        doc = _doc(it, doc_ids, order[pivot])
        max_pivot = pivot
        while max_pivot + 1 < size and _doc(it, doc_ids, order[max_pivot + 1]) == doc:
            max_pivot += 1
        # check_block_max: can the current blocks of the leading terms beat the threshold?
        block_sum = np.float32(0.0)
        for p in range(max_pivot + 1):
            i = order[p]
            _shallow_next(it, doc_ids, i, doc)
            block_sum += block_max_scores[it[i, FIRST_BLOCK] + it[i, BLOCK]]
        if not block_sum > threshold:
            # get_new_candidate: move the term of the largest bound past the current blocks.
            picked = max_pivot
            best = bound[order[max_pivot]]
            least = _next_block_first_doc(it, doc_ids, order[max_pivot])
            for p in range(max_pivot - 1, -1, -1):
                least = min(least, _next_block_first_doc(it, doc_ids, order[p]))
                if bound[order[p]] > best:
                    best = bound[order[p]]
                    picked = p
            for p in range(max_pivot + 1, size):
                least = min(least, _doc(it, doc_ids, order[p]))
            if least == END:
                break
            _next(it, doc_ids, order[picked], least)
            if _doc(it, doc_ids, order[picked]) == END:
                size -= 1
                order[picked] = order[size]
            _bubble_up(order, size, it, doc_ids, bound, picked)
            continue
        # check_pivot_aligned: bring the terms before the pivot onto its doc.
        aligned = True
        for p in range(pivot, -1, -1):
            _next(it, doc_ids, order[p], doc)
            if _doc(it, doc_ids, order[p]) != doc:
                if _doc(it, doc_ids, order[p]) == END:
                    size -= 1
                    order[p] = order[size]
                _bubble_up(order, size, it, doc_ids, bound, p)
                aligned = False
                break
            _bubble_up(order, size, it, doc_ids, bound, p)
        if not aligned:
            continue
        # Score the candidate: float32, summed in query order as Lance's rescore does.
        dl = np.float32(doc_lengths[doc])
        norm = K1 * ((np.float32(1.0) - B) + (B * dl) / avgdl)
        for p in range(max_pivot + 1):
            i = order[p]
            f = np.float32(frequencies[it[i, CUR]])
            contribution[it[i, POSITION]] = idf[i] * (((K1 + np.float32(1.0)) * f) / (f + norm))
            on_doc[it[i, POSITION]] = True
        score = np.float32(0.0)
        for position in range(n):
            if on_doc[position]:
                score += contribution[position]
                on_doc[position] = False
        if count < k:
            heap_s[count], heap_d[count] = score, doc
            _sift_up(heap_s, heap_d, count)
            count += 1
            if count == k:
                threshold = heap_s[0]
        elif score > heap_s[0]:
            heap_s[0], heap_d[0] = score, doc
            _sift_down(heap_s, heap_d, count, ROOT)
            threshold = heap_s[0]
        # move_preceding: past this doc, drop what is exhausted, re-sort.
        for p in range(max_pivot + 1):
            _next(it, doc_ids, order[p], doc + 1)
        p = 0
        while p < size:
            if _doc(it, doc_ids, order[p]) == END:
                size -= 1
                order[p] = order[size]
            else:
                p += 1
        _sort(order, size, it, doc_ids, bound)
    ids = np.empty(count, np.int64)
    scores = np.empty(count, np.float32)
    for j in range(count - 1, -1, -1):  # pop the k-th best each time, so the best ends first
        ids[j], scores[j] = heap_d[0], heap_s[0]
        heap_s[0], heap_d[0] = heap_s[j], heap_d[j]
        _sift_down(heap_s, heap_d, j, ROOT)
    return ids, scores


class Bm25Kernel:
    def __init__(self, index):
        self.index = index  # inputs.Bm25Index: already the layout Lance searches

    def top_k(self, query_terms, k):
        ix = self.index
        return _search(ix.offsets, ix.doc_ids, ix.frequencies, ix.block_offsets,
                       ix.block_max_scores, ix.doc_lengths, ix.total_tokens, query_terms, k)
