# SPDX-License-Identifier: MIT OR Apache-2.0
"""End to end: the judge in its own process, real contestant children, one row per run.
Kernel faults (crashes, hangs, cheats) are pinned by test_exploits.py."""
import hashlib
import re

import pytest
from conftest import BASELINE_KERNEL, run_trial
from trials import block_keys

import ledger

TARGET = "pq_l2"
DESCRIPTION = "pytest trial"  # what run_trial passes as --desc
SHA = re.compile(r"[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
METRIC_COLUMNS = ("geomean_ratio", "worst_ratio", "geomean_us", "peak_mem_mb")  # positive numbers
CI = re.compile(r"(\d+\.\d{4})-(\d+\.\d{4})")
COMPLETED = ("baseline", "keep", "discard")
NUM_COMBOS = 9
# HARNESS.md section 8: the block's keys, in order.
BLOCK_HEAD = ["target", "status", "correctness", "verdict"]
BLOCK_METRICS = ["verdict_reason", "geomean_ratio", "ratio_ci90", "worst_combo", "worst_ratio",
                 "speedup_vs_baseline", "geomean_us_per_query", "peak_mem_mb"]
BLOCK_TAIL = ["total_seconds", "kernel_sha", "champion_sha", "harness_sha", "machine"]
SPEEDUP_COLUMN = {"baseline": "speedup_vs_baseline", "keep": "speedup_vs_baseline",
                  "discard": "would_be_speedup"}  # a discard's figure never sorts as a champion

# A plain numpy kernel: honest, no compile, a few ms per battery case.
NUMPY_KERNEL = '''\
import numpy as np


class PqKernel:
    def __init__(self, shape, codebook, codes):
        self.codebook = codebook
        self.codes = codes
        self.rows = np.arange(codebook.shape[0])

    def probe_top_k(self, query, k):
        m, _, sub_dim = self.codebook.shape
        diff = query.reshape(m, 1, sub_dim) - self.codebook
        table = (diff * diff).sum(axis=2)
        dists = table[self.rows, self.codes].sum(axis=1, dtype=np.float32)
        ids = np.argsort(dists, kind="stable")[:k]
        return ids, dists[ids]
'''



def error_lines(trial):
    """stderr without the judge's `[harness]` progress lines (a git note, say)."""
    return [line for line in trial.stderr.strip().splitlines()
            if not line.startswith("[harness]")]


def override(body):
    """NUMPY_KERNEL with probe_top_k replaced by `body` (indented 8 spaces)."""
    return NUMPY_KERNEL + f'''

class PqKernel(PqKernel):
    def probe_top_k(self, query, k):
{body}
'''


RAISING = override("        raise RuntimeError('deliberate failure in probe_top_k')")
# The baseline with its scan loop starting at sub-vector 1: one sub-vector dropped.
SCAN_LOOP = "    for i in range(m):\n        row = table[i]"
DROPPED_SCAN_LOOP = "    for i in range(1, m):\n        row = table[i]"


def why(trial):
    """The end of the judge's output, for assertion messages."""
    return f"exit {trial.code}\n{trial.stdout[-1500:]}\n{trial.stderr[-1500:]}"


def write_kernel(tmp_path, source, name="kernels.py"):
    path = tmp_path / name
    path.write_bytes(source.encode() if isinstance(source, str) else source)
    return path


def assert_one_new_row(results, rows_before, block, kernel):
    """results.tsv gained exactly one complete row that agrees with the block."""
    raw = results.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.decode().splitlines()
    assert lines[0].split("\t") == list(ledger.RESULTS_COLUMNS)
    assert all(len(line.split("\t")) == len(ledger.RESULTS_COLUMNS) for line in lines)
    rows = ledger.read_results(results)
    assert len(rows) == rows_before + 1
    row = rows[-1]
    assert TIMESTAMP.fullmatch(row["timestamp"])
    assert row["target"] == TARGET and row["commit"]
    assert all(SHA.fullmatch(row[c]) for c in ("harness_sha", "kernel_sha", "champion_sha"))
    assert row["kernel_sha"] == hashlib.sha256(kernel.read_bytes()).hexdigest()[:12]
    assert float(row["total_seconds"]) > 0
    assert row["description"] == DESCRIPTION
    assert row["status"] == block["status"]
    for key in ("kernel_sha", "champion_sha", "harness_sha", "total_seconds", "machine"):
        assert row[key] == block[key]
    machines = (results.parent / ledger.MACHINES_FILE).read_text().splitlines()
    assert SHA.fullmatch(row["machine"]) and [line.split("\t")[0] for line in machines].count(
        row["machine"]) == 1  # recorded beside results.tsv, once
    if row["status"] in COMPLETED:
        assert all(float(row[c]) > 0 for c in METRIC_COLUMNS)
        lo, hi = (float(v) for v in CI.fullmatch(row["ratio_ci90"]).groups())
        assert lo <= float(row["geomean_ratio"]) <= hi
        assert row["worst_combo"] == block["worst_combo"]
        speedup = SPEEDUP_COLUMN[row["status"]]
        other = ({"speedup_vs_baseline", "would_be_speedup"} - {speedup}).pop()
        assert float(row[speedup]) > 0 and row[other] == ""
        assert row[speedup] == block[speedup]
    else:
        metrics = (*METRIC_COLUMNS, "ratio_ci90", "worst_combo", "speedup_vs_baseline",
                   "would_be_speedup")
        assert all(row[c] == "" for c in metrics)  # no metrics for a fault
    # every evaluated kernel is snapshotted beside results.tsv
    snapshot = results.parent / ".snapshots" / TARGET / f"{row['kernel_sha']}.py"
    assert snapshot.read_bytes() == kernel.read_bytes()
    return row


def assert_fault(trial, kernel, status, code):
    block = trial.block
    assert trial.code == code, why(trial)
    assert block["status"] == status and block["verdict"] == "discard"
    assert block_keys(trial.stdout) == BLOCK_HEAD + ["message"] + BLOCK_TAIL
    assert "Traceback" not in trial.stderr  # the judge itself did not crash
    assert_one_new_row(trial.results, 0, block, kernel)
    return block["message"]


# ---------------------------------------------------------------- completed trials
def test_unchanged_baseline_is_keep_or_discard(test_tree, tmp_path):
    kernel = write_kernel(tmp_path, BASELINE_KERNEL.read_bytes())
    results = tmp_path / "results.tsv"
    trial = run_trial(test_tree, kernel, results)
    block = trial.block
    assert trial.code == ledger.EXIT_OK, why(trial)
    assert block["status"] in ("keep", "discard") and block["verdict"] == block["status"]
    assert block["correctness"] == "pass"
    combos = [f"combo_{name}" for name in (
        f"{dim}x{m}_{dist}" for dim, m in ((128, 16), (256, 16), (768, 96))
        for dist in ("clustered", "uniform", "sparse"))]
    assert len(combos) == NUM_COMBOS
    metrics = [SPEEDUP_COLUMN[block["status"]] if k == "speedup_vs_baseline" else k
               for k in BLOCK_METRICS]
    assert block_keys(trial.stdout) == BLOCK_HEAD + metrics + combos + BLOCK_TAIL
    lo, hi = (float(v) for v in block["ratio_ci90"].strip("[]").split(", "))
    assert lo <= float(block["geomean_ratio"]) <= hi
    row = assert_one_new_row(results, 0, block, kernel)
    assert row["champion_sha"] == row["kernel_sha"]  # identical source, identical sha


def test_first_run_records_baseline_then_becomes_champion(test_tree, tmp_path):
    kernel = write_kernel(tmp_path, NUMPY_KERNEL)  # no compile: two trials stay quick
    results = tmp_path / "results.tsv"
    results.write_text("")  # an empty log: no champion yet
    trial = run_trial(test_tree, kernel, results, champion=None)
    block = trial.block
    assert trial.code == ledger.EXIT_OK, why(trial)
    assert block["status"] == "baseline" and block["speedup_vs_baseline"] == "1.0000"
    baseline = assert_one_new_row(results, 0, block, kernel)
    assert baseline["champion_sha"] == baseline["kernel_sha"]
    assert (tmp_path / ".snapshots" / TARGET / f"{baseline['kernel_sha']}.py").is_file()
    # The next run takes its champion from results.tsv and the snapshot.
    candidate = write_kernel(tmp_path, NUMPY_KERNEL + "# touched\n", "candidate.py")
    trial = run_trial(test_tree, candidate, results, champion=None)
    block = trial.block
    assert trial.code == ledger.EXIT_OK, why(trial)
    assert block["status"] in ("keep", "discard")
    row = assert_one_new_row(results, 1, block, candidate)
    assert row["champion_sha"] == baseline["kernel_sha"] != row["kernel_sha"]


# ---------------------------------------------------------------- faults
def test_wrong_kernel_fails_naming_the_case(test_tree, tmp_path):
    source = BASELINE_KERNEL.read_text()
    assert source.count(SCAN_LOOP) == 1  # the edit below must hit the scan loop
    kernel = write_kernel(tmp_path, source.replace(SCAN_LOOP, DROPPED_SCAN_LOOP))
    results = tmp_path / "results.tsv"
    trial = run_trial(test_tree, kernel, results)
    message = assert_fault(trial, kernel, "fail", ledger.EXIT_INCORRECT)
    assert trial.block["correctness"] == "fail"
    assert re.search(r"shape \(\d+, \d+, 256\)", message), message
    assert re.search(r"distribution \w+", message) and re.search(r"k=\d+", message), message
    assert "query" in message


# ---------------------------------------------------------------- no row
def test_damaged_results_is_a_usage_error(test_tree, tmp_path):
    kernel = write_kernel(tmp_path, NUMPY_KERNEL)
    results = tmp_path / "results.tsv"
    damaged = "\t".join(ledger.RESULTS_COLUMNS) + "\n" + "a\tb\tc\n"
    results.write_text(damaged)
    trial = run_trial(test_tree, kernel, results)
    assert trial.code == ledger.EXIT_USAGE, why(trial)
    assert trial.stdout == ""  # no block
    (line,) = error_lines(trial)
    assert line.startswith("error: ") and "line 2" in line
    assert results.read_text() == damaged


def test_check_passes_without_a_row(test_tree, tmp_path):
    kernel = write_kernel(tmp_path, NUMPY_KERNEL)
    results = tmp_path / "results.tsv"
    trial = run_trial(test_tree, kernel, results, extra=["--check"])
    block = trial.block
    assert trial.code == ledger.EXIT_OK, why(trial)
    assert block["status"] == "checked" and block["verdict"] == "none"
    assert block["correctness"] == "pass"
    assert not results.exists()
    sha = hashlib.sha256(kernel.read_bytes()).hexdigest()[:12]
    assert (tmp_path / ".snapshots" / TARGET / f"{sha}.py").is_file()  # checks snapshot too


def test_check_failure_without_a_row(test_tree, tmp_path):
    kernel = write_kernel(tmp_path, RAISING)
    results = tmp_path / "results.tsv"
    trial = run_trial(test_tree, kernel, results, extra=["--check"])
    block = trial.block
    assert trial.code == ledger.EXIT_CRASH, why(trial)
    assert block["status"] == "crash" and "deliberate failure" in block["message"]
    assert not results.exists()


@pytest.mark.parametrize("extra", [["--rounds", "many"], ["--no-such-flag"]])
def test_bad_arguments_are_usage_errors(test_tree, tmp_path, extra):
    kernel = write_kernel(tmp_path, NUMPY_KERNEL)
    trial = run_trial(test_tree, kernel, tmp_path / "results.tsv", extra=extra)
    assert trial.code == ledger.EXIT_USAGE, why(trial)


@pytest.mark.parametrize("missing", ["kernel", "champion"])
def test_missing_kernel_file_is_a_usage_error(test_tree, tmp_path, missing):
    present = write_kernel(tmp_path, NUMPY_KERNEL)
    absent = tmp_path / "absent.py"
    kernel, champion = (absent, present) if missing == "kernel" else (present, absent)
    results = tmp_path / "results.tsv"
    trial = run_trial(test_tree, kernel, results, champion=champion)
    assert trial.code == ledger.EXIT_USAGE, why(trial)
    (line,) = error_lines(trial)  # one clean line, no traceback
    assert line.startswith("error: ") and "absent.py" in line
    assert not results.exists()
