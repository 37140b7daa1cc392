# SPDX-License-Identifier: MIT OR Apache-2.0
"""Fixtures: determinism, the kernel contract of every battery case, edge cases, cache repair."""

import numpy as np
import pytest

import fixture_cache
import inputs
import reference

SMALL_COUNT = 300  # vectors: enough for k-means on 256 centroids, fast to train
SMALL_DIM, SMALL_M = 128, 16
SMALL_SEED = 12345
QUERY_COUNT = 4
CORRUPT_LEN = 64


def small_workload(seed=SMALL_SEED, distribution="gaussian"):
    return inputs.make_workload(SMALL_DIM, SMALL_M, distribution, SMALL_COUNT, seed)


def assert_workloads_equal(a, b):
    assert a["shape"] == b["shape"] and a["distribution"] == b["distribution"]
    np.testing.assert_array_equal(a["codebook"], b["codebook"])
    np.testing.assert_array_equal(a["codes"], b["codes"])


# ---------------------------------------------------------------- determinism
@pytest.mark.parametrize("distribution", ["gaussian", "large_dynamic_range"])
def test_make_workload_is_deterministic(distribution):
    assert_workloads_equal(small_workload(distribution=distribution),
                           small_workload(distribution=distribution))


def test_make_workload_depends_on_seed():
    a, b = small_workload(), small_workload(SMALL_SEED + 1)
    assert not np.array_equal(a["codebook"], b["codebook"])
    assert not np.array_equal(a["codes"], b["codes"])


def test_draw_queries_fresh_per_seed_and_deterministic():
    w = small_workload()
    first = inputs.draw_queries(w, QUERY_COUNT, 1)
    assert first.shape == (QUERY_COUNT, SMALL_DIM) and first.dtype == np.float32
    np.testing.assert_array_equal(first, inputs.draw_queries(w, QUERY_COUNT, 1))
    second = inputs.draw_queries(w, QUERY_COUNT, 2)
    assert not np.any(np.all(first == second, axis=1))  # no query repeats across seeds


@pytest.mark.parametrize("distribution", inputs.BATTERY_DISTRIBUTIONS)
def test_draw_vectors_contract(distribution):
    v = inputs.draw_vectors(distribution, SMALL_DIM, QUERY_COUNT, SMALL_SEED)
    assert v.dtype == np.float32 and v.flags.c_contiguous
    assert v.shape == (QUERY_COUNT, SMALL_DIM) and np.all(np.isfinite(v))


def test_unknown_distribution_is_refused():
    with pytest.raises(ValueError):
        inputs.draw_vectors("cauchy", SMALL_DIM, 1, SMALL_SEED)


# ---------------------------------------------------------------- the battery
def test_battery_cases_follow_the_contract(battery):
    for case in battery:
        shape, codebook, codes, queries = (case["shape"], case["codebook"], case["codes"],
                                           case["queries"])
        m, sub_dim = shape.num_sub_vectors, shape.dim // shape.num_sub_vectors
        assert shape.dim % m == 0 and shape.num_centroids == inputs.NUM_CENTROIDS
        assert codebook.dtype == np.float32 and codebook.flags.c_contiguous, case["name"]
        assert codebook.shape == (m, inputs.NUM_CENTROIDS, sub_dim), case["name"]
        assert codes.dtype == np.uint8 and codes.ndim == 2 and codes.shape[1] == m
        assert codes.flags.c_contiguous, case["name"]
        assert queries.dtype == np.float32 and queries.shape[1] == shape.dim
        assert len(queries) >= 1 and case["k"] >= 1
        assert np.all(np.isfinite(codebook)) and np.all(np.isfinite(queries))


def test_battery_covers_shapes_and_distributions(battery):
    covered = {(tuple(c["shape"][:2]), c["distribution"]) for c in battery}
    want = {(s, d) for s in inputs.SPEED_SHAPES for d in inputs.BATTERY_DISTRIBUTIONS}
    assert covered == want
    assert len({c["name"] for c in battery}) == len(battery)  # names identify cases


