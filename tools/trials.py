# SPDX-License-Identifier: MIT OR Apache-2.0
"""TOOL: trials run from the outside, as the loop runs them: a scratch copy of the tree, one
judge run in its own process, the last result block of its stdout.

Shared by the tests, calibrate.py, stress.py and confirm.py, so that all of them read a
block, start a judge and copy the tree the same way.
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
# Never copied into a scratch tree: logs, caches, the row key, the virtualenv (linked instead).
SCRATCH_IGNORE = (".git", ".venv", ".cache", ".snapshots", "results.tsv", "results.png",
                  ".results.key", "__pycache__", ".pytest_cache", ".ruff_cache", "lessons.md")
# What a scratch tree builds before its first trial: the fixture cache, and pq_l2's oracle
# compile (numba, cached beside reference.py: 3-4 s of the first trial's budget otherwise,
# under the tests' shortened deadlines).
WARM_UP = {None: "import inputs; inputs.load_fixtures()",
           "pq_l2": "import inputs, reference; _, w, _ = inputs.load_fixtures(); "
                    "reference.smallest(reference.exact_distances(w[0]['codebook'], "
                    "w[0]['codes'], inputs.draw_queries(w[0], 1, 0)[0]), 10)"}
TRIAL_TIMEOUT_SECS = 900  # a judge still running after this is itself a failure


class Trial(NamedTuple):
    code: int
    stdout: str  # decoded as is: no newline translation, so a \r stays visible
    stderr: str
    block: dict  # the last result block, lines split on \n as grep splits them
    wall: float  # seconds
    results: Path  # the results.tsv it logged to


def last_block(lines):
    """The `key: value` pairs after the last `---` line."""
    if "---" not in lines:
        return {}
    start = len(lines) - lines[::-1].index("---")
    return dict(line.split(": ", 1) for line in lines[start:] if ": " in line)


def block_keys(stdout):
    """The keys of the last block, in order."""
    lines = stdout.split("\n")
    start = len(lines) - lines[::-1].index("---")
    return [line.split(": ", 1)[0] for line in lines[start:] if line]


def scratch_tree(dest, fixtures_for=(), caches=("fixtures-",)):
    """A copy of the repository at `dest` without logs and caches, the virtualenv linked and
    the fixture caches whose names start with one of `caches` copied (other scales' caches
    are large: make confirm's); the fixtures of `fixtures_for` targets are built there if
    missing."""
    dest = Path(dest)
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(*SCRATCH_IGNORE))
    if (REPO / ".venv").exists():
        (dest / ".venv").symlink_to(REPO / ".venv")
    for path in (REPO / ".cache").glob("*/*"):
        if path.name.startswith(caches):
            (dest / path.relative_to(REPO).parent).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest / path.relative_to(REPO))
    for target in fixtures_for:
        subprocess.run([sys.executable, "-c", WARM_UP.get(target, WARM_UP[None])],
                       cwd=dest / target, check=True, capture_output=True)
    return dest


def judge_command(target, kernel, results, champion=None, rounds=None, desc="trial", extra=()):
    cmd = [sys.executable, f"{target}/run_experiment.py", "--kernel", str(kernel), "--results",
           str(results), "--desc", desc, *extra]
    if champion is not None:
        cmd += ["--champion", str(champion)]
    if rounds is not None:
        cmd += ["--rounds", str(rounds)]
    return cmd


def run_trial(tree, target, kernel, results, champion=None, rounds=None, desc="trial",
              env=None, extra=(), timeout=TRIAL_TIMEOUT_SECS):
    """One judge run in `tree`, logging to `results`. `env` adds to the environment."""
    started = time.monotonic()
    done = subprocess.run(judge_command(target, kernel, results, champion, rounds, desc, extra),
                          cwd=tree, env={**os.environ, **(env or {})}, capture_output=True,
                          timeout=timeout)
    stdout = done.stdout.decode(errors="replace")
    return Trial(done.returncode, stdout, done.stderr.decode(errors="replace"),
                 last_block(stdout.split("\n")), time.monotonic() - started, Path(results))
