# SPDX-License-Identifier: MIT OR Apache-2.0
"""TOOL: `make confirm TARGET=<t>`: does the champion's speedup hold when measured directly?

The champion (the target's last keep or baseline under the current harness) is timed against
the baseline its chain started from, or against any snapshot (CONFIRM_AGAINST=<kernel_sha>),
in one interleaved run per scale: the trial's and the target's CONFIRM_SCALES, each with twice
a trial's rounds, the trial's statistics and its checks of timed outputs. It prints, per scale
and combo, the direct ratio with its CI90 beside the chained speedup_vs_baseline; says whether
the chain holds, and where a win falls below the gate or turns into a loss; and appends one
`confirm` row to results.tsv (never a champion). Progress goes to stderr.
"""
import importlib
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import common  # noqa: E402
import ledger  # noqa: E402

ROUNDS_FACTOR = 2  # a confirm times each scale with twice a trial's rounds
MEMORY_SHARE = 0.8  # a scale runs only if its estimate fits this share of available memory
SCALE_BUDGET_FACTOR = 3  # each scale gets three trials' time budget (its fixtures aside)


class Chain(NamedTuple):
    champion: dict  # the champion's row
    against: str  # kernel_sha it is timed against
    chained: float | None  # its speedup_vs_baseline, when `against` is its chain's baseline


class Scale(NamedTuple):
    scale: int
    judgement: object  # common.Judgement of champion over `against`
    finding: str  # holds, below the gate (why), or a loss


def load_target(name):
    folder = REPO / name
    if not (folder / "run_experiment.py").is_file():
        raise ledger.HarnessError(f"unknown TARGET {name!r}", ledger.EXIT_USAGE)
    sys.path.insert(0, str(folder))
    target = common.load_target(importlib.import_module("run_experiment"))
    missing = [n for n in ("TRIAL_SCALE", "CONFIRM_SCALES", "CONFIRM_SCALE_NAME",
                           "confirm_workloads", "confirm_memory") if not hasattr(target.spec, n)]
    if missing:
        raise ledger.HarnessError(f"{name}/run_experiment.py does not define {', '.join(missing)}"
                                  " (docs/adding-a-target.md)", ledger.EXIT_USAGE)
    return target


def chain_of(rows, target, harness, against):
    """The champion, what it is timed against and the chained figure that claim rests on."""
    champion = ledger.find_champion(rows, target, harness)
    if champion is None:
        raise ledger.HarnessError(f"no champion for {target} under harness_sha {harness}: run "
                                  "`make run` first", ledger.EXIT_USAGE)
    at = rows.index(champion)
    baseline = next(r for r in reversed(rows[:at + 1]) if r["target"] == target
                    and r["status"] == "baseline" and r["harness_sha"] == harness)
    chained = float(champion["speedup_vs_baseline"])
    if against and against != baseline["kernel_sha"]:
        return Chain(champion, against, None)
    return Chain(champion, baseline["kernel_sha"], chained)


def finding(j):
    """What the direct ratio says of the win at one scale: it holds (the gate would keep it),
    falls below the gate, or turns into a loss (significant, and beyond the gate's floor)."""
    geo, lo, _ = j.geo
    if lo > 1 and geo >= 1 + common.MIN_GAIN:
        return f"turns into a loss (geomean {geo:.4f}, CI90 low {lo:.4f} > 1)"
    return "holds" if j.verdict == "keep" else f"below the gate ({j.reason})"