def test_battery_reaches_what_is_timed(fixtures):
    battery, workloads, _ = fixtures
    at_scale = {c["name"].split("/")[0]: c for c in battery if "/speed-scale/" in c["name"]}
    assert sorted(at_scale) == sorted(w["name"] for w in workloads)
    for w in workloads:
        case = at_scale[w["name"]]
        assert case["k"] == inputs.SPEED_K and case["distribution"] == w["distribution"]
        assert np.array_equal(case["codes"], w["codes"])  # 20,000 vectors, as timed


def test_battery_edge_cases_present(battery):
    ks = [(c["k"], len(c["codes"])) for c in battery]
    assert any(k == 1 for k, _ in ks)
    assert any(k == n for k, n in ks)
    assert any(k > n and n > 1 for k, n in ks)
    assert any(n == 1 for _, n in ks)  # tiny n
    assert any(n < k for k, n in ks)
    assert any(n % 8 for _, n in ks)  # no blocked kernel may assume n % 8 == 0
    zero = [c for c in battery if not np.any(c["queries"][0])]
    assert zero and all(c["distribution"] == "mostly_zero" for c in zero)


def kth_is_tied(case, query):
    exact = np.sort(reference.exact_distances(case["codebook"], case["codes"], query))
    k = case["k"]
    return k < len(exact) and exact[k - 1] == exact[k]


def test_battery_has_ties_at_the_kth_distance(battery):
    tie_cases = [c for c in battery if "ties" in c["name"]]
    assert len(tie_cases) == len(inputs.SPEED_SHAPES) * 2  # k = 10 and k = 12, every shape
    for case in tie_cases:
        assert all(kth_is_tied(case, q) for q in case["queries"]), case["name"]


def test_speed_workloads(fixtures):
    _, workloads, _ = fixtures
    assert len(workloads) == len(inputs.SPEED_SHAPES) * len(inputs.SPEED_DISTRIBUTIONS)
    for w in workloads:
        m = w["shape"].num_sub_vectors
        assert w["codes"].shape == (inputs.SPEED_NUM_VECTORS, m) and w["codes"].dtype == np.uint8
        assert w["codebook"].dtype == np.float32 and w["codebook"].flags.c_contiguous
        # trained codebooks, not a degenerate one: most centroids are in use
        counts = np.bincount(w["codes"][:, 0], minlength=inputs.NUM_CENTROIDS)
        assert (counts > 0).sum() > inputs.NUM_CENTROIDS // 2


# ---------------------------------------------------------------- the cache
def test_cache_loads_identically_twice(fixtures):
    again = inputs.load_fixtures()
    assert again[2] == fixtures[2]
    for a, b in zip(again[0], fixtures[0], strict=True):
        assert a["name"] == b["name"] and a["k"] == b["k"]
        np.testing.assert_array_equal(a["codes"], b["codes"])


def test_corrupted_cache_is_regenerated(tmp_path, monkeypatch, capfd):
    # Small fixtures through the real cache code: the mechanism, without 12 s of generation.
    small = small_workload()
    monkeypatch.setattr(inputs, "make_battery", lambda workloads: [{**small, "name": "tiny"}])
    monkeypatch.setattr(inputs, "make_speed_workloads", lambda: [{**small, "name": "w"}])
    monkeypatch.setattr(fixture_cache, "CACHE_DIR", tmp_path)
    data_path, sum_path = fixture_cache.paths("pq_l2", "fixtures", inputs._cache_key())
    intact_digest = inputs.load_fixtures()[2]  # generates and writes the cache
    intact = data_path.read_bytes()
    middle = len(intact) // 2
    with open(data_path, "r+b") as f:  # flip bytes in the middle: the hash must catch it
        f.seek(middle)
        f.write(bytes(b ^ 0xFF for b in intact[middle:middle + CORRUPT_LEN]))
    capfd.readouterr()
    battery, workloads, digest = inputs.load_fixtures()
    assert "regenerating" in capfd.readouterr().err
    assert digest == intact_digest  # same content, byte for byte, as the intact cache
    assert battery[0]["name"] == "tiny" and workloads[0]["name"] == "w"
    assert data_path.read_bytes() == intact  # repaired in place
    assert sum_path.read_text().strip() == digest
    assert inputs.load_fixtures()[2] == digest  # and now loads without regenerating
    assert "regenerating" not in capfd.readouterr().err
