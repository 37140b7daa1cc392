# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: deterministic pq_l2 fixtures: the correctness battery and the speed workloads.

Every array comes from a named seed through SplitMix64 (seeds.py), so fixtures are identical
on every machine. Generation takes seconds, so fixtures are cached in .cache/pq_l2/, keyed by
this file's code and the seeds, and verified by hash on every load.
"""
import functools
import hashlib
import inspect
import io
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fixture_cache  # noqa: E402
from ledger import progress  # noqa: E402
from seeds import mix_seeds, standard_normal, uniform01  # noqa: E402

FIXTURE_SEED = 0x5EED_2026  # root of every fixture array
NUM_CENTROIDS = 256  # 8-bit PQ, as in Lance
SPEED_SHAPES = ((128, 16), (256, 16), (768, 96))  # (dim, num_sub_vectors): SIFT, mid, BERT-like
SPEED_DISTRIBUTIONS = ("clustered", "uniform", "sparse")
BATTERY_DISTRIBUTIONS = ("gaussian", "clustered", "uniform", "sparse", "large_dynamic_range",
                         "mostly_zero")
SPEED_NUM_VECTORS = 20_000  # base vectors per speed workload
SPEED_K = 10
BATTERY_NUM_VECTORS = 1_013  # prime: not a multiple of 8 or 16
BATTERY_QUERIES = 3  # queries per battery case
TRAIN_SAMPLE = 4_096  # vectors the codebook is trained on
LLOYD_ITERATIONS = 4  # enough for realistic, unevenly used codes
NUM_CLUSTERS = 32  # mixture components of the clustered distribution
SPARSE_DENSITY = 0.1  # ~90 % zeros
MOSTLY_ZERO_DENSITY = 0.02
NEAR_QUERY_OFFSET = 1e-3  # relative distance of the near-duplicate large_dynamic_range query
ENCODE_CHUNK = 4_096  # vectors per chunk when assigning codes (bounds memory)
SCALED_CHUNK = 1 << 16  # vectors drawn and encoded at once for another scale (make confirm)


class PqShape(NamedTuple):
    dim: int
    num_sub_vectors: int
    num_centroids: int


def draw_vectors(distribution, dim, count, seed):
    """`count` float32 vectors of a named distribution. Clustered centres depend only on dim,
    so fresh queries come from the same mixture as the base vectors."""
    def noise():
        return standard_normal(mix_seeds(seed, "noise"), (count, dim))

    if distribution == "gaussian":
        out = noise()
    elif distribution == "clustered":
        centres_seed = mix_seeds(FIXTURE_SEED, "centres", dim)
        centres = 3.0 * standard_normal(centres_seed, (NUM_CLUSTERS, dim))
        pick = (uniform01(mix_seeds(seed, "pick"), (count,)) * NUM_CLUSTERS).astype(np.int64)
        out = centres[pick] + noise()
    elif distribution == "uniform":
        out = 2.0 * uniform01(mix_seeds(seed, "uniform"), (count, dim)) - 1.0
    elif distribution in ("sparse", "mostly_zero"):
        density = SPARSE_DENSITY if distribution == "sparse" else MOSTLY_ZERO_DENSITY
        out = noise() * (uniform01(mix_seeds(seed, "mask"), (count, dim)) < density)
    elif distribution == "large_dynamic_range":
        exponent = np.array([-3.0, 0.0, 3.0])[np.arange(dim) * 3 // dim]  # 1e-3, 1, 1e3 bands
        jitter = uniform01(mix_seeds(seed, "scale"), (count, dim)) - 0.5
        out = noise() * 10.0 ** (exponent + jitter)
    else:
        raise ValueError(f"unknown distribution {distribution}")
    return np.ascontiguousarray(out, dtype=np.float32)


def _nearest(sub_vectors, centroids):
    """Index of the nearest centroid per row (float64; only used to build fixtures)."""
    best = np.empty(len(sub_vectors), np.int64)
    c_sq = (centroids * centroids).sum(axis=1)
    for start in range(0, len(sub_vectors), ENCODE_CHUNK):
        x = sub_vectors[start:start + ENCODE_CHUNK]
        best[start:start + ENCODE_CHUNK] = np.argmin(c_sq - 2.0 * x @ centroids.T, axis=1)
    return best


def train_and_encode(vectors, num_sub_vectors, seed):
    """Per sub-space Lloyd k-means on a sample, then codes for all vectors."""
    count, dim = vectors.shape
    sub_dim = dim // num_sub_vectors
    sample = vectors[(uniform01(mix_seeds(seed, "sample"), (min(TRAIN_SAMPLE, count),))
                      * count).astype(np.int64)].astype(np.float64)
    init = (uniform01(mix_seeds(seed, "init"), (num_sub_vectors, NUM_CENTROIDS))
            * len(sample)).astype(np.int64)
    codebook = np.empty((num_sub_vectors, NUM_CENTROIDS, sub_dim), np.float64)
    codes = np.empty((count, num_sub_vectors), np.uint8)
    for i in range(num_sub_vectors):
        cols = slice(i * sub_dim, (i + 1) * sub_dim)
        x = np.ascontiguousarray(sample[:, cols])
        centroids = x[init[i]].copy()
        for _ in range(LLOYD_ITERATIONS):
            assign = _nearest(x, centroids)
            counts = np.bincount(assign, minlength=NUM_CENTROIDS)
            sums = np.stack([np.bincount(assign, x[:, d], NUM_CENTROIDS) for d in range(sub_dim)],
                            axis=1)
            used = counts > 0  # an empty cluster keeps its centroid
            centroids[used] = sums[used] / counts[used, None]
        codebook[i] = centroids
        codes[:, i] = _nearest(np.ascontiguousarray(vectors[:, cols], dtype=np.float64),
                               centroids)
    return np.ascontiguousarray(codebook, dtype=np.float32), codes


def base_vectors(workload, count):
    """The vectors a workload's codes encode (not cached: redrawn from the seed on demand)."""
    shape = workload["shape"]
    return draw_vectors(workload["distribution"], shape.dim, count,
                        mix_seeds(int(workload["seed"]), "base"))