def time_scale(target, workloads, sources, rounds, cpus):
    """Champion against the other kernel, side by side on the last core: a Judgement."""
    spec = target.spec
    budget_end = time.monotonic() + SCALE_BUDGET_FACTOR * common.TIME_BUDGET_SECS
    pair = []
    try:
        for label, source in sources:
            pair.append(common.Contestant(label, source, spec.KERNEL_CLASS, target.folder,
                                          budget_end, cpus[-1]))
        for contestant in pair:
            contestant.receive(f"import of the {contestant.label} kernels.py")
        common.init_workloads(pair, workloads, spec)
        os.sched_setaffinity(0, set(cpus[:-1]) or {cpus[-1]})
        samples = common.time_side_by_side(pair, workloads, rounds, spec,
                                           np.random.default_rng())
        for contestant in pair:
            contestant.verify("the end of timing")
    finally:
        for contestant in pair:
            contestant.close()
        os.sched_setaffinity(0, set(cpus))
    return common.judge(samples, False, spec.UNIT, workloads,
                        getattr(spec, "MIN_GAIN", common.MIN_GAIN))


def chain_finding(chain, trial):
    """holds, overstates or understates: the chained ratio against the direct CI90 at the
    trial's scale, widened by the gate's floor (a difference the gate could not see)."""
    if chain.chained is None or trial is None:
        return "n/a"
    ratio, (_, lo, hi) = 1 / chain.chained, trial.judgement.geo
    if ratio < lo * (1 - common.MIN_GAIN):
        return "overstates"
    return "understates" if ratio > hi * (1 + common.MIN_GAIN) else "holds"


def report(target, chain, results, skipped, trial, seconds, harness, machine):
    """The table (stdout), and the block and row: built once, from the numbers."""
    name = target.spec.CONFIRM_SCALE_NAME
    chained = "n/a" if chain.chained is None else f"{chain.chained:.4f}"
    print(f"{target.name}: champion {chain.champion['kernel_sha']} against {chain.against} "
          f"(chained speedup {chained})")
    print(f"{'scale':>16}  {'geomean':>8}  {'ci90':18}  {'speedup':>8}  the win")
    for s in results:
        geo, lo, hi = s.judgement.geo
        mark = " *" if s.scale == target.spec.TRIAL_SCALE else "  "
        print(f"{f'{name}={s.scale}':>14}{mark}  {geo:8.4f}  [{lo:.4f}, {hi:.4f}]  "
              f"{1 / geo:7.3f}x  {s.finding}")
    print("(* the trial's scale)")
    for s in results:
        for combo, (ratio, lo, hi) in s.judgement.combos.items():
            print(f"{f'{name}={s.scale}':>14}  {combo:20} {ratio:.4f} [{lo:.4f}, {hi:.4f}]")
    chain_says = chain_finding(chain, trial)
    losses = [f"{name}={s.scale}" for s in results if s.finding.startswith("turns")]
    below = [f"{name}={s.scale}" for s in results if s.finding.startswith("below")]
    summary = "; ".join(filter(None, (
        f"chain {chain_says}" if chain_says != "n/a" else "",
        f"a loss at {', '.join(losses)}" if losses else "",
        f"below the gate at {', '.join(below)}" if below else "",
        "the win holds at every scale" if results and not losses and not below else "",
        *(f"{name}={scale} skipped: {why}" for scale, why in skipped))))
    block = {"target": target.name, "status": "confirm", "champion_sha":
             chain.champion["kernel_sha"], "against_sha": chain.against,
             "chained_speedup": chained, "chain": chain_says, "scale_name": name}
    if trial is not None:
        block["direct_speedup"] = f"{1 / trial.judgement.geo[0]:.4f}"
    for s in results:
        geo, lo, hi = s.judgement.geo
        block[f"scale_{s.scale}"] = (f"geomean {geo:.4f} ci90 [{lo:.4f}, {hi:.4f}] speedup "
                                     f"{1 / geo:.4f} win {s.finding}")
        for combo, (ratio, lo, hi) in s.judgement.combos.items():
            block[f"scale_{s.scale}_combo_{combo}"] = f"ratio {ratio:.4f} ci90 [{lo:.4f}, {hi:.4f}]"
    block.update(findings=summary, total_seconds=f"{seconds:.1f}", harness_sha=harness,
                 machine=machine)
    j = trial.judgement if trial else None
    row = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "target": target.name, "commit": (ledger.git("rev-parse", "--short", "HEAD")
                                             or b"none").decode().strip(),
           "machine": machine, "harness_sha": harness, "kernel_sha": chain.champion["kernel_sha"],
           "champion_sha": chain.against, "status": "confirm",
           "total_seconds": f"{seconds:.1f}",
           "description": "confirm: " + ", ".join(
               f"{name}={s.scale} {s.judgement.geo[0]:.4f}" for s in results) + f"; {summary}"}
    if j is not None:
        row.update(geomean_ratio=f"{j.geo[0]:.4f}", ratio_ci90=f"{j.geo[1]:.4f}-{j.geo[2]:.4f}",
                   worst_combo=j.worst, worst_ratio=f"{j.combos[j.worst][0]:.4f}",
                   geomean_us=f"{j.geomean_us:.1f}")
    return block, row


