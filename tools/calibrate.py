# SPDX-License-Identifier: MIT OR Apache-2.0
"""BENCHMARK: measures what the gate promises: trial speed, A/A noise, power. `make calibrate`.

Runs trials of a target in a private copy of the working tree (never touching results.tsv):
a first run with an empty fixture cache, warm runs, A/A runs of the unchanged kernel, and
power runs with kernels made slower by a known factor (a wrapper that busy-waits on the
thread's CPU clock, so each call costs exactly factor x its own time).
"""
import argparse
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import trials
KERNEL_CLASS = {"pq_l2": ("PqKernel", "probe_top_k"),  # class and timed method per target
                "bitpack": ("BitpackKernel", "decode")}
THIRD_SHAPE = {"pq_l2": "dim=768",  # how the wrapper recognises one shape from __init__ args
               "bitpack": "16"}  # repr(bits): the T = 16 shape
WARM_SECONDS_MAX = 15  # targets from the issue that calibrated the gate
FIRST_SECONDS_MAX = 60
AA_MAX_DEVIATION = 0.02
AA_MAX_MEDIAN_HALF_WIDTH = 0.01
PEAK_MEM_MB_MAX = 300

SLOWDOWN_WRAPPER = '''

# --- calibration wrapper: each call of the timed method costs `factor` x its own CPU time
import time as _calibration_time

_CalibrationBase = {cls}


class {cls}(_CalibrationBase):
    def __init__(self, *args):
        super().__init__(*args)
        self._factor = {matching} if {match!r} in repr(args[0]) else {other}

    def {method}(self, *args):
        start = _calibration_time.thread_time_ns()
        out = super().{method}(*args)
        end = start + int((_calibration_time.thread_time_ns() - start) * self._factor)
        while _calibration_time.thread_time_ns() < end:
            pass
        return out
'''


def slowed(source, target, other, matching=None):
    cls, method = KERNEL_CLASS[target]
    return source + SLOWDOWN_WRAPPER.format(
        cls=cls, method=method, match=THIRD_SHAPE[target], other=other,
        matching=other if matching is None else matching)


def trial(workdir, target, kernel, champion, results):
    done = trials.run_trial(workdir, target, kernel, results, champion=champion,
                            desc="calibration")
    if done.code != 0:
        sys.exit(f"calibration trial failed ({done.code}): {done.stdout[-600:]}"
                 f"{done.stderr[-600:]}")
    return {**done.block, "wall_seconds": done.wall}


def half_width(block):
    lo, hi = (float(x) for x in re.findall(r"[\d.]+", block["ratio_ci90"]))
    return (hi - lo) / 2


def series(name, blocks, want_verdict, extra=""):
    verdicts = [b["verdict"] for b in blocks]
    ratios = [float(b["geomean_ratio"]) for b in blocks]
    hits = sum(v == want_verdict for v in verdicts)
    print(f"{name}: {want_verdict} {hits}/{len(blocks)}; geomean_ratio min {min(ratios):.4f} "
          f"median {statistics.median(ratios):.4f} max {max(ratios):.4f}; median CI90 half-width "
          f"{statistics.median(half_width(b) for b in blocks):.4f}{extra}", flush=True)
    return hits, ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="pq_l2")
    parser.add_argument("--runs", type=int, default=10, help="runs per A/A and power series")
    args = parser.parse_args()
    target, runs = args.target, args.runs
    if target not in KERNEL_CLASS:
        sys.exit(f"error: calibrate knows no target {target!r}; known: {', '.join(KERNEL_CLASS)}")
    tmp = Path(tempfile.mkdtemp(prefix="calibrate-"))
    work = trials.scratch_tree(tmp / "tree")
    shutil.rmtree(work / ".cache", ignore_errors=True)  # the first run builds the fixtures
    kernel = work / target / "kernels.py"
    source = kernel.read_text()
    files = {}
    for name, text in (("slow10", slowed(source, target, 1.10)),
                       ("slow30", slowed(source, target, 1.30)),
                       ("guard_candidate", slowed(source, target, 1.0, matching=1.12)),
                       ("guard_champion", slowed(source, target, 1.30, matching=1.0))):
        files[name] = tmp / f"{name}.py"
        files[name].write_text(text)
    print(f"calibrating {target} in {work} ({runs} runs per series)", flush=True)

    first = trial(work, target, str(kernel), None, tmp / "first.tsv")
    print(f"first run (empty fixture cache): {first['wall_seconds']:.1f} s wall "
          f"(max {FIRST_SECONDS_MAX}); status {first['status']}", flush=True)
    warm = [trial(work, target, str(kernel), None, tmp / "first.tsv")["wall_seconds"]
            for _ in range(3)]
    print(f"warm run: median {statistics.median(warm):.1f} s wall over 3 (max "
          f"{WARM_SECONDS_MAX})", flush=True)

    aa = [trial(work, target, str(kernel), str(kernel), tmp / "aa.tsv") for _ in range(runs)]
    peak = max(float(b["peak_mem_mb"]) for b in aa)
    _, ratios = series("A/A", aa, "keep", f"; peak_mem_mb max {peak:.1f}")
    checks = [
        ("warm run <= 15 s", statistics.median(warm) <= WARM_SECONDS_MAX),
        ("first run <= 60 s", first["wall_seconds"] <= FIRST_SECONDS_MAX),
        ("A/A: no keep", all(b["verdict"] != "keep" for b in aa)),
        ("A/A: |ratio - 1| <= 0.02", max(abs(r - 1) for r in ratios) <= AA_MAX_DEVIATION),
        ("A/A: median CI half-width <= 0.01",
         statistics.median(half_width(b) for b in aa) <= AA_MAX_MEDIAN_HALF_WIDTH),
        (f"peak_mem_mb <= {PEAK_MEM_MB_MAX}", peak <= PEAK_MEM_MB_MAX),
    ]
    slow = [trial(work, target, str(files["slow10"]), str(kernel), tmp / "p1.tsv")
            for _ in range(runs)]
    hits, _ = series("candidate 10% slower", slow, "discard")
    checks.append(("10% slower: discard every run", hits == runs))
    fast = [trial(work, target, str(kernel), str(files["slow30"]), tmp / "p2.tsv")
            for _ in range(runs)]
    hits, ratios = series("champion 30% slower", fast, "keep")
    checks.append(("30% faster: keep every run", hits == runs))
    checks.append(("30% faster: geomean 0.77 +- 0.03", all(abs(r - 0.77) <= 0.03 for r in ratios)))
    guard = [trial(work, target, str(files["guard_candidate"]), str(files["guard_champion"]),
                   tmp / "p3.tsv") for _ in range(runs)]
    hits, _ = series("30% faster on two shapes, 12% slower on one", guard, "discard")
    by_guard = sum("worst-case guard" in b.get("verdict_reason", "") for b in guard)
    checks.append(("mixed: discarded by the worst-case guard every run", by_guard == runs))

    print("---")
    for name, ok in checks:
        print(f"{'pass' if ok else 'FAIL'}: {name}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
