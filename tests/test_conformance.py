# SPDX-License-Identifier: MIT OR Apache-2.0
"""The pq_l2 oracle agrees with real Lance, and the comparison can fail (pq_l2/conformance.py)."""
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("lance", reason="pylance not installed: "
                    ".venv/bin/pip install -r tools/requirements-conformance.txt")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pq_l2"))
import conformance  # noqa: E402
import reference  # noqa: E402


def test_quick_run_agrees(capsys):
    assert conformance.main(["--quick"]) == 0, capsys.readouterr()
    assert "summary:" in capsys.readouterr().out


def test_wrong_oracle_is_caught():
    name, vectors, codebook, codes, queries, k, shape = next(conformance.workloads_to_check(True))
    with tempfile.TemporaryDirectory() as tmp:
        answers, lance_codes = conformance.lance_search(vectors, codebook, queries, k, f"{tmp}/ds")

    def drop_last_sub_vector(codebook, codes, query):
        sub_dim = codebook.shape[2]
        return reference.exact_distances(codebook[:-1], codes[:, :-1], query[:-sub_dim])

    args = (codebook, lance_codes, queries, k, shape)
    assert conformance.disagreements(answers, reference.exact_distances, *args) == [], name
    wrong = conformance.disagreements(answers, drop_last_sub_vector, *args)
    assert len(wrong) == len(queries), wrong
