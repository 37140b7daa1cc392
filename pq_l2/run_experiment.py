# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: one pq_l2 trial, the judge. `make run TARGET=pq_l2 DESC="what I tried"`.

Checks the candidate kernels.py against the oracle, times it side by side with the champion,
appends one row to results.tsv and prints the result block. The rules are in HARNESS.md.
This process never imports kernels.py: kernels run in contestant processes that receive
inputs and return raw arrays (common.Contestant); the judge times them from outside.
"""
import argparse
import importlib.util
import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402
import inputs  # noqa: E402
import reference  # noqa: E402

TARGET = HERE.name
KERNEL_PATH = HERE / "kernels.py"
KERNEL_CLASS = "PqKernel"
KERNEL_METHOD = "probe_top_k"
ROUNDS = 16  # timed rounds; each round times every combo once per kernel
WARMUP_ROUNDS = 1  # untimed: compiles and warms caches
QUERIES_PER_BATCH = 16  # fresh queries per timed batch (amortises the ~80 us call overhead)
IDLE_CPU_LIMIT_NS = 2_000_000  # CPU a waiting contestant may burn during the other's batch


def check_output(out, exact, k, shape):
    if len(out) != 2:
        return f"{KERNEL_METHOD} returned {len(out)} arrays, expected (ids, dists)"
    return reference.topk_consistent(out[0], out[1], exact, k, shape)


def check_battery(candidate, battery):
    """Every battery case against the oracle; the first failure is a TrialFault."""
    for number, case in enumerate(battery, start=1):
        shape, codebook, codes, k = case["shape"], case["codebook"], case["codes"], case["k"]
        where = (f"case {case['name']} (shape {tuple(shape)}, n={len(codes)}, "
                 f"distribution {case['distribution']}, k={k})")
        candidate.request(f"__init__ of {where}", "init", "battery", (shape, codebook, codes))
        calls = [(q, k) for q in case["queries"]]
        outs, _, _ = candidate.request(where, "call", "battery", KERNEL_METHOD, calls)
        for j, (query, out) in enumerate(zip(case["queries"], outs, strict=True)):
            problem = check_output(out, reference.exact_distances(codebook, codes, query), k,
                                   shape)
            if problem:
                raise common.TrialFault("fail", f"{where}, query {j}: {problem}")
        if number % 10 == 0 or number == len(battery):
            common.progress(f"correctness {number}/{len(battery)} cases")


def time_side_by_side(candidate, champion, workloads, rounds, rng):
    """Interleaved rounds, fresh queries each round; returns per-combo measurements."""
    run_seed = int(rng.integers(0, 2**63))  # fresh queries every run, unknown in advance
    for contestant in (candidate, champion):
        for w in workloads:
            contestant.request(f"__init__ of {w['name']}", "init", w["name"],
                               (w["shape"], w["codebook"], w["codes"]))
    stats = {w["name"]: {"log_ratios": [], "candidate_ns": [], "champion_ns": []}
             for w in workloads}
    first_order = {w["name"]: int(rng.integers(2)) for w in workloads}
    for r in range(WARMUP_ROUNDS + rounds):
        for index in rng.permutation(len(workloads)):
            w = workloads[index]
            name = w["name"]
            queries = inputs.draw_queries(w, QUERIES_PER_BATCH, common.mix_seeds(run_seed, name, r))
            calls = [(q, inputs.SPEED_K) for q in queries]
            pair = (candidate, champion) if (r + first_order[name]) % 2 else (champion, candidate)
            cpu, outs = {}, {}
            for runner, idle in (pair, pair[::-1]):
                idle_before = common.process_cpu_ns(idle.proc.pid)
                phase = f"timed batch {name} round {r}"
                outs[runner.label], cpu[runner.label], wall = runner.request(
                    phase, "call", name, KERNEL_METHOD, calls)
                idle_cpu = common.process_cpu_ns(idle.proc.pid) - idle_before
                if idle_cpu > IDLE_CPU_LIMIT_NS + wall // 10:
                    raise common.TrialFault("fail", f"{idle.label} kernel burned "
                                                    f"{idle_cpu / 1e6:.1f} ms CPU while idle in "
                                                    f"{phase}: work escaping the timer")
            spot = int(rng.integers(QUERIES_PER_BATCH))  # which timed output gets the oracle
            exact = reference.exact_distances(w["codebook"], w["codes"], queries[spot])
            for label, answers in outs.items():
                for j, out in enumerate(answers):
                    if j == spot:
                        problem = check_output(out, exact, inputs.SPEED_K, w["shape"])
                    else:
                        problem = check_output_shape(out)
                    if problem:
                        raise common.TrialFault("fail", f"{label} kernel wrong while timed: "
                                                        f"{name} round {r} query {j}: {problem}")
            if r >= WARMUP_ROUNDS:
                s = stats[name]
                s["log_ratios"].append(math.log(cpu["candidate"] / cpu["champion"]))
                s["candidate_ns"].append(cpu["candidate"])
                s["champion_ns"].append(cpu["champion"])
        if r % 6 == 0:
            common.progress(f"timing round {r + 1}/{WARMUP_ROUNDS + rounds}")
    return stats


def check_output_shape(out):
    """Cheap checks for timed outputs that are not spot-checked."""
    want = inputs.SPEED_K
    if len(out) != 2 or any(a.shape != (want,) for a in out):
        return f"outputs have shapes {[a.shape for a in out]}, expected two of ({want},)"
    if out[0].dtype.kind not in "iu" or out[1].dtype != np.float32:
        return f"output dtypes {out[0].dtype}, {out[1].dtype}; expected integer, float32"
    if not np.all(np.isfinite(out[1])) or np.any(np.diff(out[1]) < 0):
        return "dists not finite and ascending"
    return None


def check_untouched(harness, fixture_sha):
    """Harness files and the fixture cache must hash as they did before the kernels ran."""
    if common.harness_sha() != harness:
        raise common.TrialFault("fail", "harness files changed during the run (harness_sha "
                                        f"{harness} -> {common.harness_sha()})")
    if not inputs.cache_intact(fixture_sha):
        raise common.TrialFault("fail", "the fixture cache changed during the run: it was "
                                        "deleted and will be regenerated")


def committed_kernel():
    """kernels.py as committed at HEAD, or None without git."""
    return common.git("show", f"HEAD:{KERNEL_PATH.relative_to(common.REPO)}")


def pick_champion(args, rows, harness, candidate_source):
    """(champion source, champion sha, its speedup_vs_baseline, is_baseline, candidate)."""
    if args.champion:
        source = Path(args.champion).read_bytes()
        return source, common.sha256_hex(source)[:12], 1.0, False, candidate_source
    row = common.find_champion(rows, TARGET, harness)
    if row is not None:
        source = common.load_snapshot(args.results, TARGET, row["kernel_sha"])
        if source is not None:
            return source, row["kernel_sha"], float(row["speedup_vs_baseline"]), False, \
                candidate_source
        common.progress(f"champion snapshot {row['kernel_sha']} is missing or altered: "
                        "re-baselining")
    elif any(r["target"] == TARGET and r["status"] in common.CHAMPION_STATUSES for r in rows):
        common.progress(f"the harness changed (harness_sha now {harness}): earlier rows are not "
                        "comparable, re-baselining")
    baseline = candidate_source
    if Path(args.kernel).resolve() == KERNEL_PATH:
        baseline = committed_kernel()
        if baseline is None:
            common.progress("no git commit to take the baseline from: using the working "
                            "kernels.py")
            baseline = candidate_source
        if baseline != candidate_source:
            common.progress("baseline = kernels.py as committed at HEAD; your edits are not "
                            "evaluated in this run: run again to try them")
    return baseline, common.sha256_hex(baseline)[:12], 1.0, True, baseline


def summarise(stats):
    combos, summaries, lines = {}, [], {}
    for name, s in stats.items():
        summary = common.log_ratio_summary(s["log_ratios"])
        summaries.append(summary)
        ratio, lo, hi = common.ratio_with_ci(*summary)
        combos[name] = (ratio, lo, hi)
        cand_us = float(np.median(s["candidate_ns"])) / QUERIES_PER_BATCH / 1e3
        champ_us = float(np.median(s["champion_ns"])) / QUERIES_PER_BATCH / 1e3
        lines[f"combo_{name}"] = (f"ratio {ratio:.4f} ci90 [{lo:.4f}, {hi:.4f}] "
                                  f"candidate_us {cand_us:.1f} champion_us {champ_us:.1f}")
        s["candidate_us"] = cand_us
    return combos, summaries, lines


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--desc", default=os.environ.get("DESC", ""))
    parser.add_argument("--check", action="store_true", help="correctness only, no row")
    parser.add_argument("--revert", action="store_true", help="put the champion in kernels.py")
    parser.add_argument("--kernel", default=str(KERNEL_PATH), help="candidate kernel file")
    parser.add_argument("--champion", help="champion kernel file (default: from results.tsv)")
    parser.add_argument("--results", default=str(common.RESULTS_PATH), type=Path)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    return parser.parse_args()


def revert(args):
    rows = common.read_results(args.results)
    for row in reversed(rows):
        if row["target"] == TARGET and row["status"] in common.CHAMPION_STATUSES:
            source = common.load_snapshot(args.results, TARGET, row["kernel_sha"])
            if source is None:
                raise common.HarnessError(f"snapshot {row['kernel_sha']} is missing or altered")
            tmp = KERNEL_PATH.with_suffix(".tmp")
            tmp.write_bytes(source)
            os.replace(tmp, KERNEL_PATH)
            print(f"kernels.py <- champion {row['kernel_sha']} ({row['status']}: "
                  f"{row['description']})")
            return common.EXIT_OK
    raise common.HarnessError(f"no champion for {TARGET} in {args.results} yet", common.EXIT_USAGE)


def trial(args, started):
    desc = common.clean_field(args.desc)
    if desc != args.desc.strip():
        common.progress("DESC had tabs or newlines: they are logged as spaces")
    rows = common.read_results(args.results)
    harness = common.harness_sha()
    try:
        candidate_source = Path(args.kernel).read_bytes()
    except OSError as e:
        raise common.HarnessError(f"cannot read the kernel: {e}", common.EXIT_USAGE) from None
    if args.check:  # the working file as it is; no champion, no row
        champion_source, champion_sha, champion_speedup, is_baseline = None, "", 1.0, False
    else:
        champion_source, champion_sha, champion_speedup, is_baseline, candidate_source = \
            pick_champion(args, rows, harness, candidate_source)
    kernel_sha = common.save_snapshot(args.results, TARGET, candidate_source)
    battery, workloads, fixture_sha = inputs.load_fixtures()
    budget_end = time.monotonic() + common.TIME_BUDGET_SECS
    block = {"target": TARGET, "status": "", "correctness": "not run", "verdict": "discard"}
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
                                         budget_end, cpus[0])  # compiles beside the battery
            contestants.append(champion)
            champion.receive("import of the champion kernels.py")
            warm = workloads[0]
            champion.request("__init__ of the champion", "init", warm["name"],
                             (warm["shape"], warm["codebook"], warm["codes"]))
            champion.send("call", warm["name"], KERNEL_METHOD,  # compiles beside the battery
                          [(inputs.draw_queries(warm, 1, 0)[0], inputs.SPEED_K)])
        candidate.receive("import of kernels.py")
        check_battery(candidate, battery)
        candidate.request("the input check after correctness", "verify")
        block["correctness"] = "pass"
        if args.check:
            check_untouched(harness, fixture_sha)
            block.update(status="checked", verdict="none")
            return block, common.EXIT_OK, None
        champion.receive("the champion's first call")
        champion.pin(bench_cpu)
        if len(cpus) > 1:
            os.sched_setaffinity(0, set(cpus[:-1]))  # the judge stays off the benchmark core
        common.progress(f"timing {len(workloads)} combos x {args.rounds} rounds, "
                        f"interleaved with the champion {champion_sha}")
        stats = time_side_by_side(candidate, champion, workloads, args.rounds,
                                  np.random.default_rng())
        for contestant in contestants:
            contestant.request("the input check after timing", "verify")
        peak_mb = candidate.peak_rss_mb()
        check_untouched(harness, fixture_sha)
    except common.TrialFault as fault:
        if block["correctness"] == "not run" and fault.status == "fail":
            block["correctness"] = "fail"
        block.update(status=fault.status, message=str(fault))
        if args.check:
            return block, common.STATUS_EXIT[fault.status], None
        return finish(args, block, rows, harness, kernel_sha, champion_sha, desc, started,
                      common.STATUS_EXIT[fault.status])
    finally:
        for contestant in contestants:
            contestant.close()
    combos, summaries, combo_lines = summarise(stats)
    geo, geo_lo, geo_hi = common.combined_geomean(summaries)
    verdict, reason = common.decide(is_baseline, geo, geo_lo, geo_hi, combos)
    worst = max(combos, key=lambda name: combos[name][0])
    block.update(
        status=verdict, verdict=verdict, verdict_reason=reason, geomean_ratio=f"{geo:.4f}",
        ratio_ci90=f"[{geo_lo:.4f}, {geo_hi:.4f}]", worst_combo=worst,
        worst_ratio=f"{combos[worst][0]:.4f}",
        speedup_vs_baseline=f"{champion_speedup / geo if not is_baseline else 1.0:.4f}",
        geomean_us_per_query=f"{common.geomean([s['candidate_us'] for s in stats.values()]):.1f}",
        peak_mem_mb=f"{peak_mb:.1f}")
    block.update(combo_lines)
    return finish(args, block, rows, harness, kernel_sha, champion_sha, desc, started,
                  common.EXIT_OK)


def finish(args, block, rows, harness, kernel_sha, champion_sha, desc, started, code):
    block["total_seconds"] = f"{time.monotonic() - started:.1f}"
    block.update(kernel_sha=kernel_sha, champion_sha=champion_sha, harness_sha=harness)
    commit = common.git("rev-parse", "--short", "HEAD")
    row = {
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target": TARGET, "commit": commit.decode().strip() if commit else "none",
        "harness_sha": harness, "kernel_sha": kernel_sha, "champion_sha": champion_sha,
        "status": block["status"], "geomean_ratio": block.get("geomean_ratio", ""),
        "worst_ratio": block.get("worst_ratio", ""),
        "speedup_vs_baseline": block.get("speedup_vs_baseline", ""),
        "geomean_us": block.get("geomean_us_per_query", ""),
        "peak_mem_mb": block.get("peak_mem_mb", ""), "total_seconds": block["total_seconds"],
        "description": desc or "(no description)",
    }
    common.append_result(args.results, row)
    return block, code, row


def main():
    args = parse_args()
    started = time.monotonic()
    if importlib.util.find_spec("numba") is None:
        print("error: numba is not installed in this Python: run `make setup`", file=sys.stderr)
        return common.EXIT_USAGE
    try:
        if args.revert:
            return revert(args)
        block, code, _ = trial(args, started)
    except common.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    if args.check:
        block["total_seconds"] = f"{time.monotonic() - started:.1f}"
    common.print_block(block)
    return code


if __name__ == "__main__":
    sys.exit(main())
