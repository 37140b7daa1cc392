# SPDX-License-Identifier: MIT OR Apache-2.0
"""TOOL: what every <target>/peers.py shares: the kernels as the judge picks and runs them.

The baseline and champion come from results.tsv as the judge would pick them. Each runs in a
contestant process (common.Contestant), compiled on a core of its own, then pinned to the
benchmark core; its process CPU time is read from outside, as the judge reads it. An
in-process peer runs on the same core, timed by its thread's CPU time; the CPU other threads of
this process burn meanwhile is returned beside it, so a peer that works in threads of its own
shows.
"""
import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

import common


class Run(NamedTuple):
    args: argparse.Namespace  # --quick, --results
    started: float  # time.monotonic() when the run began
    harness: str  # harness_sha, read once: the tree may change while the peers run
    kernels: list  # pick_kernels: [(label, source, sha)]
    kernels_note: str  # where they came from
    workloads: list  # the speed workloads; under --quick only quick_combos


def start_run(argv, doc, folder, inputs, quick_combos):
    """The command line, the kernels and the workloads of a <target>/peers.py run; raises
    common.HarnessError where results.tsv cannot name them."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"only {', '.join(quick_combos)}, few rounds (the tests)")
    parser.add_argument("--results", default=str(common.RESULTS_PATH), type=Path,
                        help="results.tsv that names the baseline and champion")
    args = parser.parse_args(argv)
    started = time.monotonic()
    harness = common.harness_sha(folder.name)
    kernels, note = pick_kernels(args.results, harness, folder)
    _, workloads, _ = inputs.load_fixtures()
    if args.quick:
        workloads = [w for w in workloads if w["name"] in quick_combos]
    common.progress(f"kernels: {note}")
    return Run(args, started, harness, kernels, note, workloads)


def kernel_times(ns, names):
    """label -> combo -> median microseconds a call; where one kernel played both (no keep
    yet, pick_kernels says why) it stands for the baseline too."""
    us = {label: {n: float(np.median(v[n])) / 1e3 for n in names} for label, v in ns.items()}
    if "baseline" not in us:
        us["baseline"] = us["champion"]
    return us


def kernel_rows(run):
    """The block's lines on the kernels: where they came from and their shas."""
    kernels = run.kernels
    return {"kernels": run.kernels_note,
            "baseline_sha": next((k[2] for k in kernels if k[0] == "baseline"), kernels[0][2]),
            "champion_sha": kernels[-1][2]}


def pick_kernels(results_path, harness, folder):
    """([(label, source, sha)], note): baseline and champion of the target in `folder` as the
    judge would pick them, or its kernels.py as both when results.tsv has no baseline under this
    harness_sha."""
    target = folder.name
    rows = common.read_results(results_path)
    champion = common.find_champion(rows, target, harness)
    baseline = next((r for r in reversed(rows) if r["target"] == target
                     and r["status"] == "baseline" and r["harness_sha"] == harness), None)
    if champion is None or baseline is None:
        source = (folder / "kernels.py").read_bytes()
        why = ("no results.tsv yet" if not rows
               else f"no baseline row under harness_sha {harness}")
        return ([("champion", source, common.sha256_hex(source)[:common.SHA_DIGITS])],
                f"{why}: {target}/kernels.py serves as both baseline and champion")
    picked = []
    for label, row in (("baseline", baseline), ("champion", champion)):
        source = common.load_snapshot(results_path, target, row["kernel_sha"])
        if source is None:
            raise common.HarnessError(f"{label} snapshot {row['kernel_sha']} is missing or "
                                      "altered", common.EXIT_USAGE)
        picked.append((label, source, row["kernel_sha"]))
    if baseline["kernel_sha"] == champion["kernel_sha"]:
        return picked[1:], f"no keep yet: the champion is the baseline {baseline['kernel_sha']}"
    return picked, (f"baseline {baseline['kernel_sha']} and champion {champion['kernel_sha']} "
                    f"from {Path(results_path).name}")


def start_contestants(kernels, workloads, cpus, budget_end, spec, warm_calls):
    """One contestant per kernel, each on a core of its own, built for every workload (spec:
    the target's run_experiment) and left compiling: its first call (warm_calls on
    workloads[0]) is sent, not awaited. pin_contestants finishes it (within the contestant's
    call deadline: the caller may work meanwhile)."""
    folder = Path(spec.__file__).resolve().parent
    contestants = []
    for i, (label, source, _) in enumerate(kernels):
        contestants.append(common.Contestant(label, source, spec.KERNEL_CLASS, folder,
                                             budget_end, cpus[i % len(cpus)]))
    for c in contestants:
        c.receive(f"import of the {c.label} kernels.py")
    common.init_workloads(contestants, workloads, spec)
    for c in contestants:
        c.send("call", workloads[0]["name"], spec.KERNEL_METHOD, warm_calls)  # in parallel
    return contestants


