# SPDX-License-Identifier: MIT OR Apache-2.0
"""The oracle: accepts honest float32 kernels on the whole battery, rejects each bug class."""
import numpy as np
import pytest

import inputs
import reference

F32 = np.float32
SHAPE = inputs.PqShape(128, 16, inputs.NUM_CENTROIDS)  # for the synthetic top-k cases
TIED_EXACT = np.array([5.0, 1.0, 3.0, 2.0, 3.0, 9.0, 3.0])  # ids 2, 4, 6 tie: 3rd-5th
TIED_K = 4  # top-4 = {1, 3} + two of the tied {2, 4, 6}
NEAR = 1e-3  # relative distance of a "near-duplicate" query from an encoded vector


# ---------------------------------------------------------------- summation orders
def tree_sum(x, axis):
    """Pairwise sum: halves until single terms (a different float32 order than a loop)."""
    n = x.shape[axis]
    if n == 1:
        return np.take(x, 0, axis=axis)
    half = n // 2
    return (tree_sum(np.take(x, np.arange(half), axis=axis), axis)
            + tree_sum(np.take(x, np.arange(half, n), axis=axis), axis))


def loop_sum(x, axis, reverse=False):
    """Left-to-right (or right-to-left) float32 accumulation along `axis`."""
    order = range(x.shape[axis])
    acc = np.zeros(np.take(x, 0, axis=axis).shape, x.dtype)
    for i in reversed(order) if reverse else order:
        acc += np.take(x, i, axis=axis)
    return acc


def squared_terms(codebook, query):
    """[m, 256, sub_dim] float32 (q - c)^2: each term rounded as a float32 kernel rounds it."""
    m, _, sub_dim = codebook.shape
    diff = query.reshape(m, 1, sub_dim) - codebook
    return diff * diff


def table_forward(codebook, query):
    return loop_sum(squared_terms(codebook, query), axis=2)


def table_reverse(codebook, query):
    return loop_sum(squared_terms(codebook, query), axis=2, reverse=True)


def table_tree(codebook, query):
    return tree_sum(squared_terms(codebook, query), axis=2)


def table_f64(codebook, query):
    m, _, sub_dim = codebook.shape
    diff = query.astype(np.float64).reshape(m, 1, sub_dim) - codebook
    return (diff * diff).sum(axis=2).astype(F32)


def gathered(table, codes):
    """[n, m]: the table entry each vector uses per sub-vector."""
    return table[np.arange(table.shape[0]), codes]


def adc_forward(table, codes):
    return loop_sum(gathered(table, codes), axis=1)


def adc_reverse(table, codes):
    return loop_sum(gathered(table, codes), axis=1, reverse=True)


def adc_tree(table, codes):
    return tree_sum(gathered(table, codes), axis=1)


def adc_f64(table, codes):
    return gathered(table, codes).astype(np.float64).sum(axis=1).astype(F32)


def top_k(dists, k):
    ids = np.argsort(dists, kind="stable")[:k]
    return ids, dists[ids]


def top_k_high_ids_first(dists, k):
    ids = np.lexsort((-np.arange(len(dists)), dists))[:k]  # ties: the largest id first
    return ids, dists[ids]


def kernel(table=table_forward, adc=adc_forward, select=top_k):
    def probe(codebook, codes, query, k):
        return select(adc(table(codebook, query), codes), k)
    return probe


HONEST = {
    "forward": kernel(),
    "reverse_subvectors_and_subdims": kernel(table_reverse, adc_reverse),
    "tree": kernel(table_tree, adc_tree),
    "f64_accumulation": kernel(adc=adc_f64),
    "f64_table": kernel(table=table_f64),
    "reverse_subdims_tree_scan": kernel(table_reverse, adc_tree),
    "high_ids_first_on_ties": kernel(select=top_k_high_ids_first),
}


# ---------------------------------------------------------------- one kernel per bug class
def drop_subvector(codebook, codes, query, k):
    return top_k(loop_sum(gathered(table_forward(codebook, query), codes)[:, 1:], axis=1), k)


def double_subvector(codebook, codes, query, k):
    terms = gathered(table_forward(codebook, query), codes)
    return top_k(loop_sum(terms, axis=1) + terms[:, 0], k)


def wrong_centroid(codebook, codes, query, k):
    shifted = ((codes.astype(np.int64) + 1) % inputs.NUM_CENTROIDS).astype(np.uint8)
    return top_k(adc_forward(table_forward(codebook, query), shifted), k)


