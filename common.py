# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: one trial, top to bottom. The rules it applies are stated in HARNESS.md.

A target's run_experiment.py hands itself to main_of(); a trial then runs these steps in order:
  1. pick_champion       the kernel to race: the last keep/baseline's snapshot, or the baseline
  2. correctness         both kernels answer the target's battery in step (check_battery)
  3. time_side_by_side   interleaved, mirrored rounds on one core; CPU time read from outside
  4. judge               per-combo ratios with CIs, their geomean, the gate (decide)
  5. record              one row in results.tsv; the result block on stdout
Kernels run only in contestant processes (contestant.py, sandboxed by sandbox.py); results.tsv,
snapshots, the harness hash and git are the ledger (ledger.py).
"""
import argparse
import importlib.util
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np

from contestant import DEADLINE_SCALE, Contestant
from ledger import (CHAMPION_STATUSES, EXIT_OK, EXIT_USAGE, REPO, RESULTS_PATH, SHA_DIGITS,
                    STATUS_EXIT, HarnessError, TrialFault, append_result, clean_field,
                    describe_machine, find_champion, git, git_note, harness_sha, load_snapshot,
                    note_machine, progress, read_results, revert, save_snapshot, sha256_hex)
from seeds import mix_seeds

TIME_BUDGET_SECS = 180 * DEADLINE_SCALE  # whole trial; an honest one's wall time: README
WARMUP_ROUNDS = 1  # untimed first round: compiles and warms caches

# The gate (HARNESS.md section 4) and its statistics (section 3).
TRIM = 0.2  # fraction of rounds trimmed at each end of a combo's log ratios
MIN_GAIN = 0.01  # effect-size floor: keep needs geomean ratio <= 1 - MIN_GAIN (a target may
#                  set its own, for noise between process pairs that rounds do not show)
WORST_REGRESSION = 0.05  # a combo significantly slower by this much blocks a keep
CI_Z = 1.6449  # two-sided 90 % normal quantile; small samples get the t correction below
T90_TABLE = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796,
             1.782, 1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725)  # t(0.95, dof 1..20)

# What a target's run_experiment.py must define (docs/adding-a-target.md).
TARGET_CONSTANTS = ("KERNEL_CLASS", "KERNEL_METHOD", "ROUNDS", "UNIT")
TARGET_FUNCTIONS = ("fixtures", "check_battery", "init_args", "draw_calls", "check_timed")


class Target(NamedTuple):
    name: str  # the folder's name, e.g. pq_l2
    folder: Path
    kernel_path: Path  # <folder>/kernels.py, the file the agent edits
    spec: object  # the run_experiment module: TARGET_CONSTANTS and TARGET_FUNCTIONS


def load_target(module):
    missing = [n for n in TARGET_CONSTANTS + TARGET_FUNCTIONS if not hasattr(module, n)]
    folder = Path(module.__file__).resolve().parent
    if missing:
        raise HarnessError(f"{folder.name}/run_experiment.py does not define "
                           f"{', '.join(missing)} (docs/adding-a-target.md)", EXIT_USAGE)
    return Target(folder.name, folder, folder / "kernels.py", module)


# ---------------------------------------------------------------- 1. the champion
class Champion(NamedTuple):
    source: bytes
    sha: str
    speedup: float  # its speedup_vs_baseline: what this run's ratio is chained onto
    is_baseline: bool  # no champion yet: this run records the baseline, raced against itself


def read_kernel(path):
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise HarnessError(f"cannot read the kernel: {e}", EXIT_USAGE) from None


def pick_champion(target, args, rows, harness):
    """The champion from --champion or results.tsv; without one, the baseline: kernels.py as
    committed at HEAD (the working file without git)."""
    if args.champion:
        source = read_kernel(args.champion)
        return Champion(source, sha256_hex(source)[:SHA_DIGITS], 1.0, False)
    row = find_champion(rows, target.name, harness)
    if row is not None:
        source = load_snapshot(args.results, target.name, row["kernel_sha"])
        if source is not None:
            return Champion(source, row["kernel_sha"], float(row["speedup_vs_baseline"]), False)
        progress(f"champion snapshot {row['kernel_sha']} is missing or altered: re-baselining")
    elif any(r["target"] == target.name and r["status"] in CHAMPION_STATUSES for r in rows):
        progress(f"the harness changed (harness_sha now {harness}): earlier rows are not "
                 "comparable, re-baselining")
    working = read_kernel(args.kernel)
    baseline = working
    if Path(args.kernel).resolve() == target.kernel_path:
        baseline = git("show", f"HEAD:{target.kernel_path.relative_to(REPO)}")
        if baseline is None:
            progress("no git commit to take the baseline from: using the working kernels.py")
            baseline = working
        elif baseline != working:
            progress("baseline = kernels.py as committed at HEAD; your edits are not evaluated "
                     "in this run: run again to try them")
    return Champion(baseline, sha256_hex(baseline)[:SHA_DIGITS], 1.0, True)


# ---------------------------------------------------------------- 2. correctness helpers
def in_step(contestants, phase, op, *args):
    """The same request to every contestant at once (each on its own core): outputs by label."""
    for contestant in contestants:
        contestant.send(op, *args)
    return {contestant.label: contestant.receive(phase)[0] for contestant in contestants}


def whose(label):
    """Message prefix naming the kernel at fault: none for the candidate."""
    return "" if label == "candidate" else f"{label} kernel: "


# ---------------------------------------------------------------- 3. timing
class Samples(NamedTuple):
    log_ratios: list  # per timed round: log(candidate CPU / champion CPU)
    candidate_ns: list  # per timed round: CPU ns per call
    champion_ns: list  # the same for the kernel it is measured against


def time_batch(order, name, method, calls, phase, copy):
    """Both kernels answer the same calls, one after the other on the benchmark core, each
    with its code copy `copy`. Returns (CPU ns by label, outputs by label)."""
    done = {runner.label: runner.request(phase, "call", name, method, calls, copy)
            for runner in order}
    return ({label: cpu for label, (_, cpu, _) in done.items()},
            {label: outs for label, (outs, _, _) in done.items()})


class Batch(NamedTuple):
    round: int
    workload: dict
    calls: list  # the argument tuples both kernels are called with
    truth: object  # what drawing the calls already told about their answers (or None)
    order: tuple  # (first, second) contestant: AB one round, BA the next


def rounds_of(pair, workloads, rounds, spec, rng):
    """Each round's batches, drawn before the round is timed: the judge's own work (drawing a
    page takes milliseconds) must not churn the shared cache between timed batches.
    Combos come in random order, never the same one twice in a row; in a combo the order of
    the two kernels alternates from a random start."""
    run_seed = int(rng.integers(0, 2**63))  # fresh inputs every run, unknown in advance
    first = {w["name"]: int(rng.integers(2)) for w in workloads}
    last = None
    for r in range(WARMUP_ROUNDS + rounds):
        visit = [workloads[i] for i in rng.permutation(len(workloads))]
        if visit[0]["name"] == last and len(visit) > 1:
            visit[0], visit[1] = visit[1], visit[0]
        last = visit[-1]["name"]
        yield [Batch(r, w, *spec.draw_calls(w, mix_seeds(run_seed, w["name"], r)),
                     pair if (r + first[w["name"]]) % 2 else pair[::-1]) for w in visit]


def check_round(spec, batches, timed):
    """The first wrong output of a round's batches, as a fault message, or None. It runs on
    the judge's core while the next round is timed: no kernel runs there."""
    for b, (_, outputs) in zip(batches, timed, strict=True):
        if found := spec.check_timed(b.workload, b.calls, b.truth, outputs):
            label, problem = found
            return (f"{label} kernel wrong while timed: {b.workload['name']} round {b.round}: "
                    f"{problem}")
    return None


