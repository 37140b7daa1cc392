# SPDX-License-Identifier: MIT OR Apache-2.0
"""TOOL: proves the pq_l2 oracle (reference.py) agrees with real Lance (pylance).

`make conformance` (optional extra: tools/requirements-conformance.txt). For every speed workload
and the battery's large_dynamic_range and ties cases, the base vectors go into a temporary Lance
dataset with an IVF_PQ index built from the fixture's own codebook: one partition whose centroid
is zero, so the IVF residual is the vector itself and Lance's `_distance` is its plain PQ
(ADC) distance. Lance's top-k for fresh queries must pass reference.topk_consistent against
reference.exact_distances, with the same tolerance a kernel gets.

Lance encodes the vectors itself, so its codes (read back from the index file) are compared
with the harness's. Every code that differs must be a near-tie (both centroids equally near
within float32 rounding: Lance measures in float32, inputs.py in float64). The oracle is judged
on Lance's own codes; agreement on the harness's codes is reported beside it, and any
difference there comes from such flipped codes, not from the distance semantics.

Battery cases carry codes but no vectors. They are redrawn from the seed make_battery uses
(inputs.base_vectors), each code row mapped to the first base row with the same codes (so the
tie cases become repeated vectors). Real vectors keep Lance's encoding honest; rebuilding
vectors from centroids would make it trivial. A stale seed recipe cannot pass silently: its
vectors would encode to different codes, which fail the near-tie check.
"""
import argparse
import glob
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import inputs  # noqa: E402
import reference  # noqa: E402
from ledger import EXIT_INCORRECT, EXIT_USAGE  # noqa: E402
from seeds import mix_seeds  # noqa: E402

try:
    import lance
    import pyarrow as pa
    from lance.file import LanceFileReader
except ImportError:  # optional extra; main() says how to install it
    lance = None

QUERY_SEED = 0xC0F0_2026  # root of the fresh queries, mixed with each workload's name
NUM_QUERIES = 32  # fresh queries per workload: a few dozen
QUICK_QUERIES = 8  # per workload under --quick
BATTERY_PICKS = ("large_dynamic_range", "ties")  # battery cases whose names contain these
QUICK_NAMES = ("128x16_clustered", "128x16/large_dynamic_range/k10", "128x16/gaussian/ties-k10")
NEAR_TIE_RTOL = 1e-5  # float32 rounding of a sub-vector distance is ~sub_dim * 6e-8 relative


def lance_search(vectors, codebook, queries, k, directory):
    """Lance's answers [(ids, dists)] per query, and the codes Lance stored, [n, m] uint8."""
    n, dim = vectors.shape
    m = codebook.shape[0]
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    ds = lance.write_dataset(pa.table({"id": np.arange(n), "vec": column}), directory)
    ds.create_index("vec", "IVF_PQ", num_partitions=1, num_sub_vectors=m,
                    ivf_centroids=np.zeros((1, dim), np.float32), pq_codebook=codebook)
    got = ds.to_table(columns=["id", "_distance"], nearest={
        "column": "vec", "q": queries, "k": k, "nprobes": 1, "refine_factor": None})
    which, ids, dists = (got[c].to_numpy() for c in ("query_index", "id", "_distance"))
    answers = [(ids[which == j], dists[which == j]) for j in range(len(queries))]
    # The PQ storage is a Lance file of (_rowid, __pq_code); one partition is stored transposed.
    aux = LanceFileReader(glob.glob(f"{directory}/_indices/*/auxiliary.idx")[0])
    table = aux.read_all().to_table()
    codes = np.empty((n, m), np.uint8)
    flat = table["__pq_code"].combine_chunks().flatten().to_numpy()
    codes[table["_rowid"].to_numpy().astype(np.int64)] = flat.reshape(m, n).T
    return answers, codes


def disagreements(answers, exact_fn, codebook, codes, queries, k, shape):
    """One 'query j: reason' per query whose Lance answer fails the oracle's check."""
    out = []
    for j, (ids, dists) in enumerate(answers):
        reason = reference.topk_consistent(ids, dists, exact_fn(codebook, codes, queries[j]),
                                           k, shape)
        if reason:
            out.append(f"query {j}: {reason}")
    return out