def make_workload(dim, num_sub_vectors, distribution, count, seed):
    vectors = draw_vectors(distribution, dim, count, mix_seeds(seed, "base"))
    codebook, codes = train_and_encode(vectors, num_sub_vectors, mix_seeds(seed, "train"))
    return {"shape": PqShape(dim, num_sub_vectors, NUM_CENTROIDS), "distribution": distribution,
            "codebook": codebook, "codes": codes, "seed": seed}


def _battery_case(name, workload, codes, queries, k):
    return {"name": name, "shape": workload["shape"], "distribution": workload["distribution"],
            "codebook": workload["codebook"], "codes": codes, "queries": queries, "k": k}


def make_battery(speed_workloads):
    """Every shape x battery distribution, plus the edge cases (k = 1, k = n, k > n, tiny n,
    exact ties at the k-th distance), plus every speed workload itself (20,000 vectors, fixed
    queries): a fast path gated on the size or the data of what is timed meets the oracle
    here, not only in the checks while timed."""
    cases = []
    for dim, m in SPEED_SHAPES:
        for dist in BATTERY_DISTRIBUTIONS:
            seed = mix_seeds(FIXTURE_SEED, "battery", dim, m, dist)
            w = make_workload(dim, m, dist, BATTERY_NUM_VECTORS, seed)
            queries = draw_vectors(dist, dim, BATTERY_QUERIES, mix_seeds(seed, "queries"))
            if dist == "mostly_zero":
                queries[0] = 0.0  # the all-zero query: distances are sums of centroid norms
            if dist == "large_dynamic_range":  # a query next to an encoded vector: q^2 + c^2
                decoded = w["codebook"][np.arange(m), w["codes"][0]].reshape(dim)  # - 2qc cancels
                queries[0] = decoded * (1 + NEAR_QUERY_OFFSET * np.cos(np.arange(dim)))
            tag = f"{dim}x{m}/{dist}"
            codes = w["codes"]
            cases.append(_battery_case(f"{tag}/k10", w, codes, queries, SPEED_K))
            cases.append(_battery_case(f"{tag}/k=n", w, codes, queries[:1], len(codes)))
            if dist == "gaussian":
                cases.append(_battery_case(f"{tag}/k1", w, codes, queries, 1))
                cases.append(_battery_case(f"{tag}/k>n", w, codes, queries[:1], len(codes) + 7))
                for n in (1, 5, 17):
                    cases.append(_battery_case(f"{tag}/n{n}", w, codes[:n].copy(), queries,
                                               SPEED_K))
                # 37 distinct rows, each repeated 7 times: the k-th distance sits in a tie.
                tied = np.ascontiguousarray(np.repeat(codes[:37], 7, axis=0))
                for k in (SPEED_K, 12):
                    cases.append(_battery_case(f"{tag}/ties-k{k}", w, tied, queries, k))
    return cases + [_battery_case(f"{w['name']}/speed-scale/k10", w, w["codes"], draw_vectors(
        w["distribution"], w["shape"].dim, BATTERY_QUERIES,
        mix_seeds(int(w["seed"]), "battery queries")), SPEED_K) for w in speed_workloads]


