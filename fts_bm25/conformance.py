# SPDX-License-Identifier: MIT OR Apache-2.0
"""TOOL: proves the fts_bm25 oracle (reference.py) agrees with real Lance (pylance).

`make conformance TARGET=fts_bm25` (optional extra: tools/requirements-conformance.txt). Every
speed corpus and the corpora of the battery cases picked below become text again: document d
holds the token `t<t>` f times for each posting (t, d, f) of the index (BM25 without positions
ignores token order), and must split into exactly doc_lengths[d] tokens, so Lance's N, avgdl
and document lengths are the index's. The text goes into a temporary Lance dataset with an
INVERTED index whose tokenizer passes those tokens unchanged (simple, no stemming, no stop
words, no folding). Lance's top-k for every speed workload's fresh queries, and for each picked
battery case's own queries and k, must pass reference.topk_consistent against
reference.exact_scores with the tolerance a kernel gets.

Acceptable: Lance scores in float32 (about 2e-7 relative from the float64 oracle, inside
reference.tolerance), and it breaks ties at the k-th score by a heap order that depends on
its search history, so ids may differ from the oracle's inside a band of tied scores; that is
all topk_consistent allows. A term in every document has an IDF of ~0.5 / N, which float32
resolves only to ~1e-7 absolute (the tolerance's absolute part): its relative difference is
~1e-4, so each difference is also shown as a share of its tolerance. Not acceptable: any other
difference, such as another IDF form, other K1 or B, length normalisation dropped, repeated or
absent query terms treated otherwise, or a true top-k document lost to Lance's block-max
pruning. Either the oracle or Lance would then be wrong, and the oracle is what every kernel
is judged by. The fixture's block max scores are not compared: Lance computes its own, and
the oracle does not use them.
"""
import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from ledger import EXIT_INCORRECT, EXIT_USAGE  # noqa: E402
from seeds import mix_seeds  # noqa: E402

try:
    import lance
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError:  # optional extra; main() says how to install it
    lance = None

QUERY_SEED = 0xC0F0_B325  # root of the fresh queries, mixed with each workload's name
NUM_QUERIES = 32  # fresh queries per speed workload: a few dozen
QUICK_QUERIES = 4  # per speed workload under --quick
BATTERY_PREFIXES = ("ties/", "term-in-every-document/", "single-document/", "block-edges/",
                    "ordinary/repeated-term", "ordinary/absent-term",
                    "ordinary/only-absent-terms", "ordinary/k>matches")  # battery cases checked
QUICK_NAMES = ("5k_common2", "ordinary/repeated-term", "ordinary/only-absent-terms",
               "single-document/mixed", "ties/common2/k10")  # --quick: a few seconds
INDEX_OPTIONS = {"base_tokenizer": "simple", "lower_case": True, "stem": False,
                 "remove_stop_words": False, "ascii_folding": False,
                 "with_position": False}  # Lance's tokens are exactly the fixture's terms


