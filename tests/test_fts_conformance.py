# SPDX-License-Identifier: MIT OR Apache-2.0
"""The fts_bm25 oracle agrees with real Lance, and the comparison can fail
(fts_bm25/conformance.py)."""
import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lance", reason="pylance not installed: "
                    ".venv/bin/pip install -r tools/requirements-conformance.txt")

CONFORMANCE = Path(__file__).resolve().parent.parent / "fts_bm25" / "conformance.py"
WRONG_CASE = "5k_common2"  # the case whose real Lance answers meet the wrong oracles


def load_conformance():
    """By path under a private name, as test_bitpack.py loads bitpack's modules: in the test
    session the bare names `conformance`, `inputs`, `reference` are pq_l2's (conftest.py).
    conformance.py loads fts_bm25's inputs and reference by path itself; the tests use those."""
    spec = importlib.util.spec_from_file_location("fts_bm25_conformance", CONFORMANCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


conformance = load_conformance()
reference = conformance.reference


def test_quick_run_agrees(capsys):
    assert conformance.main(["--quick"]) == 0, capsys.readouterr()
    assert "summary:" in capsys.readouterr().out


def without_length_normalisation(index, query):
    """Every document scored as if of average length."""
    flat = index._replace(doc_lengths=np.ones_like(index.doc_lengths),
                          total_tokens=len(index.doc_lengths))
    return reference.exact_scores(flat, query)


def idf_ln_n_over_df(index, query):
    """IDF ln(N / n) instead of Lance's ln(1 + (N - n + 0.5) / (n + 0.5)): close for common
    terms (a few 1e-4 relative), still far outside the tolerance."""
    num_docs, df = len(index.doc_lengths), np.diff(index.offsets)
    return sum(reference.exact_scores(index, [t]) * np.log(num_docs / df[t])
               / reference.idf(num_docs, df[t]) for t in query if df[t])


def test_wrong_oracle_is_caught():
    index, checks = conformance.corpora_to_check(True)["5k"]
    name, queries, k = next(c for c in checks if c[0] == WRONG_CASE)
    with tempfile.TemporaryDirectory() as tmp:
        ds = conformance.lance_dataset(conformance.corpus_text(index), f"{tmp}/ds")
        answers = conformance.lance_search(ds, queries, k)
    assert conformance.compare(answers, reference.exact_scores, index, queries, k)[0] == [], name
    for wrong in (without_length_normalisation, idf_ln_n_over_df):
        reasons, _, _ = conformance.compare(answers, wrong, index, queries, k)
        assert len(reasons) == len(queries), (wrong.__name__, reasons)