def make_speed_workloads():
    workloads = []
    for dim, m in SPEED_SHAPES:
        for dist in SPEED_DISTRIBUTIONS:
            seed = mix_seeds(FIXTURE_SEED, "speed", dim, m, dist)
            w = make_workload(dim, m, dist, SPEED_NUM_VECTORS, seed)
            w["name"] = f"{dim}x{m}_{dist}"
            workloads.append(w)
    return workloads


def draw_queries(workload, count, seed):
    """Fresh queries from the workload's own distribution (never seen before, never repeated)."""
    shape = workload["shape"]
    return draw_vectors(workload["distribution"], shape.dim, count, seed)


# ---------------------------------------------------------------- the cache
def _cache_key():
    """This file and seeds.py: the only code the fixtures depend on."""
    source = Path(__file__).read_bytes() + Path(sys.modules["seeds"].__file__).read_bytes()
    return hashlib.sha256(source + str(FIXTURE_SEED).encode()).hexdigest()[:16]


def cache_intact(digest):
    """True if the fixture cache still hashes to `digest`; if not, it is deleted."""
    return fixture_cache.intact("pq_l2", "fixtures", _cache_key(), digest)


def load_fixtures():
    """(battery, speed workloads, content sha). A missing, stale or corrupted cache is rebuilt."""
    def build():
        workloads = make_speed_workloads()
        return fixture_cache.pack({"battery": make_battery(workloads), "speed": workloads})

    data, digest = fixture_cache.cached("pq_l2", "fixtures", _cache_key(), build,
                                        "the fixtures")
    try:
        groups = fixture_cache.unpack(data, {"shape": PqShape})
    except (ValueError, KeyError) as e:
        cache_intact("")  # deletes it: the next load rebuilds
        raise RuntimeError(f"fixture cache unreadable ({e}): deleted, run again") from None
    return groups["battery"], groups["speed"], digest


# ---------------------------------------------------------------- other scales (make confirm)
def _encode(vectors, codebook_t):
    """Nearest centroid per sub-vector (float32, exact squared distance; ties to the lowest
    index) for vectors [count, dim] and a codebook laid out [m, sub_dim, num_centroids]."""
    count = vectors.shape[0]
    m, sub_dim, num_centroids = codebook_t.shape
    codes = np.empty((count, m), np.uint8)
    dists = np.empty(num_centroids, np.float32)
    for j in range(count):
        for i in range(m):
            dists[:] = 0
            for d in range(sub_dim):
                x = vectors[j, i * sub_dim + d]
                for c in range(num_centroids):
                    diff = x - codebook_t[i, d, c]
                    dists[c] += diff * diff
            codes[j, i] = np.argmin(dists)
    return codes


@functools.cache
def _compiled_encode():
    from numba import njit  # imported on first use: a trial never needs it

    return njit(cache=True, fastmath=True)(_encode)


def _scaled_key(workloads):
    """What other scales' codes depend on: the seeds, the code that draws and encodes them and
    the speed workloads' codebooks (not the battery: editing it keeps these caches)."""
    digest = hashlib.sha256(Path(sys.modules["seeds"].__file__).read_bytes())
    for function in (draw_vectors, _encode, scaled_workloads):
        digest.update(inspect.getsource(function).encode())
    for w in workloads:
        digest.update(w["name"].encode() + w["codebook"].tobytes() + str(w["seed"]).encode())
    return digest.hexdigest()[:16]


def scaled_workloads(workloads, count):
    """The speed workloads with `count` fresh base vectors each, drawn from the workload's own
    distribution and encoded with its own codebook: the same index at another scale. Cached."""
    if count == SPEED_NUM_VECTORS:
        return workloads

    def build():
        arrays = {}
        for w in workloads:
            progress(f"encoding {count} vectors for {w['name']}")
            codebook_t = np.ascontiguousarray(w["codebook"].transpose(0, 2, 1))
            codes = np.empty((count, w["shape"].num_sub_vectors), np.uint8)
            for start in range(0, count, SCALED_CHUNK):
                size = min(SCALED_CHUNK, count - start)
                vectors = draw_vectors(w["distribution"], w["shape"].dim, size,
                                       mix_seeds(int(w["seed"]), "scaled", count, start))
                codes[start:start + size] = _compiled_encode()(vectors, codebook_t)
            arrays[w["name"]] = codes
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    data, _ = fixture_cache.cached("pq_l2", f"scaled{count}", _scaled_key(workloads), build,
                                   f"{len(workloads)} workloads of {count} vectors")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return [{**w, "codes": npz[w["name"]]} for w in workloads]