def load_sibling(name):
    """fts_bm25/<name>.py, loaded by path under a private name: the bare names `inputs` and
    `reference` may already be pq_l2's (tests/conftest.py puts pq_l2/ first on sys.path, and
    its fixtures import them), so a bare import could silently check the wrong target."""
    spec = importlib.util.spec_from_file_location(f"fts_bm25_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inputs = load_sibling("inputs")
reference = load_sibling("reference")


def corpus_text(index):
    """pyarrow strings [N]: each document's tokens, term by term, the postings inverted."""
    term = np.repeat(np.arange(len(index.offsets) - 1), np.diff(index.offsets))
    by_doc = np.argsort(index.doc_ids, kind="stable")
    tokens = np.repeat(term[by_doc], index.frequencies[by_doc])
    per_doc = np.bincount(index.doc_ids, index.frequencies, len(index.doc_lengths))
    starts = np.concatenate([[0], np.cumsum(per_doc.astype(np.int64))])
    vocabulary = pa.array([f"t{t}" for t in range(len(index.offsets) - 1)])
    lists = pa.ListArray.from_arrays(pa.array(starts, pa.int32()), vocabulary.take(tokens))
    return pc.binary_join(lists, " ")


def miscounted_documents(text, index):
    """Documents whose text does not split into doc_lengths[d] tokens (none, if it is right)."""
    counts = pc.list_value_length(pc.utf8_split_whitespace(text)).to_numpy()
    return np.flatnonzero(counts != index.doc_lengths)


def lance_dataset(text, directory):
    """A Lance dataset of (id, text) in `directory`, with the INVERTED index on text."""
    ds = lance.write_dataset(pa.table({"id": np.arange(len(text)), "text": text}), directory)
    ds.create_scalar_index("text", "INVERTED", **INDEX_OPTIONS)
    return ds


def lance_search(ds, queries, k):
    """Lance's answers [(ids, scores)] per query: a plain query string is OR over its terms."""
    answers = []
    for query in queries:
        got = ds.to_table(full_text_query=" ".join(f"t{t}" for t in query),
                          columns=["id", "_score"], limit=k)
        answers.append((got["id"].to_numpy(), got["_score"].to_numpy()))
    return answers


def compare(answers, exact_fn, index, queries, k):
    """(one 'query j [terms]: reason' per answer that fails the oracle's check; over the
    answers that pass, the largest difference between a returned score and the exact score of
    its id, relative and as a share of reference.tolerance)."""
    reasons, worst_rel, worst_share = [], 0.0, 0.0
    for j, (ids, scores) in enumerate(answers):
        exact = exact_fn(index, queries[j])
        reason = reference.topk_consistent(ids, scores, exact, k, len(queries[j]))
        if reason:
            reasons.append(f"query {j} {queries[j].tolist()}: {reason}")
            continue
        diff = np.abs(scores - exact[ids])  # every exact[ids] > 0: topk_consistent checked
        worst_rel = max(worst_rel, float((diff / exact[ids]).max(initial=0.0)))
        share = diff / reference.tolerance(exact[ids], len(queries[j]))
        worst_share = max(worst_share, float(share.max(initial=0.0)))
    return reasons, worst_rel, worst_share


def corpora_to_check(quick):
    """{corpus label: (index, [(name, queries, k)])}: each corpus is indexed by Lance once."""
    battery, speed, _ = inputs.load_fixtures()
    count = QUICK_QUERIES if quick else NUM_QUERIES
    picked = [(w["name"].split("_")[0], w, inputs.draw_queries(
        w["index"], w["kind"], count, mix_seeds(QUERY_SEED, w["name"])), inputs.SPEED_K)
              for w in speed]
    picked += [(c["name"].split("/")[0], c, c["queries"], c["k"]) for c in battery
               if c["name"].startswith(BATTERY_PREFIXES)]
    groups = {}
    for label, item, queries, k in picked:
        if not quick or item["name"] in QUICK_NAMES:
            groups.setdefault(label, (item["index"], []))[1].append((item["name"], queries, k))
    return groups


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small subset (for the tests)")
    args = parser.parse_args(argv)
    if lance is None:
        print("error: pylance is not installed: run "
              ".venv/bin/pip install -r tools/requirements-conformance.txt", file=sys.stderr)
        return EXIT_USAGE
    start, failures, checked, agreed = time.perf_counter(), [], 0, 0
    worst_rel = worst_share = 0.0
    print(f"pylance {lance.__version__}: oracle vs Lance INVERTED index (BM25, OR queries)")
    groups = corpora_to_check(args.quick)
    for label, (index, checks) in groups.items():
        t0 = time.perf_counter()
        text = corpus_text(index)
        failures += [f"corpus {label}: document {d} does not hold doc_lengths[{d}] tokens"
                     for d in miscounted_documents(text, index)]
        with tempfile.TemporaryDirectory(prefix="fts_bm25-conformance-") as tmp:
            ds = lance_dataset(text, f"{tmp}/ds")
            print(f"corpus {label}: {len(text)} documents, {index.total_tokens} tokens, "
                  f"text and index built in {time.perf_counter() - t0:.2f} s")
            for name, queries, k in checks:
                t0 = time.perf_counter()
                answers = lance_search(ds, queries, k)
                reasons, rel, share = compare(answers, reference.exact_scores, index,
                                              queries, k)
                failures += [f"{name}: {r}" for r in reasons]
                n, ok = len(queries), len(queries) - len(reasons)
                checked, agreed = checked + n, agreed + ok
                worst_rel, worst_share = max(worst_rel, rel), max(worst_share, share)
                print(f"  {name:36} k {k:4}  agree {ok:3}/{n:<3} max diff {rel:.2e} rel, "
                      f"{share:.2f} of tol.  {time.perf_counter() - t0:5.2f} s")
    seconds = time.perf_counter() - start
    print(f"summary: {agreed}/{checked} queries agree, {len(failures)} disagreements, "
          f"max diff {worst_rel:.2e} rel, {worst_share:.2f} of tolerance, {seconds:.1f} s")
    for failure in failures:
        print(f"DISAGREE {failure}", file=sys.stderr)
    print("---")
    print(f"pylance: {lance.__version__}")
    print(f"corpora: {len(groups)}")
    print(f"cases: {sum(len(checks) for _, checks in groups.values())}")
    print(f"queries: {checked}")
    print(f"agree: {agreed}")
    print(f"disagreements: {len(failures)}")
    print(f"max_rel_diff: {worst_rel:.3g}")
    print(f"max_share_of_tolerance: {worst_share:.3g}")
    print(f"seconds: {seconds:.1f}")
    return EXIT_INCORRECT if failures else 0


if __name__ == "__main__":
    sys.exit(main())
