# SPDX-License-Identifier: MIT OR Apache-2.0
"""TOOL: where the fts_bm25 kernels stand against tantivy and bm25s, on the same corpora.

`make peers TARGET=fts_bm25` (optional extras: tools/requirements-peers.txt); writes no row.
Each speed corpus becomes text (term t is the token "t<t>", repeated f times) indexed once by
each peer. On the judge's speed workloads (fresh queries from a named seed, k = 10) it times,
single-threaded and interleaved: the peers in this process (thread CPU time, on the benchmark
core), the baseline and champion in contestant processes as the judge runs them
(tools/peers_common.py). The untimed first round checks every answer: the kernels' and
bm25s's against the exact oracle, tantivy's against its own one-byte document lengths (and how
far that is from exact). Prints us/query per combo, then a `---` block.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # single-threaded peers: set before numpy or numba start a pool

import importlib.metadata  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
TARGET = HERE.name
for _path in (HERE.parent, HERE.parent / "tools"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
import common  # noqa: E402
import peers_common  # noqa: E402

try:
    import tantivy
except ImportError:  # optional extra: bm25s, baseline and champion still run
    tantivy = None
try:
    import bm25s
except ImportError:  # optional extra: tantivy, baseline and champion still run
    bm25s = None

QUERY_SEED = 0xF75B_2026  # root of the fresh queries, mixed with the combo name and round
ORDER_SEED = 0x0D3F_2026  # combo order per round: fixed, so two runs visit combos alike
ROUNDS = 8  # timed rounds after the verification round
QUICK_ROUNDS = 2  # timed rounds under --quick (the tests)
QUICK_COMBOS = ("5k_common2", "5k_rare8")  # --quick: the smallest corpus, two query kinds
QUICK_QUERIES = 8  # queries per batch under --quick
TANTIVY_HEAP_BYTES = 1 << 30  # tantivy's writer arena: the largest corpus fits, one segment
FREE_FIELDNORMS = 24  # tantivy's one-byte length codes below this are the length itself
SINGLE_THREAD_SHARE = 0.01  # single-threaded: other threads burn at most this share of its CPU
SINGLE_THREAD_SLACK_NS = 200_000  # plus this: clock reads and interrupts in a short (--quick) run
INSTALL_HINT = ".venv/bin/pip install -r tools/requirements-peers.txt"  # or `make peers`
KERNELS_COMPUTE = ("Lance's BM25, exact lengths, scored at query time (the baseline: Lance's "
                   "block-max WAND)")  # what the baseline and champion compute

inputs, reference, judge = peers_common.own_modules(
    HERE, ("inputs", "reference", "run_experiment"), keep=__name__ == "__main__")


# ---------------------------------------------------------------- the corpus as text
def token_names(vocabulary):
    """The token of every term id."""
    return [f"t{t}" for t in range(vocabulary)]


def corpus_documents(index):
    """Every document as its list of term ids, documents in id order: each term it holds,
    repeated f times (token order changes no BM25 score). Raises HarnessError if doc_lengths
    are not the postings' totals: the peers' lengths would then differ from the kernels'."""
    vocabulary = len(index.offsets) - 1
    terms = np.repeat(np.arange(vocabulary), np.diff(index.offsets))
    by_doc = np.argsort(index.doc_ids, kind="stable")  # a document's terms stay ascending
    tokens = np.repeat(terms[by_doc], index.frequencies[by_doc]).tolist()
    totals = np.bincount(index.doc_ids, weights=index.frequencies,
                         minlength=len(index.doc_lengths))
    if not np.array_equal(totals, index.doc_lengths):
        raise common.HarnessError("doc_lengths are not the sums of the postings' frequencies")
    ends = np.cumsum(index.doc_lengths, dtype=np.int64).tolist()
    return [tokens[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


# ---------------------------------------------------------------- tantivy's document lengths
def fieldnorm_lengths():
    """The 256 document lengths tantivy's one-byte fieldnorm codes decode to, ascending
    (Lucene's SmallFloat byte4ToInt): codes below FREE_FIELDNORMS are the length itself, the
    others FREE_FIELDNORMS plus a float of 3 mantissa bits (subnormal in the first octave)."""
    code = np.arange(256 - FREE_FIELDNORMS, dtype=np.int64)
    mantissa, octave = code & 7, code >> 3
    value = np.where(octave == 0, mantissa, (mantissa | 8) << np.maximum(octave - 1, 0))
    return np.concatenate([np.arange(FREE_FIELDNORMS), FREE_FIELDNORMS + value])


def quantised_lengths(lengths):
    """Each document length as tantivy scores it: the largest code's length not above it."""
    table = fieldnorm_lengths()
    return table[np.searchsorted(table, lengths, side="right") - 1]


def tantivy_variant(index):
    """The index as tantivy scores it: lengths quantised, avgdl still the exact token total
    over N. reference.exact_scores of it is tantivy's formula."""
    return index._replace(doc_lengths=quantised_lengths(index.doc_lengths).astype(np.uint32))


# ---------------------------------------------------------------- the in-process peers
class TantivyPeer:
    """tantivy, as its users run it: the corpus as text in an in-memory index (whitespace
    tokens, frequencies without positions, as Lance's index holds), written by one thread so
    one segment; a query parsed from its tokens (OR, the default), the top k searched without
    counting every match (a count would score every match: no block-max skipping); our ids
    read from a fast field."""

    formula = "tantivy"  # the oracle it is held to: one-byte document lengths
    computes = ("BM25 with one-byte document lengths (SmallFloat: exact to 40 tokens), avgdl "
                "exact; block-max WAND over its own index")

    def __init__(self, index, documents):
        self.names = names = token_names(len(index.offsets) - 1)
        builder = tantivy.SchemaBuilder()
        builder.add_integer_field("id", fast=True)
        builder.add_text_field("body", tokenizer_name="whitespace", index_option="freq")
        self.index = tantivy.Index(builder.build())
        writer = self.index.writer(heap_size=TANTIVY_HEAP_BYTES, num_threads=1)
        for doc_id, terms in enumerate(documents):
            writer.add_document(tantivy.Document(id=doc_id, body=" ".join([names[t]
                                                                           for t in terms])))
        writer.commit()
        writer.wait_merging_threads()
        self.index.reload()
        self.searcher = self.index.searcher()
        self.segments = self.searcher.num_segments
        if self.searcher.num_docs != len(documents):
            raise common.HarnessError(f"tantivy holds {self.searcher.num_docs} documents of "
                                      f"{len(documents)}")

    def top_k(self, query_terms, k):
        text = " ".join([self.names[t] for t in query_terms.tolist()])
        hits = self.searcher.search(self.index.parse_query(text, ["body"]), limit=k,
                                    count=False).hits
        ids = self.searcher.fast_field_values("id", [address for _, address in hits])
        return np.array(ids, np.int64), np.array([score for score, _ in hits], np.float32)


class Bm25sPeer:
    """bm25s, as its users run it: the documents as token ids (bm25s.tokenization.Tokenized),
    method "atire" with idf_method "lucene": Lance's formula. It precomputes every (document,
    term) weight at index time (float32) and a query only sums its terms' weights into a
    score per document and selects the top k: no scoring at query time, and no skipping. Its
    numba backend (the faster; numba is pinned already) with n_threads=1 runs its serial loop
    in the calling thread (its numpy backend would run n_threads=1 in a pool thread)."""

    formula = "exact"
    computes = ("Lance's BM25, every (document, term) weight precomputed at index time "
                "(float32); a query adds them up over all N documents, then selects k: "
                "another trade-off, no scoring at query time")

    def __init__(self, index, documents, backend="numba"):
        vocabulary = {name: t for t, name in enumerate(token_names(len(index.offsets) - 1))}
        self.retriever = bm25s.BM25(k1=reference.K1, b=reference.B, method="atire",
                                    idf_method="lucene", backend=backend)
        self.retriever.index(bm25s.tokenization.Tokenized(ids=documents, vocab=vocabulary),
                             show_progress=False)

    def top_k(self, query_terms, k):
        docs, scores = self.retriever.retrieve([query_terms.tolist()], k=k, n_threads=1,
                                               show_progress=False)
        found = scores[0] > 0  # fewer than k matches: it pads with documents of score 0
        return docs[0][found], scores[0][found]


def available_peers():
    """([(label, class)], {label: what runs, or why not}) for the installed peers."""
    peers, states = [], {}
    for label, module, peer_class, how in (
            ("tantivy", tantivy, TantivyPeer, "in-memory index, one writer thread, "
                                              "parse_query, search with count=False"),
            ("bm25s", bm25s, Bm25sPeer, 'method "atire", idf_method "lucene", numba backend, '
                                        "n_threads=1")):
        if module is None:
            common.progress(f"{label}: skipped, it is not installed: {INSTALL_HINT}")
            states[label] = f"not installed ({INSTALL_HINT})"
        else:
            peers.append((label, peer_class))
            states[label] = f"{label} {importlib.metadata.version(label)}: {how}"
    return peers, states


def corpora_of(workloads):
    """[(corpus name, its workloads)], in the workloads' order: the smallest corpus first."""
    groups = {}
    for w in workloads:
        groups.setdefault(w["corpus"], []).append(w)
    return [(group[0]["name"].split("_")[0], group) for group in groups.values()]


def build_corpus(peers, corpus, group):
    """{label: (peer, build seconds)} for one corpus: each peer built once, for all the
    corpus's workloads, then asked one query (bm25s compiles its numba loop then)."""
    if not peers:
        return {}
    index = group[0]["index"]
    common.progress(f"indexing the {corpus} corpus ({len(index.doc_lengths)} documents, "
                    f"{index.total_tokens} tokens) for {', '.join(label for label, _ in peers)}")
    documents = corpus_documents(index)
    query = inputs.draw_queries(index, group[0]["kind"], 1, QUERY_SEED)[0]
    built = {}
    for label, peer_class in peers:
        start = time.perf_counter()
        peer = peer_class(index, documents)
        built[label] = (peer, time.perf_counter() - start)
        peer.top_k(query, inputs.SPEED_K)
    return built


def peer_impls(peers, corpora, built):
    """The peers as time_rounds takes implementations: label, formula, a peer per workload."""
    return [{"label": label, "formula": peer_class.formula,
             "peers": {w["name"]: by_label[label][0] for (_, group), by_label
                       in zip(corpora, built, strict=True) for w in group}}
            for label, peer_class in peers]


# ---------------------------------------------------------------- checking
class Check(NamedTuple):
    """One answer of one implementation, checked."""
    label: str
    where: str  # combo and query
    problem: str | None  # against the formula it computes (its `formula`): None if it holds
    exact_problem: str | None  # against the exact oracle
    deviation: float  # largest |score - exact| / exact over its documents (nan: unusable)


def verify(answers, w, queries, formulas):
    """A Check of every answer: answers[label][j] is label's answer to queries[j] on the
    workload w; formulas[label] names its oracle ("exact", or "tantivy": one-byte lengths)."""
    index = w["index"]
    variant = tantivy_variant(index) if "tantivy" in formulas.values() else None
    checks = []
    for j, query in enumerate(queries):
        oracles = {"exact": reference.exact_scores(index, query)}
        if variant is not None:
            oracles["tantivy"] = reference.exact_scores(variant, query)
        exact = oracles["exact"]
        for label, outs in answers.items():
            problem = judge.check_output(outs[j], oracles[formulas[label]], inputs.SPEED_K,
                                         len(query))
            exact_problem = (problem if formulas[label] == "exact" else
                             judge.check_output(outs[j], exact, inputs.SPEED_K, len(query)))
            checks.append(Check(label, f"{w['name']} query {j}", problem, exact_problem,
                                math.nan if problem else deviation(outs[j], exact)))
    return checks


def deviation(out, exact):
    """Largest relative distance of an answer's scores from its documents' exact scores (a
    checked answer: its ids are distinct documents that match)."""
    ids, scores = out
    return float(np.max(np.abs(scores - exact[ids]) / exact[ids], initial=0.0))


def summarise(checks, label):
    """What label's checks found, in one line (every answer passed its own formula)."""
    mine = [c for c in checks if c.label == label]
    exact = sum(c.exact_problem is None for c in mine)
    worst = max((c.deviation for c in mine), default=0.0)
    return (f"{len(mine)}/{len(mine)} answers pass its own formula, {exact}/{len(mine)} the "
            f"exact oracle; max relative deviation from exact {worst:.2e}")


def disagreements(checks):
    """One line per implementation with answers that fail its own formula, or []."""
    lines = []
    for label in dict.fromkeys(c.label for c in checks):
        mine = [c for c in checks if c.label == label]
        if bad := [c for c in mine if c.problem]:
            lines.append(f"{label}: {len(bad)} of {len(mine)} answers fail its oracle; first: "
                         f"{bad[0].where}: {bad[0].problem}")
    return lines


# ---------------------------------------------------------------- the report
def report(us, names, peer_labels, kernel_labels, checks, cpu, extra):
    """Print what each implementation computes, how its answers checked and the us/query
    table; return the block."""
    run = [*peer_labels, *kernel_labels]
    computes = {"tantivy": TantivyPeer.computes, "bm25s": Bm25sPeer.computes,
                "baseline": KERNELS_COMPUTE, "champion": KERNELS_COMPUTE}
    print("what each computes, and how its answers checked (every answer of the untimed first "
          "round; own formula: the exact oracle, but tantivy's own lengths for tantivy)")
    for label in run:
        print(f"  {label:9} {computes[label]}\n  {'':9} {summarise(checks, label)}")
    labels = [*peer_labels, "baseline", "champion"]
    ratios = [(label, peer) for label in reversed(kernel_labels) for peer in peer_labels]
    header = (f"{'combo':14}" + "".join(f"{label:>10}" for label in labels)
              + "".join(f"{f'{label[0]}/{peer}':>11}" for label, peer in ratios))
    print("us/query, median over rounds (CPU time, one core); c/, b/: champion, baseline over "
          f"a peer (below 1: the kernel is faster)\n{header}")
    for n in names:
        print(f"{n:14}" + "".join(f"{us[label][n]:10.1f}" for label in labels)
              + "".join(f"{us[label][n] / us[peer][n]:11.2f}" for label, peer in ratios))
    print("contestant figures include the harness's cost per request (make calibrate measures "
          "it: harness_overhead); in-process peers pay none, but pay their Python API's")
    block = {"target": TARGET, **extra}
    for label in peer_labels:
        own, others = cpu[label]
        alone = ("single" if others <= SINGLE_THREAD_SHARE * own + SINGLE_THREAD_SLACK_NS
                 else "NOT single")
        block[f"{label}_verified"] = summarise(checks, label)
        block[f"{label}_threads"] = (f"{alone}: other threads {others / 1e6:.2f} ms CPU beside "
                                     f"its {own / 1e6:.1f} ms timed")
    for label in ("champion", "baseline"):
        for peer in ("tantivy", "bm25s"):
            block[f"{label}_vs_{peer}"] = peers_common.ratio_text(us, label, peer, names)
    if peer_labels:
        over = ", ".join(f"over {peer}'s {block[f'champion_vs_{peer}']}x" for peer in peer_labels)
        print(f"champion CPU time {over} (geomean over combos; above 1: the peer is faster)")
    for n in names:
        block[f"combo_{n}"] = " ".join(f"{label}_us {us[label][n]:.1f}" for label in labels)
    return block


def main(argv=None):
    try:
        run = peers_common.start_run(argv, __doc__, HERE, inputs, QUICK_COMBOS)
    except common.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    args, workloads = run.args, run.workloads
    corpora = corpora_of(workloads)
    cpus = sorted(os.sched_getaffinity(0))
    peers, states = available_peers()
    per_batch = (lambda w: QUICK_QUERIES) if args.quick else judge.queries_per_batch

    def draw_calls(w, r):
        seed = common.mix_seeds(QUERY_SEED, w["name"], r)
        return [(q, inputs.SPEED_K)
                for q in inputs.draw_queries(w["index"], w["kind"], per_batch(w), seed)]

    def check(answers, w, calls):
        checks = verify(answers, w, [q for q, _ in calls], formulas)
        return checks, any(c.problem for c in checks)

    contestants = []
    try:
        budget_end = time.monotonic() + common.TIME_BUDGET_SECS
        contestants = peers_common.start_contestants(run.kernels, workloads, cpus, budget_end,
                                                     judge, draw_calls(workloads[0], 0)[:1])
        # The smallest corpus (and bm25s's numba compile) while the kernels compile:
        # well inside the contestants' deadline for a call (contestant.CALL_DEADLINE_SECS).
        built = [build_corpus(peers, *corpora[0])]
        peers_common.pin_contestants(contestants, cpus)
        built += [build_corpus(peers, *c) for c in corpora[1:]]
        impls = peer_impls(peers, corpora, built)
        impls += [{"label": c.label, "formula": "exact", "contestant": c} for c in contestants]
        formulas = {impl["label"]: impl["formula"] for impl in impls}
        rounds = QUICK_ROUNDS if args.quick else ROUNDS
        os.sched_setaffinity(0, set(cpus[:-1]) or {cpus[-1]})  # off the benchmark core
        ns, cpu, checks = peers_common.time_rounds(impls, workloads, rounds, cpus,
                                                   judge.KERNEL_METHOD, ORDER_SEED,
                                                   draw_calls, check)
        threads = len(os.listdir("/proc/self/task"))  # this process's, the peers' included
    except common.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except common.TrialFault as fault:
        print(f"error: {fault}", file=sys.stderr)
        return common.STATUS_EXIT[fault.status]
    finally:
        for c in contestants:
            c.close()
    problems = disagreements(checks)
    if problems:
        print(f"DISAGREE with the oracle: {'; '.join(problems)}", file=sys.stderr)
        return common.STATUS_EXIT["fail"]
    names = [w["name"] for w in workloads]
    us = peers_common.kernel_times(ns, names)
    kernel_labels = [c.label for c in contestants]
    extra = {**states, **peers_common.kernel_rows(run),
             "verified": "every answer of the untimed first round: kernels and bm25s by the "
                         "exact oracle, tantivy by its own formula (one-byte lengths)",
             "rounds": rounds, "threads_after_timing": threads}
    for label, _ in peers:
        extra[f"{label}_build_seconds"] = " ".join(
            f"{corpus} {by_label[label][1]:.1f}" for (corpus, _), by_label
            in zip(corpora, built, strict=True))
    if tantivy is not None:
        extra["tantivy_segments"] = " ".join(
            f"{corpus} {by_label['tantivy'][0].segments}" for (corpus, _), by_label
            in zip(corpora, built, strict=True))
    block = report(us, names, [label for label, _ in peers], kernel_labels, checks, cpu, extra)
    block["total_seconds"] = f"{time.monotonic() - run.started:.1f}"
    block["harness_sha"] = run.harness
    common.print_block(block)
    return common.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
