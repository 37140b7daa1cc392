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
# Trials in the tests check what the judge decides, not how precisely it times: in the test
# tree a timed batch is a tenth of the real one.
SMALL_BATCHES = {"pq_l2/run_experiment.py": ("BATCH_LOOKUPS = 20_000_000",
                                             "BATCH_LOOKUPS = 2_000_000"),
                 "bitpack/run_experiment.py": ("BATCH_VALUES = 1 << 21", "BATCH_VALUES = 1 << 19"),
                 "fts_bm25/run_experiment.py": ("BATCH_POSTINGS = 250_000",
                                                "BATCH_POSTINGS = 25_000")}

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


@pytest.fixture(scope="session")
def test_tree(tmp_path_factory, fixtures):
    """A scratch copy of the repository, with its fixture cache and small timed batches,
    shared by the tests' trials: a trial never sees edits made to the real tree meanwhile."""
    tree = trials.scratch_tree(tmp_path_factory.mktemp("tree") / "repo",
                               fixtures_for=("pq_l2", "fts_bm25"))
    for name, (real, small) in SMALL_BATCHES.items():
        text = (tree / name).read_text()
        assert real in text, f"{name} no longer says {real!r}"
        (tree / name).write_text(text.replace(real, small))
    return tree


def run_trial(tree, kernel, results, champion=BASELINE_KERNEL, extra=(), target="pq_l2"):
    """One judge run in `tree`, as the loop runs it: a trials.Trial."""
    return trials.run_trial(tree, target, kernel, results, champion, TRIAL_ROUNDS,
                            "pytest trial", extra=extra, timeout=TRIAL_TIMEOUT_SECS)
