# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: one __target__ trial, the judge. `make run TARGET=__target__ DESC="what I tried"`.

Checks the candidate kernels.py against the oracle, times it side by side with the champion,
appends one row to results.tsv and prints the result block. The rules are in HARNESS.md.
This process never imports kernels.py (common.Contestant runs it); the shared steps are in
common.py, the story of the trial is told here. TODO(__target__): the four functions below the
constants are all that a new target rewrites.
"""
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402
import inputs  # noqa: E402
import reference  # noqa: E402

TARGET = HERE.name
KERNEL_PATH = HERE / "kernels.py"
KERNEL_CLASS = "Kernel"
KERNEL_METHOD = "run"
ROUNDS = 16  # timed rounds; each round times every combo once per kernel
CALLS_PER_BATCH = 16  # fresh inputs per timed batch (amortises the ~80 us call overhead)
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
    return [(v,) for v in inputs.draw_vectors(workload, CALLS_PER_BATCH, seed)]


def check_timed(workload, calls, outs, spot):
    """The oracle for the output at `spot` (a bitwise check is cheap enough for all)."""
    for j, (call, out) in enumerate(zip(calls, outs, strict=True)):
        problem = reference.check(out, workload["matrix"], *call)
        if problem:
            return f"call {j}{' (spot)' if j == spot else ''}: {problem}"
    return None


def trial(args, started):
    rows = common.read_results(args.results)
    harness = common.harness_sha()
    candidate_source = common.read_kernel(args.kernel)
    if args.check:  # the working file as it is; no champion, no row
        champion_source, champion_sha, champion_speedup, is_baseline = None, "", 1.0, False
    else:
        champion_source, champion_sha, champion_speedup, is_baseline, candidate_source = \
            common.pick_champion(TARGET, KERNEL_PATH, args, rows, harness, candidate_source)
    kernel_sha = common.save_snapshot(args.results, TARGET, candidate_source)
    battery, workloads = inputs.make_battery(), inputs.make_speed_workloads()
    budget_end = time.monotonic() + common.TIME_BUDGET_SECS
    block = {"target": TARGET, "status": "", "correctness": "not run", "verdict": "discard"}
    geomean_us = None  # set by the gate
    contestants = []
    try:
        common.progress("loading and compiling the kernels")
        cpus = sorted(os.sched_getaffinity(0))
        bench_cpu = cpus[-1]  # both contestants are timed on this core
        candidate = common.Contestant("candidate", candidate_source, KERNEL_CLASS, HERE,
                                      budget_end, bench_cpu)
        contestants.append(candidate)
        if not args.check:
            champion = common.Contestant("champion", champion_source, KERNEL_CLASS, HERE,
                                         budget_end, cpus[0])  # the other core, for now
            contestants.append(champion)
        for contestant in contestants:
            contestant.receive("import of kernels.py" if contestant is candidate
                               else "import of the champion kernels.py")
        check_battery(contestants, battery)
        for contestant in contestants:
            contestant.verify("the end of correctness")
        block["correctness"] = "pass"
        if args.check:
            common.check_untouched(harness, cache_intact=True)
            block.update(status="checked", verdict="none")
            return block, common.EXIT_OK
        champion.pin(bench_cpu)
        if len(cpus) > 1:
            os.sched_setaffinity(0, set(cpus[:-1]))  # the judge stays off the benchmark core
        common.progress(f"timing {len(workloads)} combos x {args.rounds} rounds, "
                        f"interleaved with the champion {champion_sha}")
        stats = common.time_side_by_side(candidate, champion, workloads, args.rounds,
                                         np.random.default_rng(), KERNEL_METHOD, init_args,
                                         draw_calls, check_timed)
        for contestant in contestants:
            contestant.verify("the end of timing")
        block["peak_mem_mb"] = f"{candidate.peak_rss_mb():.1f}"
        common.check_untouched(harness, cache_intact=True)
        geomean_us = common.gate(block, stats, is_baseline, champion_speedup, CALLS_PER_BATCH,
                                 UNIT)
        code = common.EXIT_OK
    except common.TrialFault as fault:
        if block["correctness"] == "not run" and fault.status == "fail":
            block["correctness"] = "fail"
        block.update(status=fault.status, message=str(fault))
        block.pop("peak_mem_mb", None)
        code = common.STATUS_EXIT[fault.status]
        if args.check:
            return block, code
    finally:
        for contestant in contestants:
            contestant.close()
    common.record(args, block, started, {
        "target": TARGET, "harness_sha": harness, "kernel_sha": kernel_sha,
        "champion_sha": champion_sha, "geomean_us": f"{geomean_us:.1f}" if geomean_us else ""})
    return block, code


if __name__ == "__main__":
    sys.exit(common.main_of(trial, TARGET, KERNEL_PATH,
                            common.parse_trial_args(__doc__.splitlines()[0], KERNEL_PATH, ROUNDS)))
