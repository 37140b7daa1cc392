# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: deterministic fts_bm25 fixtures: corpora, their indexes, the battery, the workloads.

A corpus comes from named seeds through SplitMix64 (seeds.py): document lengths log-normal, as
passages of real text are, and tokens from a Zipf vocabulary whose head is flattened (the stop
words Lance drops are not indexed). Its index is what Lance holds in memory for one partition
(program.md): posting lists of (doc id, frequency) sorted by doc id, in blocks of 128 postings
with a float32 max score each, the document lengths and the token total. The largest corpus
takes seconds to build, so fixtures are cached (fixture_cache.py), keyed by this file's code
and the seeds, and verified by hash on every load.
"""
import hashlib
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fixture_cache  # noqa: E402
from seeds import mix_seeds, standard_normal, uniform01  # noqa: E402

FIXTURE_SEED = 0x5EED_B325  # root of every corpus and query
VOCABULARY = 50_000  # term ids by frequency rank: term 0 is the most frequent
ZIPF_EXPONENT = 1.0  # term frequency ~ 1 / (rank + ZIPF_OFFSET) ** ZIPF_EXPONENT
ZIPF_OFFSET = 20  # flattens the head: the most frequent term is in ~1 document in 4
LENGTH_MEDIAN = 40  # tokens in the median document (log-normal: a passage, an abstract)
LENGTH_SIGMA = 0.9  # spread of log length: mean ~60 tokens, 1 % of documents above ~330
MAX_LENGTH = 4_000  # tokens in the longest document
BLOCK_SIZE = 128  # postings per block, each with its max score (Lance's default block_size)
K1, B = np.float32(1.2), np.float32(0.75)  # BM25 parameters, as Lance's scorer (float32)
SPEED_CORPORA = (5_000, 30_000, 150_000)  # documents in each timed corpus
QUERY_KINDS = (("common2", 2), ("mixed4", 4), ("rare8", 8))  # query kind, terms per query
COMMON_RANKS = 100  # common2 draws its terms from the 100 most frequent
QUERY_SKEW = 0.75  # other query terms: probability ~ corpus frequency ** 0.75 (queries favour
#                   rarer words than text does)
RARE_SHARE = 1e-3  # rare8's rare term is in at most this share of documents (or is rarest)
SPEED_K = 10  # top-k of every timed query
BATTERY_DOCS = 1_013  # prime: posting lists end mid-block
BATTERY_QUERIES = 3  # queries per battery case
COST_SAMPLE = 64  # queries a workload's cost per query is estimated from
TIED_COPIES = 9  # the ties case: each distinct document is repeated this many times


class Bm25Index(NamedTuple):
    """One partition of a Lance inverted index, as the search reads it (program.md)."""
    offsets: np.ndarray  # int64 [V + 1]: term t's postings are offsets[t]:offsets[t + 1]
    doc_ids: np.ndarray  # uint32 [postings]: ascending within a term
    frequencies: np.ndarray  # uint32 [postings]: occurrences of the term in that document
    block_offsets: np.ndarray  # int64 [V + 1]: term t's blocks are block_offsets[t]:[t + 1]
    block_max_scores: np.ndarray  # float32 [blocks]: max BM25 weight of a block's postings
    doc_lengths: np.ndarray  # uint32 [N]: tokens per document (all >= 1)
    total_tokens: int  # sum of doc_lengths (Lance keeps it beside the documents)


# ---------------------------------------------------------------- corpora and their index
def term_probabilities(vocabulary=VOCABULARY):
    ranks = np.arange(vocabulary, dtype=np.float64)
    weights = 1.0 / (ranks + 1 + ZIPF_OFFSET) ** ZIPF_EXPONENT
    return weights / weights.sum()


def draw_terms(probabilities, count, seed):
    """`count` term ids with the given probabilities (inverse CDF of SplitMix64 uniforms)."""
    cdf = np.cumsum(probabilities)
    cdf[-1] = 1.0
    return np.searchsorted(cdf, uniform01(seed, (count,)), side="right").astype(np.int64)


def draw_lengths(num_docs, seed, median, sigma):
    log_length = np.log(median) + sigma * standard_normal(seed, (num_docs,))
    return np.clip(np.rint(np.exp(log_length)), 1, MAX_LENGTH).astype(np.int64)


def draw_corpus(num_docs, seed, median=LENGTH_MEDIAN, sigma=LENGTH_SIGMA):
    """(term of every token, document of every token), documents in order."""
    lengths = draw_lengths(num_docs, mix_seeds(seed, "lengths"), median, sigma)
    terms = draw_terms(term_probabilities(), int(lengths.sum()), mix_seeds(seed, "tokens"))
    return terms, np.repeat(np.arange(num_docs), lengths)


def idf(num_docs, doc_freq):
    """Lance's IDF in float32: ln(1 + (N - n + 0.5) / (n + 0.5))."""
    n, docs = np.float32(doc_freq), np.float32(num_docs)
    half = np.float32(0.5)
    return np.log((docs - n + half) / (n + half) + np.float32(1.0)).astype(np.float32)


