# SPDX-License-Identifier: MIT OR Apache-2.0
"""BENCHMARK: the judge under stress, in a scratch copy of the repository (the real tree and
its results.tsv are never touched). `.venv/bin/python stress.py` (a few minutes).

1. A kernel whose probe_top_k never returns, with the default deadlines: the trial must end
   within common.TIME_BUDGET_SECS + HANG_SLACK_SECS.
2. RUNS trials started at once against one results.tsv, a random KILLED of them SIGKILLed at
   random moments: every line must verify (read_results raises nothing, ignores nothing),
   every run not killed must exit with a trial status and own exactly one row, no
   description may appear twice, no row may belong to anything but these runs.
Prints a `---` block of figures; exits 1 if any check fails.
"""
import contextlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import common

REPO = common.REPO
TARGET = "pq_l2"
HONEST_KERNEL = REPO / "tests" / "exploits" / "honest_numpy.py"  # pure numpy, correct
HANGING_KERNEL = REPO / "tests" / "exploits" / "hang_probe.py"  # probe_top_k loops forever
HANG_SLACK_SECS = 10
RUNS = 20
KILLED = 8  # how many of the RUNS get a SIGKILL
KILL_WINDOW_SECS = 60.0  # each kill lands at a uniform random moment in [0, this): about
#                          the span of the parallel runs, so some land after a row is written
ROUNDS = "2"
RUN_TIMEOUT_SECS = 900  # a judge still running after this is itself a failure
TRIAL_EXITS = (common.EXIT_OK, common.EXIT_INCORRECT, common.EXIT_TIMEOUT, common.EXIT_CRASH)
COPY_IGNORE = (".git", ".venv", ".snapshots", ".cache", "results.tsv", ".results.key",
               "__pycache__", ".pytest_cache", ".ruff_cache")


def scratch_copy(root):
    """The repository without logs and caches, the virtualenv linked, the fixtures copied."""
    repo = root / "repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    (repo / ".venv").symlink_to(REPO / ".venv")
    names = subprocess.run(
        [sys.executable, "-c", "import inputs; print(*(p.name for p in inputs.cache_paths()))"],
        cwd=repo / TARGET, check=True, capture_output=True, text=True).stdout.split()
    (repo / ".cache" / TARGET).mkdir(parents=True)
    for name in names:
        if (REPO / ".cache" / TARGET / name).exists():
            shutil.copy(REPO / ".cache" / TARGET / name, repo / ".cache" / TARGET / name)
    subprocess.run([sys.executable, "-c", "import inputs; inputs.load_fixtures()"],
                   cwd=repo / TARGET, check=True)  # generated here if the real cache lacks it
    return repo


def judge(repo, kernel, results, desc):
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_DEADLINE_SCALE"}
    env["TMPDIR"] = str(results.parent)  # contestant workdirs of killed runs stay in scratch
    return subprocess.Popen(
        [sys.executable, f"{TARGET}/run_experiment.py", "--kernel", str(kernel), "--champion",
         str(HONEST_KERNEL), "--results", str(results), "--rounds", ROUNDS, "--desc", desc],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def block_status(stdout):
    lines = stdout.split("\n")
    tail = lines[len(lines) - lines[::-1].index("---"):] if "---" in lines else []
    return dict(line.split(": ", 1) for line in tail if ": " in line).get("status", "none")


def main():
    failures = []
    with tempfile.TemporaryDirectory(prefix="stress-") as scratch:
        scratch = Path(scratch)
        repo = scratch_copy(scratch)

        # 1. One hang, default deadlines.
        (scratch / "hang").mkdir()
        started = time.monotonic()
        hang = judge(repo, HANGING_KERNEL, scratch / "hang" / "results.tsv", "hang")
        hang_status = block_status(hang.communicate(timeout=RUN_TIMEOUT_SECS)[0])
        hang_seconds = time.monotonic() - started
        if hang_seconds > common.TIME_BUDGET_SECS + HANG_SLACK_SECS:
            failures.append(f"the hang took {hang_seconds:.1f} s")
        if (hang.returncode, hang_status) != (common.EXIT_TIMEOUT, "timeout"):
            failures.append(f"the hang ended with exit {hang.returncode}, status {hang_status}")

        # 2. Parallel runs on one log, some killed.
        (scratch / "parallel").mkdir()
        results = scratch / "parallel" / "results.tsv"
        descs = [f"stress run {i:02d}" for i in range(RUNS)]
        procs = {d: judge(repo, HONEST_KERNEL, results, d) for d in descs}
        kill_at = {d: random.uniform(0, KILL_WINDOW_SECS) for d in random.sample(descs, KILLED)}
        started = time.monotonic()
        for desc, moment in sorted(kill_at.items(), key=lambda item: item[1]):
            time.sleep(max(0.0, started + moment - time.monotonic()))
            procs[desc].send_signal(signal.SIGKILL)  # no-op if it already finished
        outcomes = {d: (p.communicate(timeout=RUN_TIMEOUT_SECS)[0], p.returncode)
                    for d, p in procs.items()}
        parallel_seconds = time.monotonic() - started
        killed = {d for d, (_, code) in outcomes.items() if code == -signal.SIGKILL}
        completed = {d for d, (_, code) in outcomes.items() if code in TRIAL_EXITS}
        for desc, (_, code) in sorted(outcomes.items()):
            if desc not in killed | completed:
                failures.append(f"{desc}: exit {code} (no trial status)")

        lines = results.read_text().splitlines() if results.exists() else []
        malformed = sum(len(line.split("\t")) != len(common.RESULTS_COLUMNS) for line in lines)
        notes = io.StringIO()
        try:
            with contextlib.redirect_stderr(notes):
                rows = common.read_results(results)
        except common.HarnessError as e:
            failures.append(f"read_results: {e}")
            rows = []
        ignored = [n for n in notes.getvalue().splitlines() if n]
        malformed += len(ignored)
        failures += [f"read_results: {n}" for n in ignored]
        if rows and len(rows) != len(lines) - 1:
            failures.append(f"{len(lines) - 1} lines after the header, {len(rows)} rows read")
        counts = {d: 0 for d in descs}
        for row in rows:
            if row["description"] not in counts:
                failures.append(f"a row no run wrote: {row['description']!r}")
            else:
                counts[row["description"]] += 1
        failures += [f"{d}: {n} rows" for d, n in counts.items() if n > 1]
        failures += [f"{d}: exited {outcomes[d][1]} without a row" for d in completed
                     if counts[d] == 0]

    common.print_block({
        "hang_seconds": f"{hang_seconds:.1f}", "hang_status": hang_status, "runs": RUNS,
        "killed": len(killed), "completed": len(completed), "rows": len(rows),
        "malformed_lines": malformed, "killed_with_row": sum(counts[d] for d in killed),
        "statuses": " ".join(f"{status}={count}" for status, count in sorted(
            Counter(block_status(outcomes[d][0]) for d in completed).items())),
        "parallel_seconds": f"{parallel_seconds:.1f}",
        "failures": len(failures)})
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
