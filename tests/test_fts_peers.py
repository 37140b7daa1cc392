# SPDX-License-Identifier: MIT OR Apache-2.0
"""fts_bm25/peers.py: tantivy's length quantiser, each peer against its oracle, a wrong peer
caught, the bare module names left alone, a quick full run."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from trials import last_block

TARGET_DIR = REPO / "fts_bm25"
CORPORA = ("short", "ordinary", "long", "ties")  # battery corpora: every length <= 12, mixed,
#                                                  every length > 40, exact ties
KINDS = ("common2", "rare8")  # query kinds checked on each corpus
QUERY_COUNT = 6  # fresh queries per corpus and kind
# tantivy 0.27.0's fieldnorm of a document length, where it is not the length itself
KNOWN_LENGTHS = {41: 40, 59: 56, 162: 152, 339: 312}
EXACT_UP_TO = 40  # lengths tantivy keeps exactly
QUICK_TIMEOUT_SECS = 90  # a hung quick run fails its test instead of hanging the suite


def load_peers():
    """fts_bm25/peers.py under a private name: conftest's pq_l2 owns `peers`, `inputs`..."""
    spec = importlib.util.spec_from_file_location("fts_bm25_peers", TARGET_DIR / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peers = load_peers()
inputs, reference = peers.inputs, peers.reference  # fts_bm25's, as peers.py loaded them
BLOCK_KEYS = ("tantivy", "bm25s", "kernels", "verified", "rounds", "champion_vs_tantivy",
              "champion_vs_bm25s", "baseline_vs_tantivy", "baseline_vs_bm25s", "total_seconds",
              *(f"combo_{name}" for name in peers.QUICK_COMBOS))


@pytest.fixture(scope="module")
def corpora():
    """{name: (workload-like dict, queries)}: each battery corpus of CORPORA with fresh
    queries of every kind of KINDS."""
    battery, _, _ = inputs.load_fixtures()
    picked = {}
    for name in CORPORA:
        index = next(c["index"] for c in battery if c["name"].startswith(f"{name}/"))
        queries = [q for kind in KINDS
                   for q in inputs.draw_queries(index, kind, QUERY_COUNT, peers.QUERY_SEED)]
        picked[name] = ({"name": name, "index": index}, queries)
    return picked


def checks_of(peer_class, corpora, formula, **options):
    """{corpus: [Check]}: a peer built on every corpus, its answers held to `formula`."""
    found = {}
    for name, (w, queries) in corpora.items():
        peer = peer_class(w["index"], peers.corpus_documents(w["index"]), **options)
        answers = {"peer": [peer.top_k(q, inputs.SPEED_K) for q in queries]}
        found[name] = peers.verify(answers, w, queries, {"peer": formula})
    return found


# ---------------------------------------------------------------- tantivy's lengths
def test_quantiser_matches_tantivy_on_known_lengths():
    table = peers.fieldnorm_lengths()
    assert len(table) == 256 and table[0] == 0 and np.all(np.diff(table) > 0)
    exact = np.arange(1, EXACT_UP_TO + 1)
    assert np.array_equal(peers.quantised_lengths(exact), exact)
    assert peers.quantised_lengths(list(KNOWN_LENGTHS)).tolist() == list(KNOWN_LENGTHS.values())
    lengths = np.arange(1, inputs.MAX_LENGTH + 1)
    quantised = peers.quantised_lengths(lengths)
    assert np.all(quantised <= lengths) and np.all(np.diff(quantised) >= 0)
    assert np.array_equal(peers.quantised_lengths(quantised), quantised)  # codes are fixed


def test_variant_keeps_the_token_total(corpora):
    index = corpora["long"][0]["index"]
    variant = peers.tantivy_variant(index)
    assert variant.total_tokens == index.total_tokens  # avgdl stays exact, as tantivy's
    assert np.all(variant.doc_lengths <= index.doc_lengths)
    assert np.mean(variant.doc_lengths < index.doc_lengths) > 0.5  # lengths are all above 40


# ---------------------------------------------------------------- the peers against the oracle
def test_tantivy_passes_its_own_formula(corpora):
    pytest.importorskip("tantivy", reason="tantivy not installed: " + peers.INSTALL_HINT)
    found = checks_of(peers.TantivyPeer, corpora, "tantivy")
    for name, checks in found.items():
        assert peers.disagreements(checks) == [], name
    # where every length is exact (<= 40), tantivy is exact; where none is, it is not
    assert all(c.exact_problem is None for c in found["short"])
    assert any(c.exact_problem for c in found["long"])


def test_bm25s_passes_the_exact_oracle(corpora):
    # Its weights are made at index time, whatever the backend; the numpy backend here spares
    # the suite the numba backend's 6 s compile, which the quick run pays and verifies.
    pytest.importorskip("bm25s", reason="bm25s not installed: " + peers.INSTALL_HINT)
    for name, checks in checks_of(peers.Bm25sPeer, corpora, "exact", backend="numpy").items():
        assert peers.disagreements(checks) == [], name
        assert all(c.deviation < 1e-6 for c in checks), name  # float32 weights, summed


def test_verify_catches_a_wrong_peer(corpora):
    w, queries = corpora["ordinary"]
    right, wrong_ids, wrong_scores = [], [], []
    for query in queries:
        ids, scores = reference.reference_top_k(reference.exact_scores(w["index"], query),
                                                inputs.SPEED_K)
        right.append((ids, scores.astype(np.float32)))
        wrong_ids.append(((ids + 1) % len(w["index"].doc_lengths), scores.astype(np.float32)))
        wrong_scores.append((ids, (scores * 1.01).astype(np.float32)))  # 1 %: far outside
    answers = {"right": right, "wrong_ids": wrong_ids, "wrong_scores": wrong_scores}
    checks = peers.verify(answers, w, queries, dict.fromkeys(answers, "exact"))
    assert [line.split(":")[0] for line in peers.disagreements(checks)] == ["wrong_ids",
                                                                            "wrong_scores"]
    for label in ("wrong_ids", "wrong_scores"):
        assert all(c.problem for c in checks if c.label == label)
    # the exact answers held to tantivy's formula fail where lengths are quantised
    w, queries = corpora["long"]
    exact = [reference.reference_top_k(reference.exact_scores(w["index"], q), inputs.SPEED_K)
             for q in queries]
    checks = peers.verify({"exact": [(i, s.astype(np.float32)) for i, s in exact]}, w, queries,
                          {"exact": "tantivy"})
    assert peers.disagreements(checks)


# ---------------------------------------------------------------- loading and the full run
def test_loading_leaves_the_bare_names_as_they_were(monkeypatch):
    other = object()  # another target's module of that name
    monkeypatch.setitem(sys.modules, "inputs", other)
    monkeypatch.delitem(sys.modules, "reference", raising=False)
    ours = peers.peers_common.own_modules(TARGET_DIR, ("inputs", "reference"), keep=False)
    assert sys.modules["inputs"] is other and "reference" not in sys.modules
    assert [m.__file__ for m in ours] == [str(TARGET_DIR / "inputs.py"),
                                          str(TARGET_DIR / "reference.py")]
    assert peers.judge.inputs is peers.inputs  # run_experiment saw fts_bm25's inputs


def test_quick_run_prints_the_block(tmp_path):
    done = subprocess.run([sys.executable, "fts_bm25/peers.py", "--quick", "--results",
                           str(tmp_path / "results.tsv")], cwd=REPO, capture_output=True,
                          text=True, timeout=QUICK_TIMEOUT_SECS)
    assert done.returncode == 0, done.stderr[-2000:]
    block = last_block(done.stdout.split("\n"))
    missing = [key for key in BLOCK_KEYS if key not in block]
    assert not missing, (missing, done.stdout)
    for label, module in (("tantivy", peers.tantivy), ("bm25s", peers.bm25s)):
        if module is None:
            assert block[f"champion_vs_{label}"] == "n/a" and peers.INSTALL_HINT in block[label]
        else:
            assert float(block[f"champion_vs_{label}"]) > 0
            assert block[f"{label}_threads"].startswith("single"), block[f"{label}_threads"]
            assert block[f"{label}_verified"].startswith(
                f"{len(peers.QUICK_COMBOS) * peers.QUICK_QUERIES}/")