def build_index(terms, docs, num_docs, vocabulary=VOCABULARY):
    """The Bm25Index of a corpus given token by token (term, document). Block max scores are
    computed as Lance's builder does, in float32: idf * (K1 + 1) * max over the block of
    f / (f + K1 * ((1 - B) + B * dl / avgdl)), with each document's exact length."""
    keys, counts = np.unique(terms.astype(np.int64) * num_docs + docs, return_counts=True)
    term_of = keys // num_docs
    doc_ids = (keys % num_docs).astype(np.uint32)
    frequencies = counts.astype(np.uint32)
    offsets = np.searchsorted(term_of, np.arange(vocabulary + 1)).astype(np.int64)
    doc_lengths = np.bincount(docs, minlength=num_docs).astype(np.uint32)
    total_tokens = int(doc_lengths.sum())
    blocks_per_term = -(-np.diff(offsets) // BLOCK_SIZE)
    block_offsets = np.concatenate([[0], np.cumsum(blocks_per_term)]).astype(np.int64)
    block_term = np.repeat(np.arange(vocabulary), blocks_per_term)
    block_starts = offsets[block_term] + BLOCK_SIZE * (
        np.arange(len(block_term)) - block_offsets[block_term])
    avgdl = np.float32(total_tokens) / np.float32(num_docs)
    norm = K1 * ((np.float32(1) - B) + (B * doc_lengths[doc_ids].astype(np.float32)) / avgdl)
    f = frequencies.astype(np.float32)
    tf_part = f / (f + norm)
    block_tf_max = (np.maximum.reduceat(tf_part, block_starts) if len(block_starts)
                    else np.zeros(0, np.float32))
    term_idf = idf(num_docs, np.diff(offsets))[block_term]
    block_max_scores = (term_idf * (K1 + np.float32(1)) * block_tf_max).astype(np.float32)
    return Bm25Index(offsets, doc_ids, frequencies, block_offsets, block_max_scores,
                     doc_lengths, total_tokens)


def doc_freqs(index):
    return np.diff(index.offsets)


# ---------------------------------------------------------------- queries
def draw_queries(index, kind, count, seed):
    """`count` queries of a kind as int32 term ids [count, terms], distinct within a query."""
    size = dict(QUERY_KINDS)[kind]
    df = doc_freqs(index)
    if kind == "common2":
        weights = np.zeros(len(df))
        weights[:COMMON_RANKS] = 1.0
    else:
        weights = term_probabilities(len(df)) ** QUERY_SKEW
    queries = np.empty((count, size), np.int32)
    draws = draw_terms(weights / weights.sum(), count * size * 4, mix_seeds(seed, "terms"))
    for i, row in enumerate(draws.reshape(count, -1)):
        _, first = np.unique(row, return_index=True)
        queries[i] = row[np.sort(first)][:size]  # the first `size` distinct draws, in order
    if kind == "rare8":
        present = df[df > 0]
        limit = max(present.min(), RARE_SHARE * len(index.doc_lengths))  # ties: no df 1 term
        rare = np.flatnonzero((df > 0) & (df <= limit))
        pick = uniform01(mix_seeds(seed, "rare"), (count, 2))
        for i, (which, where) in enumerate(pick):
            term = rare[int(which * len(rare))]
            others = queries[i][queries[i] != term][:size - 1]
            queries[i] = np.insert(others, int(where * size), term)
    return queries


# ---------------------------------------------------------------- the battery and the workloads
def _case(name, corpus, queries, k):
    return {"name": name, "corpus": corpus, "queries": np.asarray(queries, np.int32), "k": k}


def _kind_cases(tag, corpus, index, seed, k=SPEED_K):
    return [_case(f"{tag}/{kind}/k{k}", corpus, draw_queries(index, kind, BATTERY_QUERIES,
                                                             mix_seeds(seed, kind)), k)
            for kind, _ in QUERY_KINDS]


def _planted(terms, docs, num_docs, plants, seed):
    """The corpus with term t added to exactly n documents (f of 1 to 3), for (t, n) in
    plants: posting lists that end just before, on and after a block boundary."""
    extra_terms, extra_docs = [terms], [docs]
    for j, (term, count) in enumerate(plants):
        pick = np.argsort(uniform01(mix_seeds(seed, "plant", j), (num_docs,)))[:count]
        freq = 1 + (uniform01(mix_seeds(seed, "freq", j), (count,)) * 3).astype(np.int64)
        extra_terms.append(np.full(int(freq.sum()), term))
        extra_docs.append(np.repeat(pick, freq))
    return np.concatenate(extra_terms), np.concatenate(extra_docs)


def make_battery(speed_corpora):
    """(corpora, cases): every query kind on corpora of ordinary, very short and very long
    documents; k = 1, k = N, k > matches; a single-document corpus; a term in every document;
    query terms absent from the corpus; a repeated query term; exact ties; posting lists
    around block boundaries. Then every speed corpus itself, with fixed queries of each kind:
    a fast path gated on what is timed meets the oracle here too."""
    corpora, cases = [], []

    def add(name, terms, docs, num_docs):
        corpora.append({"name": name, "index": build_index(terms, docs, num_docs)})
        return len(corpora) - 1, corpora[-1]["index"]

    seed = mix_seeds(FIXTURE_SEED, "battery")
    n = BATTERY_DOCS
    for shape, median, sigma in (("ordinary", LENGTH_MEDIAN, LENGTH_SIGMA), ("short", 2, 0.5),
                                 ("long", 400, 0.6)):
        c, index = add(shape, *draw_corpus(n, mix_seeds(seed, shape), median, sigma), n)
        cases += _kind_cases(shape, c, index, mix_seeds(seed, shape, "queries"))
    c, index = 0, corpora[0]["index"]
    df = doc_freqs(index)
    queries = draw_queries(index, "mixed4", BATTERY_QUERIES, mix_seeds(seed, "k"))
    cases += [_case(f"ordinary/mixed4/k{k}", c, queries, k) for k in (1, 100)]
    cases.append(_case("ordinary/common2/k=N", c, draw_queries(
        index, "common2", 1, mix_seeds(seed, "all")), n))
    absent = np.flatnonzero(df == 0)[:2]
    rare = np.flatnonzero((df >= 1) & (df <= 3))[:2]
    cases.append(_case("ordinary/absent-term", c, [[0, absent[0], rare[0]]], SPEED_K))
    cases.append(_case("ordinary/only-absent-terms", c, [absent], SPEED_K))
    cases.append(_case("ordinary/k>matches", c, [rare], SPEED_K))
    cases.append(_case("ordinary/repeated-term", c, [[0, 0, 5], [rare[0], 7, rare[0]]], SPEED_K))
    c, _ = add("single-document", np.array([3, 3, 7, 11, 11, 11]), np.zeros(6, np.int64), 1)
    cases += [_case("single-document/present", c, [[3], [11], [7]], SPEED_K),
              _case("single-document/absent", c, [[5]], SPEED_K),
              _case("single-document/mixed", c, [[11, 5, 3]], 1)]
    terms, docs = draw_corpus(n, mix_seeds(seed, "everywhere"))
    c, index = add("term-in-every-document", np.concatenate([terms, np.zeros(n, np.int64)]),
                   np.concatenate([docs, np.arange(n)]), n)
    cases += [_case("term-in-every-document/alone", c, [[0]], SPEED_K),
              _case("term-in-every-document/alone/k=N", c, [[0]], n),
              _case("term-in-every-document/with-others", c, draw_queries(
                  index, "mixed4", BATTERY_QUERIES, mix_seeds(seed, "everywhere q")), SPEED_K)]
    distinct = -(-n // TIED_COPIES)
    terms, docs = draw_corpus(distinct, mix_seeds(seed, "ties"))
    lengths = np.bincount(docs, minlength=distinct)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    copy_of = np.arange(n) % distinct  # document d is a copy of distinct document d % distinct
    c, index = add("ties", np.concatenate([terms[starts[j]:starts[j + 1]] for j in copy_of]),
                   np.repeat(np.arange(n), lengths[copy_of]), n)
    for kind, k in (("common2", SPEED_K), ("common2", 12), ("rare8", SPEED_K)):
        cases.append(_case(f"ties/{kind}/k{k}", c, draw_queries(
            index, kind, BATTERY_QUERIES, mix_seeds(seed, "ties q", kind)), k))
    plants = [(VOCABULARY - 1 - j, count) for j, count in enumerate((127, 128, 129, 255, 256,
                                                                     257))]
    terms, docs = draw_corpus(n, mix_seeds(seed, "edges"))
    c, _ = add("block-edges", *_planted(terms, docs, n, plants, seed), n)
    planted = [t for t, _ in plants]
    for k in (SPEED_K, 200):
        cases.append(_case(f"block-edges/k{k}", c, [planted[0:2], planted[2:4], planted[4:6]], k))
    first = len(corpora)
    corpora += speed_corpora
    for j, corpus in enumerate(speed_corpora):
        cases += _kind_cases(f"{corpus['name']}/speed-scale", first + j, corpus["index"],
                             mix_seeds(seed, "speed-scale", corpus["name"]))
    return corpora, cases


def make_speed_corpora(factor=1):
    """The speed corpora, or fresh ones `factor` times their size (make confirm)."""
    corpora = []
    for trial_docs in SPEED_CORPORA:
        num_docs = max(1, round(trial_docs * factor))
        seed = mix_seeds(FIXTURE_SEED, "speed", num_docs)
        name = f"{num_docs // 1000}k" if num_docs % 1000 == 0 else str(num_docs)
        corpora.append({"name": name, "index": build_index(*draw_corpus(num_docs, seed),
                                                           num_docs)})
    return corpora


def make_speed_workloads(corpora):
    """Every speed corpus x query kind. postings_per_query: the mean summed document frequency
    of a sample of its queries, from which a timed batch is sized."""
    workloads = []
    for j, corpus in enumerate(corpora):
        df = doc_freqs(corpus["index"])
        for kind, _ in QUERY_KINDS:
            seed = mix_seeds(FIXTURE_SEED, "speed queries", corpus["name"], kind)
            sample = draw_queries(corpus["index"], kind, COST_SAMPLE, mix_seeds(seed, "cost"))
            workloads.append({"name": f"{corpus['name']}_{kind}", "corpus": j, "kind": kind,
                              "seed": seed, "postings_per_query": float(df[sample].sum(1).mean())})
    return workloads


# ---------------------------------------------------------------- the cache
def _cache_key():
    """This file and seeds.py: the only code the fixtures depend on."""
    source = Path(__file__).read_bytes() + Path(sys.modules["seeds"].__file__).read_bytes()
    return hashlib.sha256(source + str(FIXTURE_SEED).encode()).hexdigest()[:16]


def cache_intact(digest):
    """True if the fixture cache still hashes to `digest`; if not, it is deleted."""
    return fixture_cache.intact("fts_bm25", "fixtures", _cache_key(), digest)


def load_fixtures():
    """(battery, speed workloads, content sha): each case and workload holds its corpus's
    index. A missing, stale or corrupted cache is rebuilt."""
    def build():
        speed_corpora = make_speed_corpora()
        corpora, battery = make_battery(speed_corpora)
        return fixture_cache.pack({"corpora": corpora, "battery": battery,
                                   "speed": make_speed_workloads(speed_corpora)})

    data, digest = fixture_cache.cached("fts_bm25", "fixtures", _cache_key(), build,
                                        "three corpora and the battery")
    try:
        groups = fixture_cache.unpack(data, {"index": Bm25Index})
        first_speed = len(groups["corpora"]) - len(SPEED_CORPORA)
        for item in groups["battery"]:
            item["index"] = groups["corpora"][item["corpus"]]["index"]
        for item in groups["speed"]:
            item["index"] = groups["corpora"][first_speed + item["corpus"]]["index"]
    except (ValueError, KeyError, IndexError) as e:
        cache_intact("")  # deletes it: the next load rebuilds
        raise RuntimeError(f"fixture cache unreadable ({e}): deleted, run again") from None
    return groups["battery"], groups["speed"], digest


def scaled_workloads(workloads, factor):
    """The speed workloads on fresh corpora `factor` times the size of the trial's (cached)."""
    if factor == 1:
        return workloads
    name = f"scaled{factor:g}"

    def build():
        corpora = make_speed_corpora(factor)
        return fixture_cache.pack({"corpora": corpora, "speed": make_speed_workloads(corpora)})

    data, _ = fixture_cache.cached("fts_bm25", name, _cache_key(), build,
                                   f"corpora {factor:g} times the trial's")
    groups = fixture_cache.unpack(data, {"index": Bm25Index})
    for item in groups["speed"]:
        item["index"] = groups["corpora"][item["corpus"]]["index"]
    return groups["speed"]