def query_offset_by_one(codebook, codes, query, k):
    return top_k(adc_forward(table_forward(codebook, np.roll(query, 1)), codes), k)


def transposed_subdims(codebook, codes, query, k):
    m, _, sub_dim = codebook.shape
    strided = np.ascontiguousarray(query.reshape(sub_dim, m).T).ravel()  # q[d * m + i]
    return top_k(adc_forward(table_forward(codebook, strided), codes), k)


def sqrt_distances(codebook, codes, query, k):
    return top_k(np.sqrt(adc_forward(table_forward(codebook, query), codes)), k)


def float16_table(codebook, codes, query, k):
    table = table_forward(codebook, query).astype(np.float16).astype(F32)
    return top_k(adc_forward(table, codes), k)


def u8_table(codebook, codes, query, k):
    table = table_forward(codebook, query)
    lo, hi = table.min(), table.max()
    scale = F32((hi - lo) / 255) if hi > lo else F32(1)
    levels = np.round((table - lo) / scale).astype(np.uint8)
    return top_k(adc_forward(levels * scale + lo, codes), k)


def skip_last_vector(codebook, codes, query, k):
    return top_k(adc_forward(table_forward(codebook, query), codes[:-1]), k)


def norm_expansion(codebook, codes, query, k):
    m, _, sub_dim = codebook.shape
    q = query.reshape(m, 1, sub_dim)
    table = (q * q).sum(axis=2) + (codebook * codebook).sum(axis=2) - F32(2) * (
        q * codebook).sum(axis=2)
    return top_k(adc_forward(table, codes), k)


BUGGY = {f.__name__: f for f in (
    drop_subvector, double_subvector, wrong_centroid, query_offset_by_one, transposed_subdims,
    sqrt_distances, float16_table, u8_table, skip_last_vector)}


@pytest.fixture(scope="module")
def probes(battery):
    """Every (case, query, exact distances) of the battery, the exact ones computed once."""
    return [(case, query, reference.exact_distances(case["codebook"], case["codes"], query))
            for case in battery for query in case["queries"]]


def verdict(probe, case, query, exact):
    ids, dists = probe(case["codebook"], case["codes"], query, case["k"])
    return reference.topk_consistent(ids, dists, exact, case["k"], case["shape"])


@pytest.mark.parametrize("name", HONEST)
def test_oracle_accepts_honest_reassociation(name, probes):
    failures = [f"{case['name']}: {problem}" for case, query, exact in probes
                if (problem := verdict(HONEST[name], case, query, exact))]
    assert not failures, failures[:3]


@pytest.mark.parametrize("name", BUGGY)
def test_oracle_rejects_bug_class(name, probes):
    # any() stops at the first rejection: each bug only has to be caught somewhere
    assert any(verdict(BUGGY[name], case, query, exact) for case, query, exact in probes)


def test_oracle_rejects_norm_expansion_on_battery(probes):
    assert any(verdict(norm_expansion, case, query, exact) for case, query, exact in probes)


def test_oracle_rejects_norm_expansion_near_the_data(battery):
    # The tolerance itself is tight enough: a query within 0.1 % of an encoded vector on
    # large_dynamic_range makes the expansion cancel far outside it (honest kernels pass).
    cases = [c for c in battery if c["name"].endswith("large_dynamic_range/k10")]
    assert len(cases) == len(inputs.SPEED_SHAPES)
    for case in cases:
        codebook, codes, shape, k = case["codebook"], case["codes"], case["shape"], case["k"]
        decoded = codebook[np.arange(shape.num_sub_vectors), codes[0]].ravel()
        query = (decoded * (1 + NEAR * np.cos(np.arange(shape.dim)))).astype(F32)
        exact = reference.exact_distances(codebook, codes, query)
        bad = norm_expansion(codebook, codes, query, k)
        assert reference.topk_consistent(*bad, exact, k, shape) is not None
        good = HONEST["forward"](codebook, codes, query, k)
        assert reference.topk_consistent(*good, exact, k, shape) is None


def test_battery_really_exercises_ties(probes):
    # The high-ids-first kernel (accepted above) answers other ids than the oracle on the tie
    # cases: the acceptance covers real tie choices, not only identical answers.
    probe = HONEST["high_ids_first_on_ties"]
    differ = {case["name"] for case, query, exact in probes
              if not np.array_equal(probe(case["codebook"], case["codes"], query, case["k"])[0],
                                    reference.reference_top_k(exact, case["k"])[0])}
    assert any("ties" in name for name in differ)


