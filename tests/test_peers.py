# SPDX-License-Identifier: MIT OR Apache-2.0
"""pq_l2/peers.py: the peers agree with the oracle, the roofline arithmetic, a quick full run."""
import subprocess
import sys

import pytest
from conftest import BASELINE_KERNEL, REPO
from trials import last_block

import common
import inputs
import peers
import reference

QUERY_COUNT = 4  # fresh queries per workload checked against the oracle
QUICK_TIMEOUT_SECS = 60  # a hung quick run fails its test instead of hanging the suite
BLOCK_KEYS = ("faiss", "champion_vs_faiss", "champion_vs_numpy", "champion_vs_roofline",
              "baseline_vs_faiss", "memory_bandwidth_gbs", "assumed_loads_per_cycle",
              "clock_ghz", *(f"combo_{name}" for name in peers.QUICK_COMBOS))


def cases(fixtures):
    """(workload, queries, k): one speed workload per shape at k = 10, and a battery case with
    n < k (the answer is shorter than k)."""
    battery, speed, _ = fixtures
    picked = [(w, inputs.SPEED_K) for w in speed if w["distribution"] == "clustered"]
    picked.append((next(c for c in battery if c["name"].endswith("/n5")), inputs.SPEED_K))
    for w, k in picked:
        yield w, inputs.draw_queries(w, QUERY_COUNT, peers.QUERY_SEED), k


def assert_agrees(peer_class, fixtures):
    for w, queries, k in cases(fixtures):
        peer = peer_class(w["shape"], w["codebook"], w["codes"])
        for j, query in enumerate(queries):
            ids, dists = peer.probe_top_k(query, k)
            exact = reference.exact_distances(w["codebook"], w["codes"], query)
            problem = reference.topk_consistent(ids, dists, exact, k, w["shape"])
            assert problem is None, f"{peer_class.__name__} {w['name']} query {j}: {problem}"


def test_numpy_peer_agrees_with_the_oracle(fixtures):
    assert_agrees(peers.NumpyPq, fixtures)


def test_faiss_peer_agrees_with_the_oracle(fixtures):
    pytest.importorskip("faiss", reason="faiss-cpu not installed: " + peers.INSTALL_HINT)
    assert_agrees(peers.FaissPq, fixtures)


def test_verify_catches_a_wrong_answer(fixtures):
    w, queries, k = next(cases(fixtures))
    peer = peers.NumpyPq(w["shape"], w["codebook"], w["codes"])
    right = [peer.probe_top_k(q, k) for q in queries]
    wrong = [(ids, dists * 1.01) for ids, dists in right]  # 1 % off: far outside tolerance
    assert peers.verify({"numpy": right}, w, queries) == []
    assert len(peers.verify({"numpy": wrong}, w, queries)) == len(queries)


def test_roofline_arithmetic():
    # 1,000 vectors x 10 sub-vectors = 10,000 code bytes and 10,000 lookups per query.
    memory, lookups, roof = peers.roofline_us(1_000, 10, bandwidth_gbs=10.0, ghz=2.5,
                                              loads_per_cycle=2)
    assert (memory, lookups, roof) == pytest.approx((1.0, 2.0, 2.0))  # lookup-bound
    memory, lookups, roof = peers.roofline_us(1_000, 10, bandwidth_gbs=2.0, ghz=2.5,
                                              loads_per_cycle=2)
    assert (memory, lookups, roof) == pytest.approx((5.0, 2.0, 5.0))  # memory-bound


def test_pick_kernels_follows_results_tsv(tmp_path):
    results, harness = tmp_path / "results.tsv", common.harness_sha("pq_l2")
    kernels, note = peers.pick_kernels(results, harness)
    assert [k[0] for k in kernels] == ["champion"] and "no results.tsv yet" in note
    base = BASELINE_KERNEL.read_bytes()
    for status, source in (("baseline", base), ("keep", base + b"# kept\n"),
                           ("discard", base + b"# discarded\n")):
        sha = common.save_snapshot(results, "pq_l2", source)
        common.append_result(results, {"target": "pq_l2", "harness_sha": harness,
                                       "kernel_sha": sha, "status": status})
    kernels, _ = peers.pick_kernels(results, harness)
    assert [(label, source) for label, source, _ in kernels] == \
        [("baseline", base), ("champion", base + b"# kept\n")]
    _, note = peers.pick_kernels(results, "another-harness")
    assert "no baseline row under harness_sha another-harness" in note


def test_quick_run_prints_the_block(tmp_path):
    done = subprocess.run([sys.executable, "pq_l2/peers.py", "--quick", "--results",
                           str(tmp_path / "results.tsv")], cwd=REPO, capture_output=True,
                          text=True, timeout=QUICK_TIMEOUT_SECS)
    assert done.returncode == 0, done.stderr[-2000:]
    block = last_block(done.stdout.split("\n"))
    missing = [key for key in BLOCK_KEYS if key not in block]
    assert not missing, (missing, done.stdout)
    if peers.faiss is None:
        assert block["champion_vs_faiss"] == "n/a" and peers.INSTALL_HINT in block["faiss"]
    else:
        assert float(block["champion_vs_faiss"]) > 0
    assert float(block["champion_vs_roofline"]) > 0