def pin_contestants(contestants, cpus):
    """Await every contestant's first call, then pin all to the benchmark core (cpus[-1]), as
    the judge does."""
    for c in contestants:
        c.receive(f"the {c.label} kernel's first call")
        c.pin(cpus[-1])


def time_batch(impl, name, method, calls, bench_cpu, judge_cpus):
    """(answers, CPU ns, other threads' CPU ns) of one batch: a contestant's process CPU time
    read from outside (its other threads are in it already: 0), or an in-process peer's thread
    CPU time on the benchmark core, with what the rest of this process burned meanwhile."""
    if "contestant" in impl:
        outs, cpu, _ = impl["contestant"].request(f"{impl['label']} batch {name}", "call", name,
                                                  method, calls)
        return outs, cpu, 0
    answer = getattr(impl["peers"][name], method)
    os.sched_setaffinity(0, {bench_cpu})  # the core the contestants are timed on
    process_start, start = time.process_time_ns(), time.thread_time_ns()
    outs = [answer(*call) for call in calls]
    cpu = time.thread_time_ns() - start
    others = time.process_time_ns() - process_start - cpu  # read after: never negative
    os.sched_setaffinity(0, judge_cpus)
    return outs, cpu, others


def time_rounds(impls, workloads, rounds, cpus, method, order_seed, draw_calls, verify):
    """Round 0 checks every answer (untimed); then `rounds` timed rounds, combos in an order
    drawn from order_seed, implementations rotated each round. draw_calls(w, r): the calls of
    w's batch in round r; verify(answers, w, calls) -> (records, wrong): answers[label][j]
    answers calls[j]. Returns (ns per call per round, {label: [own CPU ns, other threads' CPU
    ns]} over the timed batches, round 0's records); it stops there when an answer was wrong
    (a wrong answer's speed means nothing)."""
    bench_cpu, judge_cpus = cpus[-1], set(cpus[:-1]) or {cpus[-1]}
    ns = {impl["label"]: {w["name"]: [] for w in workloads} for impl in impls}
    cpu = {impl["label"]: [0, 0] for impl in impls}
    records, order_rng = [], np.random.default_rng(order_seed)
    for r in range(1 + rounds):
        wrong = False
        for index in order_rng.permutation(len(workloads)):
            w = workloads[index]
            calls = draw_calls(w, r)
            shift = (r + int(index)) % len(impls)  # each implementation takes each slot
            answers = {}
            for impl in impls[shift:] + impls[:shift]:
                label = impl["label"]
                answers[label], own, others = time_batch(impl, w["name"], method, calls,
                                                         bench_cpu, judge_cpus)
                if r > 0:
                    ns[label][w["name"]].append(own / len(calls))
                    cpu[label][0] += own
                    cpu[label][1] += others
            if r == 0:
                found, bad = verify(answers, w, calls)
                records += found
                wrong = wrong or bad
        if wrong:
            return ns, cpu, records
        common.progress(f"round {r + 1}/{1 + rounds}" + (" (verification)" if r == 0 else ""))
    return ns, cpu, records


def own_modules(folder, names, keep):
    """A target folder's modules, loaded by path in order under the bare names they import
    each other by (run_experiment imports inputs and reference). keep: they stay under those
    names, as a script needs (pickles sent to contestants name e.g. inputs.Bm25Index, and
    pickle finds a class through sys.modules by its module's name). Otherwise each bare name
    gets back what it held: the tests import several targets' modules of the same names
    (tests/conftest.py), and the modules loaded here keep their own references."""
    saved = {name: sys.modules.pop(name, None) for name in names}
    loaded = []
    try:
        for name in names:
            spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # what the next one's bare import finds
            spec.loader.exec_module(module)
            loaded.append(module)
    finally:
        if not keep:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
    return loaded


def ratio_text(us, top, bottom, names):
    """Geomean over combos of top / bottom, or n/a when either was not run."""
    if top not in us or bottom not in us:
        return "n/a"
    return f"{common.geomean([us[top][n] / us[bottom][n] for n in names]):.2f}"
