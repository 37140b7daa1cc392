# SPDX-License-Identifier: MIT OR Apache-2.0
"""The fts_bm25 target: the index is the corpus's, the oracle is the literal formula, it
accepts honest kernels and rejects one broken kernel per bug class, the fixtures cover the
edges, and the judge runs it: --check, a short trial and its exploits (tests/exploits/fts_*)."""
import importlib.util
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import run_trial

import ledger
import trials

REPO = Path(__file__).resolve().parent.parent
TARGET = "fts_bm25"
TARGET_DIR = REPO / TARGET
EXPLOITS = Path(__file__).resolve().parent / "exploits"
HONEST = EXPLOITS / "fts_honest_numpy.py"
SMALL_DOCS = 300  # a corpus small enough for the literal checks
SMALL_SEED = 0xF75  # its seed
QUERY_SEED = 0xF76  # queries of the literal checks
QUERIES_PER_KIND = 4
DEADLINE_SCALE = 0.1  # exploit trials: phase deadlines of 3 s
EXPLOIT_ROUNDS = 2
FIRST_CASE = r"case ordinary/common2/k10 \(N=1013, k=10\)"  # the battery's first case
U = 2.0**-24  # float32 unit roundoff


def load(name, path=None):
    """A module by path under a private name: conftest already owns `inputs`, `reference`."""
    spec = importlib.util.spec_from_file_location(f"fts_{name}", path or TARGET_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = load("reference")
inputs = load("inputs")
kernels = load("kernels")
honest = load("honest_numpy", HONEST)


@pytest.fixture(scope="module")
def fts_fixtures():
    return inputs.load_fixtures()


@pytest.fixture(scope="module")
def battery(fts_fixtures):
    """Battery cases with the oracle's scores of each query."""
    cases = fts_fixtures[0]
    for case in cases:
        case["exact"] = [reference.exact_scores(case["index"], q) for q in case["queries"]]
    return cases


def small_corpus():
    terms, docs = inputs.draw_corpus(SMALL_DOCS, SMALL_SEED)
    return terms, docs, inputs.build_index(terms, docs, SMALL_DOCS)


def documents_of(terms, docs, num_docs):
    return [terms[docs == d].tolist() for d in range(num_docs)]


# ---------------------------------------------------------------- the index and the oracle
def test_index_is_the_corpus_posting_by_posting():
    terms, docs, index = small_corpus()
    postings = {}
    for d, doc in enumerate(documents_of(terms, docs, SMALL_DOCS)):
        for term, f in Counter(doc).items():
            postings.setdefault(term, []).append((d, f))
    for term in range(inputs.VOCABULARY):
        lo, hi = index.offsets[term], index.offsets[term + 1]
        got = list(zip(index.doc_ids[lo:hi].tolist(), index.frequencies[lo:hi].tolist(),
                       strict=True))
        assert got == postings.get(term, []), term
    assert index.doc_lengths.tolist() == np.bincount(docs, minlength=SMALL_DOCS).tolist()
    assert index.total_tokens == len(terms)


def test_block_max_scores_are_each_blocks_max_weight(fts_fixtures):
    """Blocks of 128 postings in order, and each block's max score is its postings' largest
    BM25 weight (to float32 rounding): what a block-max search may skip on."""
    index = fts_fixtures[1][0]["index"]  # the 5k corpus: lists of up to ~40 blocks
    num_docs = len(index.doc_lengths)
    avgdl = index.total_tokens / num_docs
    df = np.diff(index.offsets)
    assert np.array_equal(np.diff(index.block_offsets), -(-df // inputs.BLOCK_SIZE))
    for term in np.flatnonzero(df > inputs.BLOCK_SIZE)[:50]:
        lo, hi = index.offsets[term], index.offsets[term + 1]
        f = index.frequencies[lo:hi].astype(np.float64)
        dl = index.doc_lengths[index.doc_ids[lo:hi]].astype(np.float64)
        weight = (reference.idf(num_docs, hi - lo) * 2.2 * f
                  / (f + 1.2 * (0.25 + 0.75 * dl / avgdl)))
        blocks = index.block_max_scores[index.block_offsets[term]:index.block_offsets[term + 1]]
        want = np.maximum.reduceat(weight, np.arange(0, hi - lo, inputs.BLOCK_SIZE))
        np.testing.assert_allclose(blocks, want, rtol=16 * U)


def test_oracle_is_the_literal_formula():
    terms, docs, index = small_corpus()
    documents = documents_of(terms, docs, SMALL_DOCS)
    queries = [q for kind, _ in inputs.QUERY_KINDS
               for q in inputs.draw_queries(index, kind, QUERIES_PER_KIND, QUERY_SEED)]
    absent = int(np.flatnonzero(np.diff(index.offsets) == 0)[0])
    queries += [np.array([queries[0][0]] * 3 + [absent]), np.array([absent])]
    for q in queries:
        np.testing.assert_allclose(reference.exact_scores(index, q),
                                   reference.literal_scores(documents, q.tolist()), rtol=1e-12)


# ---------------------------------------------------------------- honest and broken kernels
def failures(make_kernel, battery):
    """(case, query, reason) of every battery answer the oracle rejects."""
    found = []
    for case in battery:
        kernel = make_kernel(case["index"])
        for query, exact in zip(case["queries"], case["exact"], strict=True):
            ids, scores = kernel.top_k(query, case["k"])
            problem = reference.topk_consistent(ids, scores, exact, case["k"], len(query))
            if problem:
                found.append((case["name"], query.tolist(), problem))
    return found


def test_the_baseline_and_an_honest_numpy_kernel_pass_the_battery(battery):
    assert failures(kernels.Bm25Kernel, battery) == []
    assert failures(honest.Bm25Kernel, battery) == []


def scorer(idf=None, length_norm=True, skip_last_block=False, dedup=False):
    """A numpy kernel with one bug: another IDF, no length normalisation, the last block of
    every posting list lost, or repeated query terms counted once."""
    class Broken(honest.Bm25Kernel):
        def __init__(self, index):
            super().__init__(index)
            if not length_norm:
                self.norm = np.full(self.num_docs, honest.K1)
            if skip_last_block:  # of every list of more than one block
                lengths = np.diff(index.offsets)
                term_of = np.repeat(np.arange(len(lengths)), lengths)
                position = np.arange(len(term_of)) - index.offsets[term_of]
                keep = ((position < (lengths[term_of] - 1) // inputs.BLOCK_SIZE
                         * inputs.BLOCK_SIZE) | (lengths[term_of] <= inputs.BLOCK_SIZE))
                kept = np.bincount(term_of[keep], minlength=len(lengths))
                self.index = index._replace(offsets=np.concatenate([[0], np.cumsum(kept)]),
                                            doc_ids=index.doc_ids[keep],
                                            frequencies=index.frequencies[keep])

        def scores(self, query_terms):
            if dedup:
                query_terms = list(dict.fromkeys(query_terms.tolist()))
            if idf is None:
                return super().scores(query_terms)
            ix, out = self.index, np.zeros(self.num_docs)
            for t in query_terms:
                lo, hi = ix.offsets[t], ix.offsets[t + 1]
                if hi == lo:
                    continue
                docs = ix.doc_ids[lo:hi].astype(np.intp)
                f = ix.frequencies[lo:hi].astype(np.float64)
                out[docs] += idf(self.num_docs, hi - lo) * 2.2 * f / (f + self.norm[docs])
            return out
    return Broken


def wrapped(change):
    """The honest kernel with its output changed by change(ids, scores)."""
    class Broken(honest.Bm25Kernel):
        def top_k(self, query_terms, k):
            return change(*super().top_k(query_terms, k), self.num_docs)
    return Broken


def tight_bounds(index):
    """The baseline's block-max WAND over block maxima halved: it prunes true top-k ones."""
    return kernels.Bm25Kernel(index._replace(block_max_scores=index.block_max_scores / 2))


BROKEN = {
    "IDF ln(N / n)": scorer(idf=lambda n_docs, n: np.log(n_docs / n)),
    "IDF without the + 1 (Robertson)": scorer(idf=lambda n_docs, n: np.log(
        (n_docs - n + 0.5) / (n + 0.5))),
    "no length normalisation": scorer(length_norm=False),
    "the last block of every posting list skipped": scorer(skip_last_block=True),
    "repeated query terms counted once": scorer(dedup=True),
    "block maxima too low: WAND prunes true top-k documents": tight_bounds,
    "a document twice": wrapped(lambda ids, s, n: (np.r_[ids[:-1], ids[:1]], s) if len(ids) > 1
                                else (ids, s)),
    "an id out of range": wrapped(lambda ids, s, n: (np.r_[ids[:-1], n], s) if len(ids)
                                  else (ids, s)),
    "scores ascending": wrapped(lambda ids, s, n: (ids[::-1].copy(), s[::-1].copy())),
    "float16 scores": wrapped(lambda ids, s, n: (ids, s.astype(np.float16).astype(np.float32))),
}


@pytest.mark.parametrize("bug", BROKEN)
def test_each_broken_kernel_fails_the_battery(bug, battery):
    assert failures(BROKEN[bug], battery), f"{bug} passed every battery case"


def test_tolerance_allows_float32_rounding_and_rejects_more(battery):
    """Every honest answer's scores moved by the tolerance's worth stay correct; by three
    times as much (13 more roundings of each term than float32 needs), a case fails."""
    within, beyond = [], []
    for case in battery[:12]:
        kernel = honest.Bm25Kernel(case["index"])
        for query, exact in zip(case["queries"], case["exact"], strict=True):
            ids, _ = kernel.top_k(query, case["k"])
            true = exact[ids]
            for out, factor in ((within, 0.9), (beyond, 3.0)):
                moved = (true + factor * reference.tolerance(true, len(query))).astype(np.float32)
                moved = np.minimum.accumulate(moved)  # stays descending
                out.append(reference.topk_consistent(ids, moved, exact, case["k"], len(query)))
    assert all(p is None for p in within), [p for p in within if p]
    assert any(p is not None for p in beyond)


# ---------------------------------------------------------------- the fixtures
def test_fixtures_are_deterministic():
    a, b = inputs.draw_corpus(SMALL_DOCS, SMALL_SEED), inputs.draw_corpus(SMALL_DOCS, SMALL_SEED)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    index = small_corpus()[2]
    q1, q2 = (inputs.draw_queries(index, "mixed4", 8, s) for s in (1, 2))
    assert np.array_equal(q1, inputs.draw_queries(index, "mixed4", 8, 1))
    assert not np.array_equal(q1, q2)


def test_speed_workloads_are_three_sizes_by_three_kinds(fts_fixtures):
    workloads = fts_fixtures[1]
    assert [w["name"] for w in workloads] == [
        f"{n // 1000}k_{kind}" for n in inputs.SPEED_CORPORA for kind, _ in inputs.QUERY_KINDS]
    assert max(len(w["index"].doc_lengths) for w in workloads) >= 100_000
    for w in workloads:
        df = np.diff(w["index"].offsets)
        queries = inputs.draw_queries(w["index"], w["kind"], 16, QUERY_SEED)
        assert queries.shape[1] == dict(inputs.QUERY_KINDS)[w["kind"]]
        assert all(len(set(q.tolist())) == len(q) for q in queries)
        if w["kind"] == "common2":
            assert (queries < inputs.COMMON_RANKS).all()
        if w["kind"] == "rare8":  # one term in at most 0.1 % of the documents, every query
            limit = max(1, inputs.RARE_SHARE * len(w["index"].doc_lengths))
            assert (((df[queries] >= 1) & (df[queries] <= limit)).sum(axis=1) >= 1).all()


def test_battery_covers_the_edges(battery):
    by_name = {case["name"]: case for case in battery}
    single = by_name["single-document/present"]["index"]
    assert len(single.doc_lengths) == 1
    every = by_name["term-in-every-document/alone"]["index"]
    assert np.diff(every.offsets)[0] == len(every.doc_lengths)
    absent = by_name["ordinary/only-absent-terms"]
    assert all(e.max() == 0 for e in absent["exact"])  # no document matches: empty answers
    assert (by_name["ordinary/k>matches"]["exact"][0] > 0).sum() < SMALL_DOCS
    assert any(len(set(q.tolist())) < len(q) for q in by_name["ordinary/repeated-term"]["queries"])
    ties = [np.sort(e[e > 0])[::-1] for e in by_name["ties/common2/k10"]["exact"]]
    assert all(s[9] == s[10] for s in ties)  # the k-th score sits in a tie
    edges = by_name["block-edges/k200"]
    assert sorted(np.diff(edges["index"].offsets)[edges["queries"].ravel()]) == [
        127, 128, 129, 255, 256, 257]
    assert {f"{n // 1000}k/speed-scale/{kind}/k10" for n in inputs.SPEED_CORPORA
            for kind, _ in inputs.QUERY_KINDS} <= set(by_name)


# ---------------------------------------------------------------- the judge
def test_check_passes_on_the_baseline(judge_trials):
    trial = judge_trials[BASELINE_CHECK].result()
    assert trial.code == 0, trial.stdout + trial.stderr
    assert trial.block["correctness"] == "pass" and trial.block["status"] == "checked"


def exploit_source(name, tmp_path):
    """An fts exploit as a kernel file: fts_honest_numpy.py, then the exploit's own code
    (which subclasses it), unless it is a kernel of its own."""
    own = (EXPLOITS / name).read_text()
    source = own if "class Bm25Kernel:" in own else HONEST.read_text() + "\n" + own
    path = tmp_path / name
    path.write_text(source)
    return path


EXPLOIT_TRIALS = {  # kernel -> status, message
    "fts_honest_numpy.py": ("baseline", ""),
    "fts_hang.py": ("timeout", rf"hung in {FIRST_CASE}.*no answer within the 3 s deadline"),
    "fts_nan_scores.py": ("fail", rf"^{FIRST_CASE}, query 0 .*scores contain non-finite values: "
                                  r"\[nan\]"),
    "fts_read_answers.py": ("fail", rf"^{FIRST_CASE}, query 0 .*: position \d+: document \d+ "),
    "fts_wrong_once.py": ("fail", r"^candidate kernel wrong while timed: \w+ round \d+: query "
                                  r"\d+ .*position \d+: document \d+ "),
}


BASELINE_CHECK = "--check of the baseline"


@pytest.fixture(scope="module", autouse=True)
def judge_trials(test_tree, tmp_path_factory):
    """The baseline's --check and each fts exploit in one real trial against the honest numpy
    kernel, two at a time, started in the background before the module's first test (which
    run in-process meanwhile): name -> future of its Trial."""
    def check():
        tmp = tmp_path_factory.mktemp("check")
        return run_trial(test_tree, TARGET_DIR / "kernels.py", tmp / "results.tsv",
                         extra=["--check"], target=TARGET)

    def one(name):
        tmp = tmp_path_factory.mktemp(name.removesuffix(".py"))
        (tmp / "tmp").mkdir()
        env = {"HARNESS_DEADLINE_SCALE": str(DEADLINE_SCALE), "TMPDIR": str(tmp / "tmp")}
        champion = None if name == "fts_honest_numpy.py" else HONEST
        return trials.run_trial(test_tree, TARGET, exploit_source(name, tmp),
                                tmp / "results.tsv", champion, EXPLOIT_ROUNDS, "exploit", env)
    with ThreadPoolExecutor(2) as pool:
        futures = {BASELINE_CHECK: pool.submit(check)}
        yield futures | {name: pool.submit(one, name) for name in EXPLOIT_TRIALS}


@pytest.mark.parametrize("name", EXPLOIT_TRIALS)
def test_fts_exploit_gets_its_exact_status(judge_trials, name):
    status, fragment = EXPLOIT_TRIALS[name]
    trial = judge_trials[name].result()
    assert trial.code == ledger.STATUS_EXIT.get(status, ledger.EXIT_OK), trial.stderr[-1500:]
    assert trial.block["status"] == status, trial.block
    assert re.search(fragment, trial.block.get("message", "")), trial.block
    rows = ledger.read_results(trial.results)
    assert [r["status"] for r in rows] == [status]