def main(argv=None):
    parser = common.UsageParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="pq_l2")
    parser.add_argument("--against", default=os.environ.get("CONFIRM_AGAINST", ""),
                        help="kernel_sha of a snapshot (default: the chain's baseline)")
    parser.add_argument("--results", default=str(ledger.RESULTS_PATH), type=Path)
    parser.add_argument("--scales", type=int, nargs="*", help="a subset of CONFIRM_SCALES")
    parser.add_argument("--rounds", type=common.at_least_two, help="timed rounds per scale")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        target = load_target(args.target)
        spec = target.spec
        rows = ledger.read_results(args.results)
        harness = ledger.harness_sha(target.name)
        chain = chain_of(rows, target.name, harness, args.against)
        sources = [(label, ledger.load_snapshot(args.results, target.name, sha)) for label, sha
                   in (("champion", chain.champion["kernel_sha"]), ("against", chain.against))]
        for (label, source), sha in zip(sources, (chain.champion["kernel_sha"], chain.against),
                                        strict=True):
            if source is None:
                raise ledger.HarnessError(f"{label} snapshot {sha} is missing or altered",
                                          ledger.EXIT_USAGE)
        scales = args.scales or spec.CONFIRM_SCALES
        unknown = sorted(set(scales) - set(spec.CONFIRM_SCALES))
        if unknown:
            raise ledger.HarnessError(f"--scales {unknown}: {target.name} confirms at "
                                      f"{spec.CONFIRM_SCALES}", ledger.EXIT_USAGE)
    except ledger.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    rounds = args.rounds or ROUNDS_FACTOR * spec.ROUNDS
    cpus = sorted(os.sched_getaffinity(0))
    machine, described = ledger.describe_machine(cpus[-1])
    _, trial_workloads, _ = spec.fixtures()
    results, skipped, fault = [], [], None
    for scale in scales:
        need, free = spec.confirm_memory(scale), psutil.virtual_memory().available
        if need > MEMORY_SHARE * free:
            skipped.append((scale, f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} available"))
            ledger.progress(f"{spec.CONFIRM_SCALE_NAME}={scale}: {skipped[-1][1]}: skipped")
            continue
        ledger.progress(f"{spec.CONFIRM_SCALE_NAME}={scale}: {rounds} rounds")
        workloads = spec.confirm_workloads(trial_workloads, scale)
        try:
            judgement = time_scale(target, workloads, sources, rounds, cpus)
        except ledger.TrialFault as e:
            fault = (e.status, f"{spec.CONFIRM_SCALE_NAME}={scale}: {e}")
            break
        results.append(Scale(scale, judgement, finding(judgement)))
    trial = next((s for s in results if s.scale == spec.TRIAL_SCALE), None)
    block, row = report(target, chain, results, skipped, trial,
                        time.monotonic() - started, harness, machine)
    if fault:
        block["message"] = fault[1]
        row["description"] = f"confirm failed: {fault[1]}"
    ledger.note_machine(args.results, machine, described)
    ledger.append_result(args.results, row)
    common.print_block(block)
    return ledger.STATUS_EXIT[fault[0]] if fault else ledger.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