def settle(check):
    """Wait for a round's check: a wrong output fails the trial."""
    if problem := (check.result() if check else None):
        raise TrialFault("fail", problem)


def copy_code(contestants, rounds):
    """Every contestant executes kernels.py once more per round, each copy's numba functions
    loaded for what copy 0 has compiled so far (HARNESS.md section 2, "Code copies"); again,
    it only tops up what copy 0 compiled since."""
    in_step(contestants, "the code copies", "copies", WARMUP_ROUNDS + rounds)


def init_workloads(contestants, workloads, spec):
    """Every contestant builds a kernel for every speed workload, in step."""
    for w in workloads:
        in_step(contestants, f"__init__ of {w['name']}", "init", w["name"], spec.init_args(w))


def time_side_by_side(pair, workloads, rounds, spec, rng):
    """Round by round: draw, time every batch on both kernels (built by init_workloads);
    every output is checked (check_timed) on the judge's core while the next round is drawn
    and timed. Returns Samples per combo: pair[0] (the candidate) over pair[1]."""
    first, second = (contestant.label for contestant in pair)
    samples = {w["name"]: Samples([], [], []) for w in workloads}
    with ThreadPoolExecutor(1, thread_name_prefix="checker") as checker:
        pending = None  # the previous round's check, running beside this round's timing
        for batches in rounds_of(pair, workloads, rounds, spec, rng):
            if batches[0].round == WARMUP_ROUNDS:  # what the warm-up compiled, in every copy
                copy_code(pair, rounds)
            timed = [time_batch(b.order, b.workload["name"], spec.KERNEL_METHOD, b.calls,
                                f"timed batch {b.workload['name']} round {b.round}", b.round)
                     for b in batches]
            settle(pending)
            pending = checker.submit(check_round, spec, batches, timed)
            for b, (cpu, _) in zip(batches, timed, strict=True):
                if b.round >= WARMUP_ROUNDS:
                    s = samples[b.workload["name"]]
                    s.log_ratios.append(math.log(cpu[first] / cpu[second]))
                    s.candidate_ns.append(cpu[first] / len(b.calls))
                    s.champion_ns.append(cpu[second] / len(b.calls))
            if batches[0].round % 6 == 0:
                progress(f"timing round {batches[0].round + 1}/{WARMUP_ROUNDS + rounds}")
        settle(pending)
    return samples


