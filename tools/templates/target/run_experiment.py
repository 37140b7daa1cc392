# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: one __target__ trial, the judge. `make run TARGET=__target__ DESC="what I tried"`.

What is particular to __target__: its fixtures, how the battery is checked, what a timed call is
and how its output is checked. The trial itself (correctness in step, timing side by side, the
gate, one row in results.tsv) is common.py; the rules are in HARNESS.md. This process never
imports kernels.py: kernels run in contestant processes (contestant.py).
TODO(__target__): rewrite the constants and the five functions below.
"""
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
import inputs  # noqa: E402
import reference  # noqa: E402

KERNEL_CLASS = "Kernel"
KERNEL_METHOD = "run"
ROUNDS = 16  # timed rounds; each round times every combo once per kernel
CALLS_PER_BATCH = 16  # TODO(__target__): calls per timed batch: ~10 ms of baseline work
UNIT = ("us_per_call", 1, 1e3)  # reported time: name, units per call, ns per unit


def check_battery(contestants, battery):
    """Every battery case against the oracle. Candidate and champion answer in step, each on
    its own core: the champion is re-checked for free and both processes reach the timing
    with the same history (a lone warm-up call biased A/A by ~0.3 %). The first failure is a
    TrialFault."""
    for case in battery:
        where = f"case {case['name']}"
        common.in_step(contestants, f"__init__ of {where}", "init", "battery", (case["matrix"],))
        calls = [(v,) for v in case["vectors"]]
        answers = common.in_step(contestants, where, "call", "battery", KERNEL_METHOD, calls)
        for j, call in enumerate(calls):
            for label, outs in answers.items():
                problem = reference.check(outs[j], case["matrix"], *call)
                if problem:
                    raise common.TrialFault("fail", f"{common.whose(label)}{where}, call {j}: "
                                                    f"{problem}")
    common.progress(f"correctness {len(battery)}/{len(battery)} cases")


def init_args(workload):
    return (workload["matrix"],)


def draw_calls(workload, seed):
    """Fresh calls, and what drawing them already tells about their answers (here nothing)."""
    return [(v,) for v in inputs.draw_vectors(workload, CALLS_PER_BATCH, seed)], None


def check_timed(workload, calls, truth, outputs):
    """Every output of both kernels against the oracle. Returns None or (label, what is
    wrong)."""
    for label, outs in outputs.items():
        for j, (call, out) in enumerate(zip(calls, outs, strict=True)):
            problem = reference.check(out, workload["matrix"], *call)
            if problem:
                return label, f"call {j}: {problem}"
    return None


def fixtures():
    """(battery, speed workloads, a check that cached fixtures are intact: none are cached)."""
    return inputs.make_battery(), inputs.make_speed_workloads(), lambda: True


if __name__ == "__main__":
    sys.exit(common.main_of(sys.modules[__name__]))
