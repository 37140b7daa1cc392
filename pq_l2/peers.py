# SPDX-License-Identifier: MIT OR Apache-2.0
"""TOOL: where the pq_l2 kernels stand against what users would pick instead, and the hardware.

`make peers TARGET=pq_l2` (faiss is an optional extra: tools/requirements-peers.txt). Writes no row.
On the judge's speed workloads (same codebooks and codes, fresh queries from a named seed) it
times, single-threaded and interleaved like the judge: faiss IndexPQ loaded with our codebook
and codes, a plain vectorised numpy implementation, and the baseline and champion kernels in
contestant processes exactly as the judge runs them (process CPU time, read from
outside). The first round is untimed and checks every answer of every implementation against
the oracle. Then it prints us/query per combo, a roofline per combo (the larger of a memory
and a table-lookup lower bound), and a `---` block of `key: value` lines.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # single-threaded peers: set before numpy or faiss start a pool

import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
TARGET = HERE.name
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tools"))
import common  # noqa: E402
import inputs  # noqa: E402
import peers_common  # noqa: E402
import reference  # noqa: E402
import run_experiment as judge  # noqa: E402

try:
    import faiss
except ImportError:  # optional extra: numpy, baseline and champion still run
    faiss = None

QUERY_SEED = 0xBEE5_2026  # root of the fresh queries, mixed with the combo name and round
ORDER_SEED = 0x0D3E_2026  # combo order per round: fixed, so two runs visit combos alike
ROUNDS = 8  # timed rounds after the verification round
QUICK_ROUNDS = 2  # timed rounds under --quick (the tests)
QUICK_COMBOS = ("128x16_clustered", "768x96_sparse")  # --quick: the smallest and largest scan
QUICK_QUERIES = 4  # queries per batch under --quick
BANDWIDTH_BYTES = 256 << 20  # array read to measure bandwidth: far larger than any LLC here
BANDWIDTH_REPEATS = 8  # best of: ~10 ms each; other load on the machine only slows a pass
ASSUMED_LOADS_PER_CYCLE = 2  # lookups per cycle: x86 loads since Haswell/Zen 2 (Zen 3+: 3)
FALLBACK_CLOCK_GHZ = 3.0  # used, and said, when /proc/cpuinfo has no "cpu MHz" (e.g. arm64)
INSTALL_HINT = ".venv/bin/pip install -r tools/requirements-peers.txt"  # or `make peers`


# ---------------------------------------------------------------- the in-process peers
def numpy_top_k(dists, k):
    """Ids and distances of the k smallest, ascending: argpartition, then sort those k."""
    k = min(k, len(dists))
    ids = np.argpartition(dists, k - 1)[:k] if k < len(dists) else np.arange(k)
    ids = ids[np.argsort(dists[ids], kind="stable")]
    return ids, dists[ids]


class NumpyPq:
    """What a numpy user writes: a broadcast float32 table, one gather-add per sub-vector."""

    def __init__(self, shape, codebook, codes):
        self.m = shape.num_sub_vectors
        self.sub_dim = shape.dim // self.m
        # [m][sub_dim][256]: the sum over sub_dim then adds whole rows (a short inner-axis
        # reduction over [m][256][sub_dim] is ~6x slower in numpy).
        self.codebook_t = np.ascontiguousarray(codebook.transpose(0, 2, 1))
        self.codes_t = np.ascontiguousarray(codes.T)  # one contiguous row per sub-vector

    def probe_top_k(self, query, k):
        diff = query.reshape(self.m, self.sub_dim, 1) - self.codebook_t
        diff *= diff
        table = diff.sum(axis=1)  # [m, 256] float32
        dists = table[0].take(self.codes_t[0])
        for i in range(1, self.m):
            dists += table[i].take(self.codes_t[i])
        return numpy_top_k(dists, k)


class FaissPq:
    """faiss.IndexPQ holding our codebook and codes (no training): what a faiss user runs."""

    def __init__(self, shape, codebook, codes):
        m = shape.num_sub_vectors
        self.n = len(codes)
        self.index = faiss.IndexPQ(shape.dim, m, 8)  # 8 bits per code: 256 centroids
        # ProductQuantizer.centroids is M * ksub * dsub floats, get_centroids(m, i) at
        # (m * ksub + i) * dsub: our [m][256][sub_dim] layout, copied as is.
        faiss.copy_array_to_vector(np.ascontiguousarray(codebook).ravel(), self.index.pq.centroids)
        self.index.is_trained = True
        self.index.add_sa_codes(np.ascontiguousarray(codes))  # [n, m] uint8 rows, no encoding
        rows = codes[:4]
        decoded = self.index.sa_decode(rows)  # proves the layout: decode = gather centroids
        want = codebook[np.arange(m), rows].reshape(len(rows), -1)
        if self.index.ntotal != self.n or not np.array_equal(decoded, want):
            raise common.HarnessError("faiss IndexPQ does not hold our codebook and codes "
                                      "as loaded: its centroid layout differs")

    def probe_top_k(self, query, k):
        # One query per call, as the kernel is called; faiss then builds one table and scans.
        dists, ids = self.index.search(query.reshape(1, -1), k)
        want = min(k, self.n)
        return ids[0, :want], dists[0, :want]


# ---------------------------------------------------------------- the hardware
def measure_bandwidth_gbs():
    """Single-core read bandwidth from DRAM, GB/s: best of a few passes of numpy's SIMD max
    over a large array (~75 GB/s in cache here, so DRAM, not the max, sets the pace)."""
    big = np.ones(BANDWIDTH_BYTES // 4, np.float32)  # touched now: the passes fault no pages
    best = math.inf
    for _ in range(BANDWIDTH_REPEATS):
        start = time.perf_counter_ns()
        big.max()
        best = min(best, time.perf_counter_ns() - start)
    return big.nbytes / best


def clock_ghz():
    """(GHz, where it came from): the first "cpu MHz" of /proc/cpuinfo (the nominal clock on a
    VM; turbo may run faster, which would lower the lookup bound)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) / 1e3, "/proc/cpuinfo cpu MHz"
    except (OSError, ValueError):
        pass
    return FALLBACK_CLOCK_GHZ, "assumed (no cpu MHz in /proc/cpuinfo)"


