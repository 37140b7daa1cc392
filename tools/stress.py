# SPDX-License-Identifier: MIT OR Apache-2.0
"""BENCHMARK: the judge under stress, in a scratch copy of the repository (the real tree and
its results.tsv are never touched). `make stress` (a few minutes).

1. A kernel whose probe_top_k never returns, with the default deadlines: the trial must end
   within common.TIME_BUDGET_SECS + HANG_SLACK_SECS.
2. RUNS trials started at once against one results.tsv, a random KILLED of them SIGKILLed at
   random moments: every line must verify (read_results raises nothing, ignores nothing),
   every run not killed must exit with a trial status and own exactly one row, no
   description may appear twice, no row may belong to anything but these runs.
3. RARE_TRIALS trials of a kernel wrong on one query in 200, at random, on the real timed
   workloads: every one must fail.
Prints a `---` block of figures; exits 1 if any check fails.
"""
import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import trials

sys.path.insert(0, str(trials.REPO))
import common  # noqa: E402
import ledger  # noqa: E402

TARGET = "pq_l2"
HONEST_KERNEL = trials.REPO / "tests" / "exploits" / "honest_numpy.py"  # pure numpy, correct
HANGING_KERNEL = trials.REPO / "tests" / "exploits" / "hang_probe.py"  # probe_top_k never returns
RARELY_WRONG_KERNEL = trials.REPO / "tests" / "exploits" / "wrong_rarely.py"  # 1 query in 200
RARE_TRIALS = 20
HANG_SLACK_SECS = 10
RUNS = 20
KILLED = 8  # how many of the RUNS get a SIGKILL
KILL_WINDOW_SECS = 60.0  # each kill lands at a uniform random moment in [0, this): about
#                          the span of the parallel runs, so some land after a row is written
ROUNDS = "2"
RUN_TIMEOUT_SECS = 900  # a judge still running after this is itself a failure
TRIAL_EXITS = (ledger.EXIT_OK, ledger.EXIT_INCORRECT, ledger.EXIT_TIMEOUT, ledger.EXIT_CRASH)


def judge(repo, kernel, results, desc, rounds=ROUNDS):
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_DEADLINE_SCALE"}
    env["TMPDIR"] = str(results.parent)  # contestant workdirs of killed runs stay in scratch
    cmd = trials.judge_command(TARGET, kernel, results, HONEST_KERNEL, rounds, desc)
    return subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def block_status(stdout):
    return trials.last_block(stdout.split("\n")).get("status", "none")


def main():
    failures = []
    with tempfile.TemporaryDirectory(prefix="stress-") as scratch:
        scratch = Path(scratch)
        repo = trials.scratch_tree(scratch / "repo", fixtures_for=(TARGET,))

        # 1. One hang, default deadlines.
        (scratch / "hang").mkdir()
        started = time.monotonic()
        hang = judge(repo, HANGING_KERNEL, scratch / "hang" / "results.tsv", "hang")
        hang_status = block_status(hang.communicate(timeout=RUN_TIMEOUT_SECS)[0])
        hang_seconds = time.monotonic() - started
        if hang_seconds > common.TIME_BUDGET_SECS + HANG_SLACK_SECS:
            failures.append(f"the hang took {hang_seconds:.1f} s")
        if (hang.returncode, hang_status) != (ledger.EXIT_TIMEOUT, "timeout"):
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
        malformed = sum(len(line.split("\t")) != len(ledger.RESULTS_COLUMNS) for line in lines)
        notes = io.StringIO()
        try:
            with contextlib.redirect_stderr(notes):
                rows = ledger.read_results(results)
        except ledger.HarnessError as e:
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

        # 3. A kernel wrong on a rare query, a trial's full rounds at a time.
        (scratch / "rare").mkdir()
        rare = []
        for i in range(RARE_TRIALS):
            run = judge(repo, RARELY_WRONG_KERNEL, scratch / "rare" / "results.tsv",
                        f"rare {i}", rounds=None)
            rare.append((block_status(run.communicate(timeout=RUN_TIMEOUT_SECS)[0]),
                         run.returncode))
        caught = sum(outcome == ("fail", ledger.EXIT_INCORRECT) for outcome in rare)
        if caught != RARE_TRIALS:
            failures.append(f"the rarely wrong kernel was failed in {caught} of {RARE_TRIALS}")

    common.print_block({
        "hang_seconds": f"{hang_seconds:.1f}", "hang_status": hang_status, "runs": RUNS,
        "killed": len(killed), "completed": len(completed), "rows": len(rows),
        "malformed_lines": malformed, "killed_with_row": sum(counts[d] for d in killed),
        "statuses": " ".join(f"{status}={count}" for status, count in sorted(
            Counter(block_status(outcomes[d][0]) for d in completed).items())),
        "parallel_seconds": f"{parallel_seconds:.1f}",
        "rarely_wrong_failed": f"{caught}/{RARE_TRIALS}", "failures": len(failures)})
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