# ---------------------------------------------------------------- 4. statistics and the gate
def geomean(values):
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=np.float64)))))


def t_quantile_90(dof):
    """Two-sided 90 % Student t quantile: tabulated to 20 degrees of freedom, then the
    Cornish-Fisher expansion (within 0.1 % from there on)."""
    if dof <= len(T90_TABLE):
        return T90_TABLE[dof - 1]
    z = CI_Z
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def log_ratio_summary(log_ratios):
    """Trimmed mean of the per-round log ratios, its standard error and degrees of freedom
    (Yuen's method): a round hit by a neighbour's burst is an outlier, not evidence."""
    x = np.sort(np.asarray(log_ratios, dtype=np.float64))
    n = len(x)
    g = int(TRIM * n)
    winsorized = np.clip(x, x[g], x[n - 1 - g])
    stderr = np.std(winsorized, ddof=1) / ((1 - 2 * g / n) * math.sqrt(n))
    return float(np.mean(x[g:n - g])), float(stderr), n - 2 * g - 1


def ratio_with_ci(mean_log, stderr, dof):
    half = t_quantile_90(max(dof, 1)) * stderr
    return math.exp(mean_log), math.exp(mean_log - half), math.exp(mean_log + half)


def combined_geomean(summaries):
    """Geomean ratio over combos with its CI: combos are independent, their errors add."""
    means = [s[0] for s in summaries]
    stderr = math.sqrt(sum(s[1] ** 2 for s in summaries)) / len(summaries)
    return ratio_with_ci(float(np.mean(means)), stderr, sum(s[2] for s in summaries))


