# SPDX-License-Identifier: MIT OR Apache-2.0
"""tools/confirm.py: the champion timed directly against its chain's baseline, at a small scale
(fast: plain numpy kernels, the test tree's small batches)."""
import os
import subprocess
import sys

import pytest
from conftest import TRIAL_TIMEOUT_SECS
from trials import last_block

import ledger

EXPLOITS = os.path.join(os.path.dirname(__file__), "exploits")
HONEST = os.path.join(EXPLOITS, "honest_numpy.py")
SMALL = "1000"  # pq_l2's smallest confirm scale: fixtures in a second
WRONG_AT_SMALL = '''
import numpy as np

class PqKernel(PqKernel):
    def probe_top_k(self, query, k):
        if len(self.flat) == 1000:
            return np.arange(k), np.zeros(k, np.float32)
        return super().probe_top_k(query, k)
'''


def chain(tree, results, champion_source):
    """results.tsv with a baseline (the honest numpy kernel) and a keep (champion_source)."""
    harness = ledger.harness_sha("pq_l2", tree)
    base = open(HONEST, "rb").read()
    for status, source, speedup in (("baseline", base, "1.0000"),
                                    ("keep", champion_source, "1.2500")):
        sha = ledger.save_snapshot(results, "pq_l2", source)
        ledger.append_result(results, {"target": "pq_l2", "harness_sha": harness,
                                       "kernel_sha": sha, "champion_sha": sha,
                                       "status": status, "speedup_vs_baseline": speedup})
    return ledger.sha256_hex(base)[:12], ledger.sha256_hex(champion_source)[:12]


def confirm(tree, results, *extra):
    done = subprocess.run([sys.executable, "tools/confirm.py", "--target", "pq_l2", "--results",
                           str(results), "--rounds", "2", *extra], cwd=tree, capture_output=True,
                          text=True, timeout=TRIAL_TIMEOUT_SECS)
    return done, last_block(done.stdout.split("\n"))


def test_confirm_times_the_champion_against_its_baseline(test_tree, tmp_path):
    results = tmp_path / "results.tsv"
    baseline, champion = chain(test_tree, results, open(HONEST, "rb").read() + b"# kept\n")
    done, block = confirm(test_tree, results, "--scales", SMALL)
    assert done.returncode == 0, done.stderr[-2000:]
    assert block["status"] == "confirm" and block["champion_sha"] == champion
    assert block["against_sha"] == baseline and block["chained_speedup"] == "1.2500"
    geomean = float(block[f"scale_{SMALL}"].split()[1])
    assert 0.8 < geomean < 1.25  # the same code, timed against itself
    assert f"scale_{SMALL}_combo_768x96_sparse" in block
    assert block["chain"] == "n/a"  # the trial's scale was not run
    rows = ledger.read_results(results)
    assert [r["status"] for r in rows] == ["baseline", "keep", "confirm"]
    assert rows[-1]["kernel_sha"] == champion and rows[-1]["champion_sha"] == baseline
    assert rows[-1]["speedup_vs_baseline"] == "" and rows[-1]["machine"] == block["machine"]
    assert ledger.find_champion(rows, "pq_l2", rows[0]["harness_sha"]) is rows[1]  # not a champion


def test_a_kernel_wrong_only_at_another_scale_is_caught(test_tree, tmp_path):
    results = tmp_path / "results.tsv"
    chain(test_tree, results, open(HONEST, "rb").read() + WRONG_AT_SMALL.encode())
    done, block = confirm(test_tree, results, "--scales", SMALL)
    assert done.returncode == ledger.EXIT_INCORRECT, done.stdout[-2000:]
    assert block["message"].startswith(f"n={SMALL}: champion kernel wrong while timed")
    assert ledger.read_results(results)[-1]["description"].startswith("confirm failed: n=1000")


@pytest.mark.parametrize("extra, says", [
    (("--against", "0123456789ab"), "against snapshot 0123456789ab is missing"),
    (("--scales", "12345"), "--scales [12345]"),
])
def test_bad_requests_are_usage_errors(test_tree, tmp_path, extra, says):
    results = tmp_path / "results.tsv"
    chain(test_tree, results, open(HONEST, "rb").read() + b"# kept\n")
    done, _ = confirm(test_tree, results, *extra)
    assert done.returncode == ledger.EXIT_USAGE and says in done.stderr
    assert len(ledger.read_results(results)) == 2  # no row


def test_without_a_champion_there_is_nothing_to_confirm(test_tree, tmp_path):
    done, _ = confirm(test_tree, tmp_path / "results.tsv")
    assert done.returncode == ledger.EXIT_USAGE and "no champion for pq_l2" in done.stderr
