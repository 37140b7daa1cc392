# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: one fts_bm25 trial, the judge. `make run TARGET=fts_bm25 DESC="what I tried"`.

What is particular to fts_bm25: its fixtures, how the battery is checked, what a timed call is
and how its output is checked. The trial itself (correctness in step, timing side by side, the
gate, one row in results.tsv) is common.py; the rules are in HARNESS.md. This process never
imports kernels.py: kernels run in contestant processes (contestant.py).
"""
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
import inputs  # noqa: E402
import reference  # noqa: E402

KERNEL_CLASS = "Bm25Kernel"
KERNEL_METHOD = "top_k"
ROUNDS = 16  # timed rounds; each round times every combo once per kernel
# Postings per timed batch, counted as the summed document frequency of its queries plus a
# fixed cost per query: tens of milliseconds of baseline search, so the fixed cost of a request
# (0.1-0.3 ms, HARNESS.md section 2) stays a small share of what is timed.
BATCH_POSTINGS = 250_000
QUERY_COST_POSTINGS = 300  # the baseline's cost of a query beyond its postings (setup, heap)
UNIT = ("us_per_query", 1, 1e3)  # reported time: name, units per call, ns per unit
# The keep floor (common.MIN_GAIN, 1 % elsewhere): A/A geomeans of this branchy search spread
# further than the other targets' (README, Measured); at 1 %, one of twenty A/A trials kept.
MIN_GAIN = 0.03


def check_output(out, exact, k, terms, best=None):
    if len(out) != 2:
        return f"{KERNEL_METHOD} returned {len(out)} arrays, expected (doc_ids, scores)"
    return reference.topk_consistent(out[0], out[1], exact, k, terms, best)


def check_battery(contestants, battery):
    """Every battery case against the oracle. Candidate and champion answer in step, each on
    its own core: the champion is re-checked for free and both processes reach the timing
    with the same history (a lone warm-up call biased A/A by ~0.3 %). The first failure is a
    TrialFault."""
    for number, case in enumerate(battery, start=1):
        index, k = case["index"], case["k"]
        where = f"case {case['name']} (N={len(index.doc_lengths)}, k={k})"
        common.in_step(contestants, f"__init__ of {where}", "init", "battery", (index,))
        calls = [(q, k) for q in case["queries"]]
        answers = common.in_step(contestants, where, "call", "battery", KERNEL_METHOD, calls)
        for j, query in enumerate(case["queries"]):
            exact = reference.exact_scores(index, query)
            for label, outs in answers.items():
                problem = check_output(outs[j], exact, k, len(query))
                if problem:
                    raise common.TrialFault("fail", f"{common.whose(label)}{where}, query {j} "
                                                    f"{query.tolist()}: {problem}")
        if number % 10 == 0 or number == len(battery):
            common.progress(f"correctness {number}/{len(battery)} cases")


def init_args(workload):
    return (workload["index"],)


def queries_per_batch(workload):
    return max(1, round(BATCH_POSTINGS / (QUERY_COST_POSTINGS + workload["postings_per_query"])))


def draw_calls(workload, seed):
    """Fresh queries of the workload's kind; nothing about their answers is known until the
    oracle runs."""
    queries = inputs.draw_queries(workload["index"], workload["kind"],
                                  queries_per_batch(workload), seed)
    return [(q, inputs.SPEED_K) for q in queries], None


def check_timed(workload, calls, truth, outputs):
    """Every output of both kernels against the oracle: one exact scoring per query serves
    both. Returns None or (label, what is wrong)."""
    for j, (query, k) in enumerate(calls):
        exact = reference.exact_scores(workload["index"], query)
        best = reference.best_scores(exact, k)
        for label, outs in outputs.items():
            problem = check_output(outs[j], exact, k, len(query), best)
            if problem:
                return label, f"query {j} {query.tolist()}: {problem}"
    return None


# make confirm (tools/confirm.py): every corpus scaled so that the largest has `scale` documents
TRIAL_SCALE = max(inputs.SPEED_CORPORA)
# 3x is the largest whose index (about 200 MB) fits one request message (wire.MAX_MESSAGE_BYTES)
CONFIRM_SCALES = (TRIAL_SCALE // 100, TRIAL_SCALE // 10, TRIAL_SCALE, 3 * TRIAL_SCALE)
CONFIRM_SCALE_NAME = "largest_corpus_docs"


def confirm_workloads(workloads, scale):
    """The speed workloads on corpora of scale / TRIAL_SCALE times the size (cached)."""
    return inputs.scaled_workloads(workloads, scale / TRIAL_SCALE)


def confirm_memory(scale):
    """Bytes a confirm at this scale holds: 8 bytes a posting (about one per token), for every
    corpus about seven times over (the judge's copy; each contestant's, once per query kind)."""
    docs = sum(inputs.SPEED_CORPORA) * scale / TRIAL_SCALE
    return 7 * 8 * inputs.LENGTH_MEDIAN * 1.5 * docs


def fixtures():
    """(battery, speed workloads, a check that the disk cache is still intact)."""
    battery, workloads, digest = inputs.load_fixtures()
    return battery, workloads, lambda: inputs.cache_intact(digest)


if __name__ == "__main__":
    sys.exit(common.main_of(sys.modules[__name__]))