def decide(is_baseline, geo, geo_lo, geo_hi, combos, min_gain=MIN_GAIN):
    """The gate (HARNESS.md). combos: name -> (ratio, lo, hi). Returns (verdict, reason)."""
    if is_baseline:
        return "baseline", "first run on this harness: the champion is recorded"
    if not all(math.isfinite(x) for x in (geo, geo_lo, geo_hi, *sum(combos.values(), ()))):
        return "discard", "statistics are not finite (too few rounds?)"
    regressed = [n for n, (r, lo, _) in combos.items() if r >= 1 + WORST_REGRESSION and lo > 1]
    if regressed:
        return "discard", f"worst-case guard: {', '.join(regressed)} slower by >= 5 %"
    if geo_hi >= 1:
        return "discard", f"no significant gain: geomean CI90 upper {geo_hi:.4f} >= 1"
    if geo > 1 - min_gain:
        return "discard", f"gain below the {min_gain:.0%} floor: geomean {geo:.4f}"
    return "keep", f"faster: geomean {geo:.4f}, CI90 [{geo_lo:.4f}, {geo_hi:.4f}]"


class Judgement(NamedTuple):
    verdict: str  # baseline, keep or discard
    reason: str
    geo: tuple  # geomean ratio, CI90 low, CI90 high
    combos: dict  # name -> (ratio, low, high)
    worst: str  # the combo with the highest ratio
    per_unit: dict  # name -> (candidate, champion) median time in the target's unit
    geomean_unit: float  # geomean over combos of the candidate's median time per unit
    geomean_us: float  # the same per call, in microseconds (results.tsv's geomean_us)


def judge(samples, is_baseline, unit, workloads, min_gain=MIN_GAIN):
    """Per-combo ratios and CIs, the geomean, the verdict. unit = (name, units per call, ns
    per unit) of the reported time, e.g. ("us_per_query", 1, 1e3); units per call may name a
    workload key instead (bitpack: "values", the page size). min_gain: the target's floor."""
    _, units, ns_per_unit = unit
    per_call = {w["name"]: w[units] if isinstance(units, str) else units for w in workloads}
    summaries = {name: log_ratio_summary(s.log_ratios) for name, s in samples.items()}
    combos = {name: ratio_with_ci(*summary) for name, summary in summaries.items()}
    per_call_ns = {name: (float(np.median(s.candidate_ns)), float(np.median(s.champion_ns)))
                   for name, s in samples.items()}
    per_unit = {name: tuple(ns / per_call[name] / ns_per_unit for ns in pair)
                for name, pair in per_call_ns.items()}
    geo = combined_geomean(list(summaries.values()))
    verdict, reason = decide(is_baseline, *geo, combos, min_gain)
    worst = max(combos, key=lambda name: combos[name][0])
    return Judgement(verdict, reason, geo, combos, worst, per_unit,
                     geomean([pair[0] for pair in per_unit.values()]),
                     geomean([pair[0] for pair in per_call_ns.values()]) / 1e3)


# ---------------------------------------------------------------- 5. the row and the block
class Outcome(NamedTuple):
    status: str  # baseline, keep, discard, fail, timeout, crash; checked under --check
    correctness: str  # pass, fail or not run
    message: str  # a fault's message; empty otherwise
    judgement: Judgement | None  # None for a fault or a check
    peak_mem_mb: float | None


def speedup_field(outcome, champion):
    """{"speedup_vs_baseline": ...} for a new champion (baseline or keep), {"would_be_speedup":
    ...} for a discard: a row that tops a sort of speedup_vs_baseline is always a champion."""
    j = outcome.judgement
    value = 1.0 if j.verdict == "baseline" else champion.speedup / j.geo[0]
    key = "would_be_speedup" if j.verdict == "discard" else "speedup_vs_baseline"
    return {key: f"{value:.4f}"}


