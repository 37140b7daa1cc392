# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: the fts_bm25 oracle. Independent of kernels.py; only the judge process uses it.

Exhaustive BM25 in float64: every document's score, summed over every query position (a
repeated term counts again, as in Lance), with K1 = 1.2 and B = 0.75 as real numbers:
  score(d) = sum_i idf(t_i) * (K1 + 1) f / (f + K1 * (1 - B + B * dl / avgdl))
  idf(t) = ln(1 + (N - n_t + 0.5) / (n_t + 0.5)),  avgdl = total_tokens / N
from the index's posting lists and lengths; tests/test_fts_bm25.py holds it to a literal
per-document evaluation of the corpus, and conformance.py holds it to real Lance.

Tolerance (u = 2^-24, program.md derives it). Lance computes in float32: K1 rounded (0.7 u),
avgdl (2 u), the length norm (6 u in all), f + norm (7 u), the tf part (11 u), ln of a
rounded 1 + x (2 u absolute, because ln(y (1 + e)) = ln y + e, and 2 u relative for logf
itself), the product (1 u), then q - 1 additions of non-negative terms. So per query of q
positions: |kernel - exact| <= gamma(13 + q) * exact + q * ABS_PER_TERM, where the absolute
part is idf's: 2 u times the largest tf part, K1 + 1. It is what a term in every document
really costs (idf ~ 0.5 / N, resolved to 1e-7 absolute). Any order of the sum, FMA and
float64 stay inside; a wrong IDF form, dropped length normalisation, a lost posting or block,
a pruned true top-k document or float16 scores fall outside.
"""
import math

import numpy as np

K1, B = 1.2, 0.75  # BM25 parameters, exact
UNIT_ROUNDOFF = 2.0**-24  # float32
WEIGHT_ROUNDINGS = 13  # relative error of one float32 term weight, in units of u (above)
ABS_PER_TERM = 2 * UNIT_ROUNDOFF * (K1 + 1)  # absolute error of one weight, from its idf


def idf(num_docs, doc_freq):
    return np.log1p((num_docs - doc_freq + 0.5) / (doc_freq + 0.5))


def exact_scores(index, query):
    """float64 [N]: the BM25 score of every document for `query` (term ids, in order)."""
    num_docs = len(index.doc_lengths)
    avgdl = index.total_tokens / num_docs
    scores = np.zeros(num_docs)
    for term in np.asarray(query, np.int64):
        lo, hi = index.offsets[term], index.offsets[term + 1]
        if hi == lo:
            continue  # absent from the corpus: no document has it
        docs = index.doc_ids[lo:hi].astype(np.intp)  # distinct within a term: += is exact
        f = index.frequencies[lo:hi].astype(np.float64)
        dl = index.doc_lengths[docs].astype(np.float64)
        scores[docs] += idf(num_docs, hi - lo) * (K1 + 1) * f / (f + K1 * (1 - B + B * dl / avgdl))
    return scores


def best_scores(exact, k):
    """The min(k, matches) highest scores of matching documents, descending."""
    matches = exact[exact > 0]
    if k < len(matches):
        matches = np.partition(matches, len(matches) - k)[len(matches) - k:]
    return np.sort(matches)[::-1]


def tolerance(score, terms):
    n = WEIGHT_ROUNDINGS + terms
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF) * score + terms * ABS_PER_TERM


def reference_top_k(exact, k):
    """Ids and scores of the k best matching documents, descending (ties by id)."""
    ids = np.argsort(-exact, kind="stable")[:min(k, int((exact > 0).sum()))]
    return ids, exact[ids]


def topk_consistent(ids, scores, exact, k, terms, best=None):
    """None if (ids, scores) is a correct top-k for these exact scores of a query of `terms`
    positions, else the reason. `best`: best_scores(exact, k), when the caller has it.

    Positional: the j-th returned score matches the j-th true best within tolerance. Honest:
    each returned score matches the true score of the id it names, which matches the query.
    Together they allow ids to differ from the oracle's only inside a band of tied scores."""
    best = best_scores(exact, k) if best is None else best
    want = len(best)
    for name, arr in (("doc_ids", ids), ("scores", scores)):
        if type(arr) is not np.ndarray:
            return f"{name} is {type(arr).__name__}, not numpy.ndarray"
        if arr.shape != (want,):
            return f"{name} has shape {arr.shape}, expected ({want},)"
    if ids.dtype.kind not in "iu":
        return f"doc_ids dtype {ids.dtype} is not an integer type"
    if scores.dtype != np.float32:
        return f"scores dtype {scores.dtype} is not float32"
    if not np.all(np.isfinite(scores)):
        return f"scores contain non-finite values: {scores[~np.isfinite(scores)][:3]}"
    n = len(exact)
    if want and (ids.min() < 0 or ids.max() >= n):
        return f"doc_ids out of range [0, {n}): {ids[(ids < 0) | (ids >= n)][:3]}"
    if len(np.unique(ids)) != want:
        return "doc_ids are not distinct"
    if np.any(np.diff(scores) > 0):
        j = int(np.argmax(np.diff(scores) > 0))
        return f"scores not descending at position {j}: {scores[j]} < {scores[j + 1]}"
    got = scores.astype(np.float64)
    true_of_ids = exact[ids]
    if np.any(true_of_ids <= 0):
        j = int(np.argmax(true_of_ids <= 0))
        return f"position {j}: document {ids[j]} contains no query term"
    bad = np.abs(got - true_of_ids) > tolerance(true_of_ids, terms)
    if np.any(bad):
        j = int(np.argmax(bad))
        return (f"position {j}: document {ids[j]} scores {true_of_ids[j]:.9g}, kernel says "
                f"{got[j]:.9g} (tolerance {tolerance(true_of_ids[j], terms):.3g})")
    bad = np.abs(got - best) > tolerance(best, terms)
    if np.any(bad):
        j = int(np.argmax(bad))
        return (f"position {j}: the {j + 1}-th best score is {best[j]:.9g}, kernel returned "
                f"{got[j]:.9g} (document {ids[j]}; tolerance {tolerance(best[j], terms):.3g})")
    return None


def literal_scores(documents, query):
    """The same scores from the corpus itself, document by document (`documents`: a list of
    term-id lists), in plain Python: what exact_scores is held to in the tests."""
    num_docs = len(documents)
    avgdl = sum(len(d) for d in documents) / num_docs
    doc_freq = {}
    for d in documents:
        for term in set(d):
            doc_freq[term] = doc_freq.get(term, 0) + 1
    scores = []
    for d in documents:
        total = 0.0
        for term in query:
            f = d.count(term)
            if f:
                n = doc_freq[term]
                weight = math.log(1 + (num_docs - n + 0.5) / (n + 0.5))
                total += weight * (K1 + 1) * f / (f + K1 * (1 - B + B * len(d) / avgdl))
        scores.append(total)
    return np.array(scores)
