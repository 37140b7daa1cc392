# SPDX-License-Identifier: MIT OR Apache-2.0
"""BENCHMARK: measures what the gate promises, and checks each figure against its bound.
`make calibrate TARGET=<t>` (minutes; results.tsv untouched).

Trials of a target run in a private copy of the tree: a first run with an empty fixture cache,
warm runs, A/A runs of the unchanged kernel (noise, and how often a combo's CI90 excludes 1),
power runs with kernels made slower by a known factor (a wrapper that busy-waits, so each
call costs factor x its own time), runs of a kernel that does each call twice (fidelity: the
judge's ratio against the in-process ratio of the same two kernels, which is 2 only where a
repeated call gains nothing from warm caches), the harness's CPU per call beside the same
kernel's in-process time (overhead), and `make confirm` on a known champion. `--readme` writes
the figures into README.md's Measured table.
"""
import argparse
import importlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trials
from wrappers import DOUBLE_WRAPPER, SLOWDOWN_WRAPPER

sys.path.insert(0, str(trials.REPO))
import common  # noqa: E402
import ledger  # noqa: E402
import wire  # noqa: E402

THIRD_SHAPE = {  # how the wrapper recognises one shape: an expression over __init__'s args
    "pq_l2": "'dim=768' in repr(args[0])", "bitpack": "args[0] == 16",
    "fts_bm25": "len(args[0].doc_lengths) == 150_000"}
WARM_SECONDS_MAX = 15
FIRST_SECONDS_MAX = 60
AA_MIN_RUNS = 20  # A/A runs: enough combo CIs to see their coverage
AA_MAX_DEVIATION = 0.02
AA_MAX_MEDIAN_HALF_WIDTH = 0.01
AA_MAX_EXCLUDING = 0.12  # share of A/A combo CI90s that exclude 1 (10 % expected)
PEAK_MEM_MB_MAX = {"pq_l2": 300, "bitpack": 300, "fts_bm25": 800}  # a kernel per workload:
#                   fts_bm25's holds its corpus's index once per query kind (70 MB at 150k)
FIDELITY_RUNS = 3
FIDELITY_GEOMEAN = 0.025  # twice the work: |judge's geomean ratio / in-process ratio - 1|
FIDELITY_COMBO = 0.05  # and every combo's median over the runs
OVERHEAD_MAX = {"pq_l2": 1.10, "bitpack": 1.25, "fts_bm25": 1.25}  # harness / in-process CPU
OVERHEAD_ROUNDS = 10
CONFIRM_TOLERANCE = {"unchanged": 0.02, "slow30": 0.03}  # |direct speedup - truth|, per scale

def load_spec(target):
    sys.path.insert(0, str(trials.REPO / target))
    return common.load_target(importlib.import_module("run_experiment")).spec


def slowed(source, spec, target, other, matching=None):
    return source + SLOWDOWN_WRAPPER.format(
        cls=spec.KERNEL_CLASS, method=spec.KERNEL_METHOD, match=THIRD_SHAPE[target],
        other=other, matching=other if matching is None else matching)


def trial(workdir, target, kernel, champion, results):
    done = trials.run_trial(workdir, target, kernel, results, champion=champion,
                            desc="calibration")
    if done.code != 0:
        sys.exit(f"calibration trial failed ({done.code}): {done.stdout[-600:]}"
                 f"{done.stderr[-600:]}")
    return {**done.block, "wall_seconds": done.wall}


def interval(text):
    return tuple(float(x) for x in re.findall(r"\d+\.\d+", text)[:2])


def half_width(block):
    lo, hi = interval(block["ratio_ci90"])
    return (hi - lo) / 2


def combo_ratios(block):
    """combo -> (ratio, lo, hi) from a result block."""
    return {k[6:]: tuple(float(x) for x in re.findall(r"\d+\.\d+", v)[:3])
            for k, v in block.items() if k.startswith("combo_")}


def series(name, blocks, want_verdict, extra=""):
    verdicts = [b["verdict"] for b in blocks]
    ratios = [float(b["geomean_ratio"]) for b in blocks]
    hits = sum(v == want_verdict for v in verdicts)
    print(f"{name}: {want_verdict} {hits}/{len(blocks)}; geomean_ratio min {min(ratios):.4f} "
          f"median {statistics.median(ratios):.4f} max {max(ratios):.4f}; median CI90 half-width "
          f"{statistics.median(half_width(b) for b in blocks):.4f}{extra}", flush=True)
    return hits, ratios