def result_row(target, harness, machine, kernel_sha, champion, outcome, seconds, desc):
    j = outcome.judgement
    commit = git("rev-parse", "--short", "HEAD")
    metrics = {} if j is None else {
        "geomean_ratio": f"{j.geo[0]:.4f}", "ratio_ci90": f"{j.geo[1]:.4f}-{j.geo[2]:.4f}",
        "worst_combo": j.worst, "worst_ratio": f"{j.combos[j.worst][0]:.4f}",
        **speedup_field(outcome, champion), "geomean_us": f"{j.geomean_us:.1f}",
        "peak_mem_mb": f"{outcome.peak_mem_mb:.1f}"}
    return {"timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "target": target.name, "commit": commit.decode().strip() if commit else "none",
            "machine": machine, "harness_sha": harness, "kernel_sha": kernel_sha,
            "champion_sha": champion.sha, "status": outcome.status, **metrics,
            "total_seconds": f"{seconds:.1f}",
            "description": clean_field(desc) or "(no description)"}


def result_block(target, harness, machine, kernel_sha, champion, outcome, seconds):
    """The block of HARNESS.md section 8, in its order."""
    j = outcome.judgement
    block = {"target": target.name, "status": outcome.status,
             "correctness": outcome.correctness,
             "verdict": "none" if outcome.status == "checked" else (j.verdict if j else "discard")}
    if outcome.message:
        block["message"] = outcome.message
    if j is not None:
        unit_name = target.spec.UNIT[0]
        block.update({
            "verdict_reason": j.reason, "geomean_ratio": f"{j.geo[0]:.4f}",
            "ratio_ci90": f"[{j.geo[1]:.4f}, {j.geo[2]:.4f}]", "worst_combo": j.worst,
            "worst_ratio": f"{j.combos[j.worst][0]:.4f}", **speedup_field(outcome, champion),
            f"geomean_{unit_name}": f"{j.geomean_unit:.1f}",
            "peak_mem_mb": f"{outcome.peak_mem_mb:.1f}"})
        for name, (ratio, lo, hi) in j.combos.items():
            cand, champ = j.per_unit[name]
            block[f"combo_{name}"] = (f"ratio {ratio:.4f} ci90 [{lo:.4f}, {hi:.4f}] "
                                      f"candidate_{unit_name} {cand:.1f} champion_{unit_name} "
                                      f"{champ:.1f}")
    block.update(total_seconds=f"{seconds:.1f}", kernel_sha=kernel_sha,
                 champion_sha=champion.sha if champion else "", harness_sha=harness,
                 machine=machine)
    return block


def print_block(fields):
    """The result block: `---`, then one `key: value` per line, whatever a message holds."""
    sys.stdout.write("---\n" + "".join(f"{k}: {clean_field(v)}\n" for k, v in fields.items()))
    sys.stdout.flush()


# ---------------------------------------------------------------- the trial
def check_untouched(target, harness, cache_intact):
    """Harness files and the fixture cache must hash as they did before the kernels ran."""
    if (now := harness_sha(target.name)) != harness:
        raise TrialFault("fail", f"harness files changed during the run (harness_sha {harness} "
                                 f"-> {now})")
    if not cache_intact:
        raise TrialFault("fail", "the fixture cache changed during the run: it was deleted and "
                                 "will be regenerated")


