# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: one pq_l2 trial, the judge. `make run TARGET=pq_l2 DESC="what I tried"`.

What is particular to pq_l2: its fixtures, how the battery is checked, what a timed call is
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

KERNEL_CLASS = "PqKernel"
KERNEL_METHOD = "probe_top_k"
ROUNDS = 16  # timed rounds; each round times every combo once per kernel
# Table lookups per timed batch (n x m per query): ~10 ms of baseline scan, so the fixed cost
# of a request (0.1-0.3 ms, HARNESS.md section 2) stays a small share of what is timed.
BATCH_LOOKUPS = 20_000_000
UNIT = ("us_per_query", 1, 1e3)  # reported time: name, units per call, ns per unit


def check_output(out, exact, k, shape, best=None):
    if len(out) != 2:
        return f"{KERNEL_METHOD} returned {len(out)} arrays, expected (ids, dists)"
    return reference.topk_consistent(out[0], out[1], exact, k, shape, best)


def check_battery(contestants, battery):
    """Every battery case against the oracle. Candidate and champion answer in step, each on
    its own core: the champion is re-checked for free and both processes reach the timing
    with the same history (a lone warm-up call biased A/A by ~0.3 %). The first failure is a
    TrialFault."""
    for number, case in enumerate(battery, start=1):
        shape, codebook, codes, k = case["shape"], case["codebook"], case["codes"], case["k"]
        where = (f"case {case['name']} (shape {tuple(shape)}, n={len(codes)}, "
                 f"distribution {case['distribution']}, k={k})")
        common.in_step(contestants, f"__init__ of {where}", "init", "battery",
                       (shape, codebook, codes))
        calls = [(q, k) for q in case["queries"]]
        answers = common.in_step(contestants, where, "call", "battery", KERNEL_METHOD, calls)
        for j, query in enumerate(case["queries"]):
            exact = reference.exact_distances(codebook, codes, query)
            for label, outs in answers.items():
                problem = check_output(outs[j], exact, k, shape)
                if problem:
                    raise common.TrialFault("fail", f"{common.whose(label)}{where}, query {j}: "
                                                    f"{problem}")
        if number % 10 == 0 or number == len(battery):
            common.progress(f"correctness {number}/{len(battery)} cases")


def init_args(workload):
    return workload["shape"], workload["codebook"], workload["codes"]


def queries_per_batch(workload):
    return max(1, round(BATCH_LOOKUPS / workload["codes"].size))


def draw_calls(workload, seed):
    """Fresh queries; nothing about their answers is known until the oracle runs."""
    queries = inputs.draw_queries(workload, queries_per_batch(workload), seed)
    return [(q, inputs.SPEED_K) for q in queries], None


def check_timed(workload, calls, truth, outputs):
    """Every output of both kernels against the oracle: one exact answer per query serves
    both. Returns None or (label, what is wrong)."""
    for j, (query, k) in enumerate(calls):
        exact = reference.exact_distances(workload["codebook"], workload["codes"], query)
        best = reference.smallest(exact, min(k, len(exact)))
        for label, outs in outputs.items():
            problem = check_output(outs[j], exact, k, workload["shape"], best)
            if problem:
                return label, f"query {j}: {problem}"
    return None


# make confirm (tools/confirm.py): index sizes to time the champion at, the trial's among them
TRIAL_SCALE = inputs.SPEED_NUM_VECTORS  # vectors per index in a trial
CONFIRM_SCALES = (1_000, TRIAL_SCALE, 200_000, 1_000_000)
CONFIRM_SCALE_NAME = "n"


def confirm_workloads(workloads, scale):
    """The speed workloads with `scale` vectors each (cached; minutes to build at 1M)."""
    return inputs.scaled_workloads(workloads, scale)


def confirm_memory(scale):
    """Bytes a confirm at this scale holds: the codes of every combo, about six times over (the
    judge and its oracle's copy; each contestant's copy and the kernel's re-laid-out one)."""
    return 6 * scale * sum(m for _, m in inputs.SPEED_SHAPES) * len(inputs.SPEED_DISTRIBUTIONS)


def fixtures():
    """(battery, speed workloads, a check that the disk cache is still intact)."""
    battery, workloads, digest = inputs.load_fixtures()
    return battery, workloads, lambda: inputs.cache_intact(digest)


if __name__ == "__main__":
    sys.exit(common.main_of(sys.modules[__name__]))
