# SPDX-License-Identifier: MIT OR Apache-2.0
"""Shared test plumbing: import paths, the cached fixtures once per session, the trial runner
(tools/trials.py, shared with calibrate, stress and confirm)."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TARGET_DIR = REPO / "pq_l2"
BASELINE_KERNEL = TARGET_DIR / "kernels.py"
TRIAL_ROUNDS = 2  # the fewest rounds that still give a CI: trials stay a few seconds
TRIAL_TIMEOUT_SECS = 120  # a hung judge fails its test instead of hanging the suite

# The judge's modules import as top-level names (common, inputs, reference), as it does.
for path in (REPO, TARGET_DIR, REPO / "tools"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import trials  # noqa: E402


def pytest_configure(config):
    # Contestants fork from the test process and exec at once, so lance's fork-safety warning
    # (lance is imported by the conformance test) does not apply to them.
    config.addinivalue_line("filterwarnings", "ignore:lance is not fork-safe")


@pytest.fixture(scope="session")
def fixtures():
    """(battery, speed workloads, content sha) from the shared cache, loaded once."""
    import inputs

    return inputs.load_fixtures()


@pytest.fixture(scope="session")
def battery(fixtures):
    return fixtures[0]


def run_trial(kernel, results, champion=BASELINE_KERNEL, extra=(), target="pq_l2"):
    """One judge run in the repository, as the loop runs it: a trials.Trial."""
    return trials.run_trial(REPO, target, kernel, results, champion, TRIAL_ROUNDS,
                            "pytest trial", extra=extra, timeout=TRIAL_TIMEOUT_SECS)