def flips_not_near_ties(vectors, codebook, ours, theirs):
    """(row, sub-vector) of codes that differ although one centroid is clearly nearer."""
    sub_dim = codebook.shape[2]
    bad = []
    for row, s in np.argwhere(ours != theirs):
        x = vectors[row, s * sub_dim:(s + 1) * sub_dim].astype(np.float64)
        d_ours, d_theirs = (((x - codebook[s, c].astype(np.float64)) ** 2).sum()
                            for c in (ours[row, s], theirs[row, s]))
        if abs(d_ours - d_theirs) > NEAR_TIE_RTOL * max(d_ours, d_theirs):
            bad.append(f"row {row} sub-vector {s}: ours {d_ours:.9g}, Lance {d_theirs:.9g}")
    return bad


def battery_vectors(case, battery):
    """The vectors a battery case encodes (see the module docstring)."""
    shape, dist = case["shape"], case["distribution"]
    full = next(c["codes"] for c in battery if c["shape"] == shape
                and c["distribution"] == dist and len(c["codes"]) == inputs.BATTERY_NUM_VECTORS)
    seed = mix_seeds(inputs.FIXTURE_SEED, "battery", shape.dim, shape.num_sub_vectors, dist)
    base = inputs.base_vectors({"shape": shape, "distribution": dist, "seed": seed}, len(full))
    first = {row.tobytes(): i for i, row in reversed(list(enumerate(full)))}
    return base[[first[row.tobytes()] for row in case["codes"]]]


def workloads_to_check(quick):
    """(name, vectors, codebook, harness codes, queries, k, shape) per checked workload."""
    battery, speed, _ = inputs.load_fixtures()
    count = QUICK_QUERIES if quick else NUM_QUERIES
    picked = [w for w in speed if not quick or w["name"] in QUICK_NAMES]
    for w in picked:
        queries = inputs.draw_queries(w, count, mix_seeds(QUERY_SEED, w["name"]))
        yield (w["name"], inputs.base_vectors(w, len(w["codes"])), w["codebook"], w["codes"],
               queries, inputs.SPEED_K, w["shape"])
    for c in battery:
        if any(p in c["name"] for p in BATTERY_PICKS) and (not quick or c["name"] in QUICK_NAMES):
            fresh = inputs.draw_queries(c, count, mix_seeds(QUERY_SEED, c["name"]))
            yield (c["name"], battery_vectors(c, battery), c["codebook"], c["codes"],
                   np.concatenate([c["queries"], fresh]), c["k"], c["shape"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small subset (for the tests)")
    args = parser.parse_args(argv)
    if lance is None:
        print("error: pylance is not installed: run "
              ".venv/bin/pip install -r tools/requirements-conformance.txt", file=sys.stderr)
        return EXIT_USAGE
    start, failures, totals = time.perf_counter(), [], [0, 0, 0, 0]
    print(f"pylance {lance.__version__}: oracle vs Lance IVF_PQ (1 zero partition, nprobes 1, "
          "no refine)")
    for name, vectors, codebook, codes, queries, k, shape in workloads_to_check(args.quick):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="pq_l2-conformance-") as tmp:
            answers, lance_codes = lance_search(vectors, codebook, queries, k, f"{tmp}/ds")
        on_lance = disagreements(answers, reference.exact_distances, codebook, lance_codes,
                                 queries, k, shape)
        on_ours = disagreements(answers, reference.exact_distances, codebook, codes,
                                queries, k, shape)
        flipped = int((lance_codes != codes).any(axis=1).sum())
        bad_flips = flips_not_near_ties(vectors, codebook, codes, lance_codes)
        failures += [f"{name}: {m}" for m in on_lance + bad_flips]
        n = len(queries)
        totals = [a + b for a, b in zip(totals, (n, n - len(on_lance), n - len(on_ours), flipped),
                                        strict=True)]
        print(f"  {name:32} queries {n:3}  agree {n - len(on_lance):3}/{n} on Lance's codes, "
              f"{n - len(on_ours):3}/{n} on ours  codes differing {flipped:2}/{len(codes)} rows"
              f"  {time.perf_counter() - t0:5.2f} s")
    q, ok_lance, ok_ours, flipped = totals
    print(f"summary: {ok_lance}/{q} queries agree on Lance's codes, {ok_ours}/{q} on the "
          f"harness's; {flipped} rows encoded differently (near-ties); "
          f"{time.perf_counter() - start:.1f} s")
    if failures:
        print(f"DISAGREE ({len(failures)}); first: {failures[0]}", file=sys.stderr)
        return EXIT_INCORRECT
    return 0


if __name__ == "__main__":
    sys.exit(main())