def kernel_class(source, spec, name):
    """The kernel class of `source`, imported into this process."""
    module = type(sys)(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return getattr(module, spec.KERNEL_CLASS)


def overhead(target, spec, rounds, double_source):
    """Per combo: the median CPU per call the judge measures for the baseline in a contestant,
    over the median thread CPU of the same calls to the same kernel imported here (the
    harness's overhead), and the in-process ratio of the double-work kernel to the baseline
    (what the judge's ratio of the two should read); all on one core, interleaved batch by
    batch in a rotating order."""
    source = (trials.REPO / target / "kernels.py").read_bytes()
    classes = [kernel_class(text, spec, name) for text, name in (
        (source, "calibrated_kernels"), (double_source, "calibrated_double"))]
    _, workloads, _ = spec.fixtures()
    cpus = sorted(os.sched_getaffinity(0))
    bench, others = cpus[-1], set(cpus[:-1]) or {cpus[-1]}
    child = common.Contestant("candidate", source, spec.KERNEL_CLASS, trials.REPO / target,
                              time.monotonic() + 30 * common.TIME_BUDGET_SECS, bench)
    here = {w["name"]: [cls(*spec.init_args(w)) for cls in classes] for w in workloads}
    slots = bytearray(wire.MAX_MESSAGE_BYTES // 8)  # output slots of the in-process calls
    ns = {w["name"]: ([], [], []) for w in workloads}  # contestant, here, here double
    try:
        child.receive("import of kernels.py")
        os.sched_setaffinity(0, others)
        for w in workloads:
            child.request("init", "init", w["name"], spec.init_args(w))
        rng = np.random.default_rng()
        for r in range(1 + rounds):
            for w in (workloads[i] for i in rng.permutation(len(workloads))):
                calls, _ = spec.draw_calls(w, common.mix_seeds(r, w["name"], "overhead"))
                cursor = [wire.REPLY_HEADER_BYTES]
                local = [wire.fill_slots(c, slots, cursor) for c in calls]
                for side in np.roll([0, 1, 2], r):
                    if side == 0:
                        cpu = child.request("batch", "call", w["name"], spec.KERNEL_METHOD,
                                            calls)[1]
                    else:
                        method = getattr(here[w["name"]][side - 1], spec.KERNEL_METHOD)
                        os.sched_setaffinity(0, {bench})
                        start = time.thread_time_ns()
                        for args in local:
                            method(*args)
                        cpu = time.thread_time_ns() - start
                        os.sched_setaffinity(0, others)
                    if r:
                        ns[w["name"]][side].append(cpu / len(calls))
    finally:
        child.close()
        os.sched_setaffinity(0, set(cpus))
    medians = {name: [statistics.median(x) for x in sides] for name, sides in ns.items()}
    return ({name: h / i for name, (h, i, _) in medians.items()},
            {name: d / i for name, (_, i, d) in medians.items()})


def confirm(work, target, champion_source, chained, results):
    """make confirm in the scratch tree, on a chain of the baseline and a known champion."""
    harness = ledger.harness_sha(target, work)
    base = (work / target / "kernels.py").read_bytes()
    for status, source, speedup in (("baseline", base, "1.0000"),
                                    ("keep", champion_source, f"{chained:.4f}")):
        sha = ledger.save_snapshot(results, target, source)
        ledger.append_result(results, {"target": target, "harness_sha": harness,
                                       "kernel_sha": sha, "champion_sha": sha, "status": status,
                                       "speedup_vs_baseline": speedup})
    done = subprocess.run([sys.executable, "tools/confirm.py", "--target", target, "--results",
                           str(results)], cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"confirm failed ({done.returncode}): {done.stdout[-600:]}{done.stderr[-600:]}")
    block = trials.last_block(done.stdout.split("\n"))
    speedups = {int(k[6:]): float(re.search(r"speedup (\d+\.\d+)", v)[1])
                for k, v in block.items() if re.fullmatch(r"scale_\d+", k)}
    return block, speedups


def write_readme(target, figures):
    """The target's column of README.md's Measured table: rows are matched by their first
    cell, so the table's order and wording stay the README's."""
    readme = trials.REPO / "README.md"
    lines = readme.read_text().splitlines(keepends=True)
    header = next(i for i, line in enumerate(lines) if line.startswith("| Figure |"))
    column = [c.strip() for c in lines[header].strip().strip("|").split("|")].index(target)
    for i in range(header + 2, len(lines)):
        cells = lines[i].strip().strip("|").split("|")
        if not lines[i].startswith("|"):
            break
        name = cells[0].strip()
        if name in figures:
            cells[column] = f" {figures[name]} "
            lines[i] = "|" + "|".join(cells) + "|\n"
    readme.write_text("".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="pq_l2")
    parser.add_argument("--runs", type=int, default=10, help="runs per power series")
    parser.add_argument("--readme", action="store_true", help="write the figures into README")
    args = parser.parse_args()
    target, runs = args.target, args.runs
    if target not in THIRD_SHAPE:
        sys.exit(f"error: calibrate knows no target {target!r}; known: {', '.join(THIRD_SHAPE)}")
    spec = load_spec(target)
    _, trial_workloads, _ = spec.fixtures()
    for scale in spec.CONFIRM_SCALES:  # cached in the real tree, once, for every calibration
        spec.confirm_workloads(trial_workloads, scale)
    tmp = Path(tempfile.mkdtemp(prefix="calibrate-"))
    work = trials.scratch_tree(tmp / "tree", caches=("scaled",))  # the first run builds the
    #                                                   trial's fixtures; other scales are cached
    kernel = work / target / "kernels.py"
    source = kernel.read_text()
    variants = {"slow10": slowed(source, spec, target, 1.10),
                "slow30": slowed(source, spec, target, 1.30),
                "guard_candidate": slowed(source, spec, target, 1.0, matching=1.12),
                "guard_champion": slowed(source, spec, target, 1.30, matching=1.0),
                "double": source + DOUBLE_WRAPPER.format(cls=spec.KERNEL_CLASS,
                                                         method=spec.KERNEL_METHOD)}
    files = {name: tmp / f"{name}.py" for name in variants}
    for name, text in variants.items():
        files[name].write_text(text)
    print(f"calibrating {target} in {work}", flush=True)
    figures, checks = {}, []

    first = trial(work, target, str(kernel), None, tmp / "first.tsv")
    warm = [trial(work, target, str(kernel), None, tmp / "first.tsv")["wall_seconds"]
            for _ in range(3)]
    print(f"first run {first['wall_seconds']:.1f} s, warm median {statistics.median(warm):.1f} s",
          flush=True)
    figures["measured on (`machine`, machines.tsv)"] = f"`{first['machine']}`"
    figures["warm `make run`, wall seconds (median of 3)"] = f"{statistics.median(warm):.1f}"
    figures["first run after setup (empty fixture cache), wall seconds"] = \
        f"{first['wall_seconds']:.1f}"
    checks += [(f"warm run <= {WARM_SECONDS_MAX} s", statistics.median(warm) <= WARM_SECONDS_MAX),
               (f"first run <= {FIRST_SECONDS_MAX} s", first["wall_seconds"] <= FIRST_SECONDS_MAX)]

    aa = [trial(work, target, str(kernel), str(kernel), tmp / "aa.tsv")
          for _ in range(max(AA_MIN_RUNS, runs))]
    peak = max(float(b["peak_mem_mb"]) for b in aa)
    _, ratios = series("A/A", aa, "keep", f"; peak_mem_mb max {peak:.1f}")
    cis = [ci for b in aa for ci in combo_ratios(b).values()]
    excluding = sum(lo > 1 or hi < 1 for _, lo, hi in cis) / len(cis)
    print(f"A/A: {excluding:.1%} of {len(cis)} combo CI90s exclude 1 (10 % expected)")
    median_half = statistics.median(half_width(b) for b in aa)
    figures.update({
        "A/A: keeps of runs; geomean_ratio min / median / max":
            f"{sum(b['verdict'] == 'keep' for b in aa)} of {len(aa)}; {min(ratios):.3f} / "
            f"{statistics.median(ratios):.3f} / {max(ratios):.3f}",
        "A/A: median CI90 half-width": f"{median_half:.4f}",
        "A/A: combo CI90s that exclude 1": f"{excluding:.1%}",
        "peak_mem_mb (max)": f"{peak:.1f}"})
    checks += [("A/A: no keep", all(b["verdict"] != "keep" for b in aa)),
               ("A/A: |ratio - 1| <= 0.02", max(abs(r - 1) for r in ratios) <= AA_MAX_DEVIATION),
               ("A/A: median CI half-width <= 0.01", median_half <= AA_MAX_MEDIAN_HALF_WIDTH),
               (f"A/A: combo CI90s excluding 1 <= {AA_MAX_EXCLUDING:.0%}",
                excluding <= AA_MAX_EXCLUDING),
               (f"peak_mem_mb <= {PEAK_MEM_MB_MAX[target]}", peak <= PEAK_MEM_MB_MAX[target])]

    slow = [trial(work, target, str(files["slow10"]), str(kernel), tmp / "p1.tsv")
            for _ in range(runs)]
    hits, ratios = series("candidate 10% slower", slow, "discard")
    figures["candidate 10 % slower: discards; median ratio"] = \
        f"{hits}/{runs}; {statistics.median(ratios):.3f}"
    checks.append(("10% slower: discard every run", hits == runs))
    fast = [trial(work, target, str(kernel), str(files["slow30"]), tmp / "p2.tsv")
            for _ in range(runs)]
    hits, ratios = series("champion 30% slower", fast, "keep")
    figures["champion 30 % slower: keeps; ratio min / median / max"] = \
        f"{hits}/{runs}; {min(ratios):.3f} / {statistics.median(ratios):.3f} / {max(ratios):.3f}"
    checks += [("30% faster: keep every run", hits == runs),
               ("30% faster: geomean 0.77 +- 0.03", all(abs(r - 0.77) <= 0.03 for r in ratios))]
    guard = [trial(work, target, str(files["guard_candidate"]), str(files["guard_champion"]),
                   tmp / "p3.tsv") for _ in range(runs)]
    series("30% faster on two shapes, 12% slower on one", guard, "discard")
    by_guard = sum("worst-case guard" in b.get("verdict_reason", "") for b in guard)
    figures["30 % faster on two shapes, 12 % slower on one: discards by the worst-case guard"] = \
        f"{by_guard}/{runs}"
    checks.append(("mixed: discarded by the worst-case guard every run", by_guard == runs))

    double = [trial(work, target, str(files["double"]), str(kernel), tmp / "p4.tsv")
              for _ in range(FIDELITY_RUNS)]
    _, ratios = series("twice the baseline's work", double, "discard")
    shares, in_process = overhead(target, spec, OVERHEAD_ROUNDS, variants["double"])
    judged = {name: statistics.median(combo_ratios(b)[name][0] for b in double)
              for name in in_process}
    for name in in_process:
        print(f"  twice the work, {name}: judge {judged[name]:.3f} (median of "
              f"{FIDELITY_RUNS} runs), in-process {in_process[name]:.3f}", flush=True)
    in_process_geo = statistics.geometric_mean(in_process.values())
    combo_gaps = [judged[name] / in_process[name] - 1 for name in in_process]
    figures["twice the work: geomean_ratio min / max; in-process; combo gap max"] = (
        f"{min(ratios):.3f} / {max(ratios):.3f}; {in_process_geo:.3f}; "
        f"{max(combo_gaps, key=abs):+.1%}")
    checks += [(f"twice the work: every geomean within {FIDELITY_GEOMEAN:.1%} of in-process",
                all(abs(r / in_process_geo - 1) <= FIDELITY_GEOMEAN for r in ratios)),
               (f"twice the work: every combo within {FIDELITY_COMBO:.0%} of in-process",
                all(abs(gap) <= FIDELITY_COMBO for gap in combo_gaps))]
    print("harness CPU per call / in-process: " + ", ".join(
        f"{name} {share:.3f}" for name, share in shares.items()), flush=True)
    figures["harness CPU per call / in-process, min / max over combos"] = \
        f"{min(shares.values()):.3f} / {max(shares.values()):.3f}"
    checks.append((f"harness CPU per call within {OVERHEAD_MAX[target]:.2f}x of in-process",
                   max(shares.values()) <= OVERHEAD_MAX[target]))

    for case, champion, truth in (("unchanged", source + "\n# unchanged\n", 1.0),
                                  ("slow30", variants["slow30"], 1 / 1.3)):
        block, speedups = confirm(work, target, champion.encode(), truth, tmp / f"{case}.tsv")
        worst = max(abs(s - truth) for s in speedups.values())
        print(f"confirm, {case}: direct speedup per scale " + ", ".join(
            f"{scale} {s:.3f}" for scale, s in speedups.items()) + f"; chain {block['chain']}",
            flush=True)
        figures[f"make confirm, champion {case}: direct speedup per scale (truth {truth:.3f})"] = \
            " / ".join(f"{s:.3f}" for s in speedups.values()) + f"; chain {block['chain']}"
        checks.append((f"confirm {case}: every scale within {CONFIRM_TOLERANCE[case]} of "
                       f"{truth:.3f}", worst <= CONFIRM_TOLERANCE[case]))
        if case == "unchanged":
            checks.append(("confirm unchanged: chain holds", block["chain"] == "holds"))

    print("---")
    for name, value in figures.items():
        print(f"{name}: {value}")
    for name, ok in checks:
        print(f"{'pass' if ok else 'FAIL'}: {name}")
    if args.readme:
        write_readme(target, figures)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