def roofline_us(n, m, bandwidth_gbs, ghz, loads_per_cycle=ASSUMED_LOADS_PER_CYCLE):
    """(memory, lookup, roofline) us per query: n * m code bytes streamed at the measured
    bandwidth, n * m table lookups at loads_per_cycle x clock; the roofline is the larger.
    The table build is left out: these are lower bounds."""
    memory = n * m / (bandwidth_gbs * 1e3)
    lookups = n * m / (loads_per_cycle * ghz * 1e3)
    return memory, lookups, max(memory, lookups)


# ---------------------------------------------------------------- the contestants
def pick_kernels(results_path, harness):
    """([(label, source, sha)], note): baseline and champion as the judge would pick them, or
    pq_l2/kernels.py as both when results.tsv has no baseline under this harness_sha."""
    return peers_common.pick_kernels(results_path, harness, HERE)


# ---------------------------------------------------------------- checking
def verify(answers, w, queries):
    """'label combo query j: reason' for every answer that fails the oracle's check."""
    problems = []
    for j, query in enumerate(queries):
        exact = reference.exact_distances(w["codebook"], w["codes"], query)
        for label, outs in answers.items():
            problem = judge.check_output(outs[j], exact, inputs.SPEED_K, w["shape"])
            if problem:
                problems.append(f"{label} {w['name']} query {j}: {problem}")
    return problems


# ---------------------------------------------------------------- the report
def report(us, roofs, names, labels, extra):
    header = f"{'combo':18}" + "".join(f"{label:>10}" for label in labels)
    print(f"us/query, median over rounds (CPU time, one core)\n{header}"
          f"{'roofline':>10}{'memory':>9}{'lookups':>9}")
    for n in names:
        cells = "".join(f"{us[label][n]:10.1f}" for label in labels)
        memory, lookups, roof = roofs[n]
        print(f"{n:18}{cells}{roof:10.1f}{memory:9.1f}{lookups:9.1f}")
    print("contestant figures include the harness's cost per request (make calibrate measures "
          "it: harness_overhead); in-process peers pay none")
    us = {**us, "roofline": {n: roofs[n][2] for n in names}}
    block = {"target": TARGET, **extra,
             "champion_vs_faiss": peers_common.ratio_text(us, "champion", "faiss", names),
             "champion_vs_numpy": peers_common.ratio_text(us, "champion", "numpy", names),
             "champion_vs_roofline": peers_common.ratio_text(us, "champion", "roofline", names),
             "baseline_vs_faiss": peers_common.ratio_text(us, "baseline", "faiss", names),
             "baseline_vs_roofline": peers_common.ratio_text(us, "baseline", "roofline", names),
             "faiss_vs_roofline": peers_common.ratio_text(us, "faiss", "roofline", names)}
    from_faiss = (f"{block['champion_vs_faiss']}x from faiss" if "faiss" in us
                  else "faiss not run")
    print(f"headroom: champion is {from_faiss}, {block['champion_vs_roofline']}x from the "
          "roofline (geomean over combos)")
    for n in names:
        cells = " ".join(f"{label}_us {us[label][n]:.1f}" for label in (*labels, "roofline"))
        block[f"combo_{n}"] = cells
    return block