# ---------------------------------------------------------------- synthetic top-k rules
def answer(ids, exact=TIED_EXACT, dtype=F32):
    ids = np.array(ids, dtype=np.int64)
    return ids, exact[ids].astype(dtype)


def check(ids, dists, k=TIED_K, exact=TIED_EXACT):
    return reference.topk_consistent(ids, dists, exact, k, SHAPE)


@pytest.mark.parametrize("tied", [(2, 4), (2, 6), (4, 6), (6, 4)])
def test_any_choice_inside_a_tie_is_accepted(tied):
    assert check(*answer([1, 3, *tied])) is None


def test_oracle_answer_is_accepted():
    ids, dists = reference.reference_top_k(TIED_EXACT, TIED_K)
    assert check(ids, dists.astype(F32)) is None


def test_id_outside_the_tied_band_is_rejected():
    assert check(*answer([1, 3, 2, 0])) is not None  # id 0 (distance 5) is not top-4
    ids, dists = answer([1, 3, 2, 0])
    dists[3] = F32(3.0)  # claiming the tied distance for it is dishonest
    assert check(ids, dists) is not None


def test_dishonest_distance_is_rejected():
    ids, dists = answer([1, 3, 2, 4])
    dists[1] = F32(2.5)  # still ascending, but not id 3's distance
    assert "id 3" in check(ids, dists)


def test_distance_within_tolerance_is_accepted():
    ids, dists = answer([1, 3, 2, 4])
    dists[2] = np.nextafter(dists[2], F32(0))  # one float32 ulp: a legitimate rounding
    assert check(ids, dists) is None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_distances_are_rejected(bad):
    ids, dists = answer([1, 3, 2, 4])
    dists[3] = bad
    assert "non-finite" in check(ids, dists)


def test_duplicate_ids_are_rejected():
    assert "distinct" in check(*answer([1, 3, 2, 2]))


@pytest.mark.parametrize("bad_id", [-1, len(TIED_EXACT)])
def test_out_of_range_ids_are_rejected(bad_id):
    ids, dists = answer([1, 3, 2, 4])
    ids[3] = bad_id
    assert "out of range" in check(ids, dists)


@pytest.mark.parametrize("count", [TIED_K - 1, TIED_K + 1, 0])
def test_wrong_length_is_rejected(count):
    order = np.argsort(TIED_EXACT, kind="stable")
    assert "shape" in check(*answer(order[:count]))


def test_k_above_n_wants_all_n():
    order = np.argsort(TIED_EXACT, kind="stable")
    assert check(*answer(order), k=len(TIED_EXACT) + 3) is None
    assert check(*answer(order[:-1]), k=len(TIED_EXACT) + 3) is not None


def test_float64_distances_are_rejected():
    assert "float32" in check(*answer([1, 3, 2, 4], dtype=np.float64))


def test_integer_ids_of_any_width_are_accepted_but_not_floats():
    ids, dists = answer([1, 3, 2, 4])
    assert check(ids.astype(np.uint16), dists) is None
    assert check(ids.astype(np.int32), dists) is None
    assert "integer" in check(ids.astype(np.float64), dists)


def test_non_ascending_distances_are_rejected():
    assert "ascending" in check(*answer([3, 1, 2, 4]))


class Sub(np.ndarray):
    pass


def test_ndarray_subclass_is_rejected():
    ids, dists = answer([1, 3, 2, 4])
    assert "not numpy.ndarray" in check(ids.view(Sub), dists)
    assert "not numpy.ndarray" in check(ids, np.ma.array(dists))
    assert "not numpy.ndarray" in check(list(ids), dists)


def test_tolerance_floor_near_zero():
    exact = np.array([0.0, 1e-6, 2.0])
    ids, dists = np.array([0, 1]), np.array([5e-5, 5e-5], F32)  # inside MAX_ABS_ERR
    assert reference.topk_consistent(ids, dists, exact, 2, SHAPE) is None
    dists = np.array([0.0, 1e-6 + 2 * reference.MAX_ABS_ERR], F32)
    assert reference.topk_consistent(ids, dists, exact, 2, SHAPE) is not None
