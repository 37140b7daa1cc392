# SPDX-License-Identifier: MIT OR Apache-2.0
"""Shared test plumbing: import paths, the cached fixtures once per session, trial runner."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TARGET_DIR = REPO / "pq_l2"
BASELINE_KERNEL = TARGET_DIR / "kernels.py"
JUDGE = "pq_l2/run_experiment.py"
TRIAL_ROUNDS = "2"  # the fewest rounds that still give a CI: trials stay a few seconds
TRIAL_TIMEOUT_SECS = 120  # a hung judge fails its test instead of hanging the suite



def pytest_configure(config):
    # Contestants fork from the test process and exec at once, so lance's fork-safety warning
    # (lance is imported by the conformance test) does not apply to them.
    config.addinivalue_line("filterwarnings", "ignore:lance is not fork-safe")


# The judge's modules import as top-level names (common, inputs, reference), as it does.
for path in (REPO, TARGET_DIR):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(scope="session")
def fixtures():
    """(battery, speed workloads, content sha) from the shared cache, loaded once."""
    import inputs

    return inputs.load_fixtures()


@pytest.fixture(scope="session")
def battery(fixtures):
    return fixtures[0]


def parse_block(stdout):
    """The `key: value` lines after the last `---` line of the judge's stdout."""
    lines = stdout.splitlines()
    if "---" not in lines:
        return {}
    start = len(lines) - lines[::-1].index("---")
    return dict(line.split(": ", 1) for line in lines[start:] if ": " in line)


def run_trial(kernel, results, champion=BASELINE_KERNEL, extra=()):
    """One judge run in a fresh process, as the loop runs it. Returns (completed, block)."""
    cmd = [sys.executable, JUDGE, "--kernel", str(kernel), "--results", str(results),
           "--rounds", TRIAL_ROUNDS, "--desc", "pytest trial", *extra]
    if champion is not None:
        cmd += ["--champion", str(champion)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          timeout=TRIAL_TIMEOUT_SECS)
    return done, parse_block(done.stdout)