def main(argv=None):
    try:
        run = peers_common.start_run(argv, __doc__, HERE, inputs, QUICK_COMBOS)
    except common.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    args, workloads = run.args, run.workloads
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    bandwidth = measure_bandwidth_gbs()
    os.sched_setaffinity(0, set(cpus[:-1]) or {cpus[-1]})
    ghz, clock_source = clock_ghz()
    impls = []
    if faiss is None:
        common.progress(f"faiss: skipped, faiss-cpu is not installed: {INSTALL_HINT}")
        faiss_state = f"not installed ({INSTALL_HINT})"
    else:
        faiss.omp_set_num_threads(1)
        impls.append({"label": "faiss", "peers": {w["name"]: FaissPq(
            w["shape"], w["codebook"], w["codes"]) for w in workloads}})
        faiss_state = f"faiss-cpu {faiss.__version__} IndexPQ, 1 thread"
    impls.append({"label": "numpy", "peers": {w["name"]: NumpyPq(
        w["shape"], w["codebook"], w["codes"]) for w in workloads}})
    contestants = []
    try:
        budget_end = time.monotonic() + common.TIME_BUDGET_SECS
        warm = [(inputs.draw_queries(workloads[0], 1, QUERY_SEED)[0], inputs.SPEED_K)]
        contestants = peers_common.start_contestants(run.kernels, workloads, cpus, budget_end,
                                                     judge, warm)
        peers_common.pin_contestants(contestants, cpus)
        impls += [{"label": c.label, "contestant": c} for c in contestants]
        rounds = QUICK_ROUNDS if args.quick else ROUNDS
        per_batch = (lambda w: QUICK_QUERIES) if args.quick else judge.queries_per_batch

        def draw_calls(w, r):
            seed = common.mix_seeds(QUERY_SEED, w["name"], r)
            return [(q, inputs.SPEED_K) for q in inputs.draw_queries(w, per_batch(w), seed)]

        def check(answers, w, calls):
            problems = verify(answers, w, [q for q, _ in calls])
            return problems, bool(problems)

        ns, _, problems = peers_common.time_rounds(impls, workloads, rounds, cpus,
                                                   judge.KERNEL_METHOD, ORDER_SEED,
                                                   draw_calls, check)
    except common.TrialFault as fault:
        print(f"error: {fault}", file=sys.stderr)
        return common.STATUS_EXIT[fault.status]
    finally:
        for c in contestants:
            c.close()
    if problems:
        print(f"DISAGREE with the oracle ({len(problems)}); first: {problems[0]}",
              file=sys.stderr)
        return common.STATUS_EXIT["fail"]
    names = [w["name"] for w in workloads]
    us = peers_common.kernel_times(ns, names)
    labels = [label for label in ("faiss", "numpy", "baseline", "champion") if label in us]
    roofs = {w["name"]: roofline_us(len(w["codes"]), w["shape"].num_sub_vectors, bandwidth, ghz)
             for w in workloads}
    extra = {"faiss": faiss_state, **peers_common.kernel_rows(run),
             "verified": "every answer of the untimed first round, by the oracle",
             "rounds": rounds,
             "memory_bandwidth_gbs": f"{bandwidth:.1f}",
             "assumed_loads_per_cycle": ASSUMED_LOADS_PER_CYCLE,
             "clock_ghz": f"{ghz:.3f} ({clock_source})"}
    block = report(us, roofs, names, labels, extra)
    block["total_seconds"] = f"{time.monotonic() - run.started:.1f}"
    block["harness_sha"] = run.harness
    common.print_block(block)
    return common.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