def race(target, harness, candidate_source, champion, args, cpus):
    """Correctness in step, then (unless --check) timing side by side; both contestants are
    timed on the last of `cpus`. Returns the Outcome."""
    spec = target.spec
    battery, workloads, cache_intact = spec.fixtures()
    budget_end = time.monotonic() + TIME_BUDGET_SECS  # fixtures are built outside the budget
    correctness, contestants, bench_cpu = "not run", [], cpus[-1]
    try:
        progress("loading and compiling the kernels")
        contestants.append(Contestant("candidate", candidate_source, spec.KERNEL_CLASS,
                                      target.folder, budget_end, bench_cpu))
        if champion is not None:  # it takes the battery on the other core, then joins
            contestants.append(Contestant("champion", champion.source, spec.KERNEL_CLASS,
                                          target.folder, budget_end, cpus[0]))
        for contestant in contestants:
            contestant.receive("import of kernels.py" if contestant.label == "candidate"
                               else "import of the champion kernels.py")
        spec.check_battery(contestants, battery)
        for contestant in contestants:
            contestant.verify("the end of correctness")
        correctness = "pass"
        if champion is None:
            check_untouched(target, harness, cache_intact())
            return Outcome("checked", correctness, "", None, None)
        copy_code(contestants, args.rounds)  # still each on its own core
        init_workloads(contestants, workloads, spec)
        contestants[1].pin(bench_cpu)
        if len(cpus) > 1:
            os.sched_setaffinity(0, set(cpus[:-1]))  # the judge stays off the benchmark core
        progress(f"timing {len(workloads)} combos x {args.rounds} rounds, "
                 f"interleaved with the champion {champion.sha}")
        samples = time_side_by_side(contestants, workloads, args.rounds, spec,
                                    np.random.default_rng())
        for contestant in contestants:
            contestant.verify("the end of timing")
        peak = contestants[0].peak_rss_mb()
        check_untouched(target, harness, cache_intact())
    except TrialFault as fault:
        failed = correctness == "not run" and fault.status == "fail"
        return Outcome(fault.status, "fail" if failed else correctness, str(fault), None, None)
    finally:
        for contestant in contestants:
            contestant.close()
    judgement = judge(samples, champion.is_baseline, spec.UNIT, workloads,
                      getattr(spec, "MIN_GAIN", MIN_GAIN))
    return Outcome(judgement.verdict, correctness, "", judgement, peak)


def run_trial(target, args, started):
    """One trial (or --check): returns (result block, exit code); records one row."""
    rows = read_results(args.results)
    harness = harness_sha(target.name)
    champion = None if args.check else pick_champion(target, args, rows, harness)
    races_itself = champion is not None and champion.is_baseline  # the baseline: an A/A figure
    candidate_source = champion.source if races_itself else read_kernel(args.kernel)
    kernel_sha = save_snapshot(args.results, target.name, candidate_source)
    cpus = sorted(os.sched_getaffinity(0))
    machine, described = describe_machine(cpus[-1])
    outcome = race(target, harness, candidate_source, champion, args, cpus)
    code = STATUS_EXIT.get(outcome.status, EXIT_OK)
    seconds = time.monotonic() - started
    if champion is not None:
        note_machine(args.results, machine, described)
        append_result(args.results, result_row(target, harness, machine, kernel_sha, champion,
                                               outcome, seconds, args.desc))
    return result_block(target, harness, machine, kernel_sha, champion, outcome, seconds), code


# ---------------------------------------------------------------- the command line
class UsageParser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments; here 2 means a correctness failure."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def at_least_two(text):
    if int(text) < 2:
        raise argparse.ArgumentTypeError("needs at least 2 rounds for a confidence interval")
    return int(text)


def parse_trial_args(description, kernel_path, rounds):
    parser = UsageParser(description=description)
    parser.add_argument("--desc", default=os.environ.get("DESC", ""))
    parser.add_argument("--check", action="store_true", help="correctness only, no row")
    parser.add_argument("--revert", action="store_true", help="put the champion in kernels.py")
    parser.add_argument("--kernel", default=str(kernel_path), help="candidate kernel file")
    parser.add_argument("--champion", help="champion kernel file (default: from results.tsv)")
    parser.add_argument("--results", default=str(RESULTS_PATH), type=Path)
    parser.add_argument("--rounds", type=at_least_two, default=rounds)
    return parser.parse_args()


def main_of(module):
    """A target's run_experiment.py as a program: one trial (or --check, or --revert), one
    result block on stdout, one exit code."""
    started = time.monotonic()
    try:
        target = load_target(module)
        args = parse_trial_args(module.__doc__.splitlines()[0], target.kernel_path,
                                target.spec.ROUNDS)
        if importlib.util.find_spec("numba") is None:
            raise HarnessError("numba is not installed in this Python: run `make setup`",
                               EXIT_USAGE)
        if clean_field(args.desc) != args.desc.strip():
            progress("DESC had tabs or newlines: they are logged as spaces")
        if note := git_note(target.name):
            progress(f"git: {note}")
        if args.revert:
            return revert(target.name, target.kernel_path, args.results)
        block, code = run_trial(target, args, started)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    print_block(block)
    return code
