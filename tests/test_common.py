# SPDX-License-Identifier: MIT OR Apache-2.0
"""Unit tests of the judge's modules: seeds, statistics, the gate, RSS, results.tsv, the reply
codec, the harness hash."""
import itertools
import json
import math
import os
import re
import stat
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO

import common
import contestant
import ledger
import sandbox
import seeds
import trials
import wire

# Vigna's splitmix64.c, seed 1234567 (also the Rosetta Code "Splitmix64" task values).
SPLITMIX_SEED = 1234567
SPLITMIX_FIRST = (6457827717110365317, 3203168211198807973, 9817491932198370423,
                  4593380528125082431, 16408922859458223821)
SPLITMIX_ZERO_FIRST = 0xE220A8397B1DCDAF  # first output of splitmix64 seeded with 0
STREAM_SEEDS = (0, 1, SPLITMIX_SEED, seeds.MASK64, 2**63 + 12345)  # incl. wrap-around
STREAM_COUNT = 1000
SMALL_SEEDS = range(51)
TOUCH_MB = 200  # resident allocation the RSS probe must see
RESERVE_MB = 2048  # untouched allocation it must not see
MIN_SEEN_MB = 150
MAX_UNSEEN_MB = 50
T_TABLE_90 = {3: 2.3534, 4: 2.1318, 5: 2.0150, 10: 1.8125, 30: 1.6973}  # Student t, 0.95
HWM_SLACK_MB = 8  # the kernel's RSS counters are per-CPU batched: reads jitter slightly
LOG_PATTERN = (-0.02, 0.01, 0.03, -0.015, 0.005)  # deterministic "noisy" log ratios

ROW = {c: f"{c}-value" for c in ledger.RESULTS_COLUMNS if c != "row_mac"}
MAC = re.compile(r"[0-9a-f]{16}")


# ---------------------------------------------------------------- seeds
def test_splitmix64_known_answers():
    rng = seeds.SplitMix64(SPLITMIX_SEED)
    assert tuple(rng.next_u64() for _ in SPLITMIX_FIRST) == SPLITMIX_FIRST
    assert seeds.SplitMix64(0).next_u64() == SPLITMIX_ZERO_FIRST


def test_splitmix64_stream_matches_scalar_generator():
    for seed in STREAM_SEEDS:
        rng = seeds.SplitMix64(seed)
        scalar = [rng.next_u64() for _ in range(STREAM_COUNT)]
        stream = seeds.splitmix64_stream(seed, STREAM_COUNT)
        assert stream.dtype == np.uint64
        assert [int(v) for v in stream] == scalar


def test_splitmix64_stream_known_answers():
    assert tuple(int(v) for v in seeds.splitmix64_stream(SPLITMIX_SEED, 5)) == SPLITMIX_FIRST


def test_mix_seeds_single_int_is_first_splitmix_output():
    # One part: h = mix(0 + gamma + part), i.e. SplitMix64(part) stepped once.
    for seed in STREAM_SEEDS:
        assert seeds.mix_seeds(seed) == seeds.SplitMix64(seed).next_u64()


def test_mix_seeds_pairs_are_distinct():
    values = {seeds.mix_seeds(a, b) for a, b in itertools.product(SMALL_SEEDS, repeat=2)}
    assert len(values) == len(SMALL_SEEDS) ** 2


def test_mix_seeds_is_order_sensitive():
    for a, b in itertools.combinations(SMALL_SEEDS, 2):
        assert seeds.mix_seeds(a, b) != seeds.mix_seeds(b, a)
    assert seeds.mix_seeds("base", 7) != seeds.mix_seeds(7, "base")


def test_mix_seeds_is_not_plain_xor():
    # Any XOR of per-part values would be commutative and collapse (x, x) to one value.
    doubled = {seeds.mix_seeds(x, x) for x in SMALL_SEEDS}
    assert len(doubled) == len(SMALL_SEEDS) and 0 not in doubled
    for a, b in itertools.product(range(8), repeat=2):
        assert seeds.mix_seeds(a, b) != a ^ b
        assert seeds.mix_seeds(a, b) != seeds.mix_seeds(a) ^ seeds.mix_seeds(b)


def test_mix_seeds_parts_types():
    assert seeds.mix_seeds(np.int64(5), "x") == seeds.mix_seeds(5, "x")
    assert seeds.mix_seeds("a") != seeds.mix_seeds("b")
    assert seeds.mix_seeds("5") != seeds.mix_seeds(5)  # strings are hashed, not parsed
    assert seeds.mix_seeds(-1) == seeds.mix_seeds(seeds.MASK64)  # ints wrap to 64 bits
    assert 0 <= seeds.mix_seeds(3, "noise", 2**70) <= seeds.MASK64


def test_uniform01_and_normal_are_deterministic():
    u = seeds.uniform01(SPLITMIX_SEED, (100, 3))
    assert u.shape == (100, 3) and u.min() >= 0.0 and u.max() < 1.0
    np.testing.assert_array_equal(u, seeds.uniform01(SPLITMIX_SEED, (100, 3)))
    z = seeds.standard_normal(SPLITMIX_SEED, (7, 5))  # odd count: one sine value unused
    assert z.shape == (7, 5) and np.all(np.isfinite(z))
    np.testing.assert_array_equal(z, seeds.standard_normal(SPLITMIX_SEED, (7, 5)))


# ---------------------------------------------------------------- statistics
def test_geomean_known_values():
    assert common.geomean([1.0, 4.0, 16.0]) == pytest.approx(4.0)
    assert common.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert common.geomean([0.5, 2.0]) == pytest.approx(1.0)
    assert common.geomean([3.0]) == pytest.approx(3.0)


def test_log_ratio_summary_values():
    # n = 5, 20 % trimmed: one value off each end (Yuen's trimmed mean and winsorized error)
    mean, stderr, dof = common.log_ratio_summary(LOG_PATTERN)
    assert mean == pytest.approx(np.mean([-0.015, 0.005, 0.01]))
    winsorized = [-0.015, -0.015, 0.005, 0.01, 0.01]
    assert stderr == pytest.approx(np.std(winsorized, ddof=1) / (0.6 * math.sqrt(5)))
    assert dof == 5 - 2 - 1


def test_log_ratio_summary_shrugs_off_one_burst():
    steady = [0.001 * (i % 3) for i in range(16)]
    burst = steady[:-1] + [0.5]  # one round hit by a neighbour
    assert common.log_ratio_summary(burst)[0] == pytest.approx(
        common.log_ratio_summary(steady)[0], abs=0.001)


def test_log_ratio_summary_without_trimming_is_the_mean():
    two = (0.01, 0.03)  # too few rounds to trim
    mean, stderr, dof = common.log_ratio_summary(two)
    assert mean == pytest.approx(0.02) and dof == 1
    assert stderr == pytest.approx(np.std(two, ddof=1) / math.sqrt(2))


def test_ratio_ci_contains_the_mean():
    mean, stderr, dof = common.log_ratio_summary(LOG_PATTERN)
    ratio, lo, hi = common.ratio_with_ci(mean, stderr, dof)
    assert ratio == pytest.approx(math.exp(mean))
    assert lo < ratio < hi
    # log-symmetric around the mean
    assert math.log(hi) - math.log(ratio) == pytest.approx(math.log(ratio) - math.log(lo))


def test_ratio_ci_zero_stderr_is_a_point():
    assert common.ratio_with_ci(math.log(0.9), 0.0, 5) == pytest.approx((0.9, 0.9, 0.9))


def test_ratio_ci_shrinks_with_more_samples():
    def width(repeats):
        _, lo, hi = common.ratio_with_ci(*common.log_ratio_summary(LOG_PATTERN * repeats))
        return hi - lo

    widths = [width(r) for r in (1, 2, 4, 16)]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == len(widths)


def test_t_quantile_matches_table_values():
    for dof in (5, 10, 30):
        assert common.t_quantile_90(dof) == pytest.approx(T_TABLE_90[dof], rel=0.005)
    assert common.t_quantile_90(10_000) == pytest.approx(common.CI_Z, rel=1e-3)


def test_t_quantile_within_documented_accuracy_from_dof_3():
    for dof in (3, 4):
        assert common.t_quantile_90(dof) == pytest.approx(T_TABLE_90[dof], rel=0.005)


def test_combined_geomean_properties():
    one = common.log_ratio_summary(LOG_PATTERN)
    single = common.ratio_with_ci(*one)
    combined = common.combined_geomean([one] * 4)
    assert combined[0] == pytest.approx(single[0])
    assert combined[1] < combined[0] < combined[2]
    assert combined[2] - combined[1] < single[2] - single[1]  # independent combos average out
    # the centre is the geomean of the per-combo ratios
    shifted = (one[0] + 0.1, one[1], one[2])
    ratio, lo, hi = common.combined_geomean([one, shifted])
    assert ratio == pytest.approx(math.exp(one[0] + 0.05))
    assert lo < ratio < hi


# ---------------------------------------------------------------- the gate
def decide(geo, lo, hi, combos=None):
    return common.decide(False, geo, lo, hi, combos or {"a": (geo, lo, hi)})


def test_decide_baseline():
    verdict, _ = common.decide(True, 2.0, 1.9, 2.1, {"a": (2.0, 1.9, 2.1)})
    assert verdict == "baseline"


def test_decide_keep():
    assert decide(0.95, 0.93, 0.97)[0] == "keep"
    assert decide(1 - common.MIN_GAIN, 0.97, 0.995)[0] == "keep"  # the floor itself is a gain


def test_decide_discard_when_ci_reaches_one():
    verdict, reason = decide(0.95, 0.90, 1.0)
    assert verdict == "discard" and "upper" in reason
    assert decide(0.95, 0.90, 1.02)[0] == "discard"


def test_decide_discard_under_gain_floor():
    verdict, reason = decide(0.995, 0.990, 0.999)
    assert verdict == "discard" and "floor" in reason


def test_a_targets_own_floor_replaces_the_default():
    combos = {"a": (0.98, 0.97, 0.99)}
    assert common.decide(False, 0.98, 0.97, 0.99, combos)[0] == "keep"
    verdict, reason = common.decide(False, 0.98, 0.97, 0.99, combos, min_gain=0.03)
    assert verdict == "discard" and "3% floor" in reason


def test_decide_worst_case_guard():
    slow = 1 + common.WORST_REGRESSION
    combos = {"fast": (0.7, 0.65, 0.75), "slow": (slow, 1.01, 1.1)}
    verdict, reason = decide(0.8, 0.75, 0.85, combos)
    assert verdict == "discard" and "worst-case" in reason and "slow" in reason
    # not significant (CI lower <= 1), or not slow enough: no guard
    combos["slow"] = (1.2, 1.0, 1.4)
    assert decide(0.8, 0.75, 0.85, combos)[0] == "keep"
    combos["slow"] = (slow - 0.001, 1.01, 1.1)
    assert decide(0.8, 0.75, 0.85, combos)[0] == "keep"


@pytest.mark.parametrize("geo, lo, hi", [(math.nan,) * 3, (0.95, math.nan, math.nan)])
def test_decide_never_keeps_without_a_finite_ci(geo, lo, hi):
    assert decide(geo, lo, hi)[0] == "discard"


# ---------------------------------------------------------------- peak RSS
RSS_PROBE = f"""
import json, sys
import numpy as np
sys.path.insert(0, {str(REPO)!r})
import contestant
start = contestant.peak_rss_mb()
reserved = np.empty({RESERVE_MB} << 17)  # float64: never touched, so never resident
after_reserve = contestant.peak_rss_mb()
touched = np.ones({TOUCH_MB} << 17)
after_touch = contestant.peak_rss_mb()
del reserved, touched
print(json.dumps([start, after_reserve, after_touch, contestant.peak_rss_mb()]))
"""


def test_peak_rss_is_resident_high_water_mark():
    done = subprocess.run([sys.executable, "-c", RSS_PROBE], capture_output=True, text=True,
                          check=True, timeout=60)
    start, after_reserve, after_touch, after_free = json.loads(done.stdout)
    assert after_reserve - start < MAX_UNSEEN_MB
    assert after_touch - after_reserve >= MIN_SEEN_MB
    assert after_free >= after_touch - HWM_SLACK_MB  # freeing does not lower the mark


# ---------------------------------------------------------------- results.tsv
def test_append_result_writes_header_once(tmp_path):
    path = tmp_path / "results.tsv"
    ledger.append_result(path, ROW)
    ledger.append_result(path, {**ROW, "status": "keep"})
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == list(ledger.RESULTS_COLUMNS)
    assert len(lines) == 3
    assert all(len(line.split("\t")) == len(ledger.RESULTS_COLUMNS) for line in lines)


def without_mac(rows):
    return [{c: v for c, v in row.items() if c != "row_mac"} for row in rows]


def test_read_results_round_trips(tmp_path):
    path = tmp_path / "results.tsv"
    rows = [ROW, {**ROW, "status": "keep", "description": "second"}]
    for row in rows:
        ledger.append_result(path, row)
    read = ledger.read_results(path)
    assert without_mac(read) == rows
    assert all(MAC.fullmatch(row["row_mac"]) for row in read)
    assert read[0]["row_mac"] != read[1]["row_mac"]


def test_row_key_is_private(tmp_path):
    ledger.append_result(tmp_path / "results.tsv", ROW)
    key = tmp_path / ".results.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and len(key.read_bytes()) == 32


def test_rows_the_harness_did_not_write_are_ignored(tmp_path, capsys):
    path = tmp_path / "results.tsv"
    ledger.append_result(path, ROW)
    ledger.append_result(path, {**ROW, "status": "discard"})
    text = path.read_text()
    path.write_text(text.replace("\tdiscard\t", "\tkeep\t"))  # a forged verdict
    assert without_mac(ledger.read_results(path)) == [ROW]
    assert "line 3 was not written by the harness" in capsys.readouterr().err
    (tmp_path / ".results.key").unlink()  # without the key no row verifies
    assert ledger.read_results(path) == []


def test_read_results_missing_or_empty(tmp_path):
    assert ledger.read_results(tmp_path / "absent.tsv") == []
    (tmp_path / "empty.tsv").write_text("")
    assert ledger.read_results(tmp_path / "empty.tsv") == []


def test_append_result_missing_columns_are_empty(tmp_path):
    path = tmp_path / "results.tsv"
    ledger.append_result(path, {"status": "crash"})
    (row,) = ledger.read_results(path)
    assert row["status"] == "crash" and row["geomean_ratio"] == ""
    assert MAC.fullmatch(row["row_mac"])  # filled in by append_result, never by the caller


def test_fields_are_sanitised(tmp_path):
    path = tmp_path / "results.tsv"
    ledger.append_result(path, {**ROW, "description": "tab\there\nnew line\r\n  end  "})
    (row,) = ledger.read_results(path)
    assert row["description"] == "tab here new line end"
    assert len(path.read_text().splitlines()) == 2


def test_torn_last_line_is_skipped_then_cut_by_the_next_append(tmp_path, capsys):
    path = tmp_path / "results.tsv"
    ledger.append_result(path, ROW)
    intact = path.read_bytes()
    torn = intact + b"2026-01-01T00:00:00Z\tpq_l2\tTORN"  # a run killed mid-write
    path.write_bytes(torn)
    assert without_mac(ledger.read_results(path)) == [ROW]
    assert path.read_bytes() == torn  # reading never writes
    assert "torn" in capsys.readouterr().err
    ledger.append_result(path, ROW)  # the append cuts the torn tail, then goes on a clean line
    assert path.read_bytes().startswith(intact) and b"TORN" not in path.read_bytes()
    assert without_mac(ledger.read_results(path)) == [ROW, ROW]


def test_non_utf8_description_is_logged(tmp_path):
    path = tmp_path / "results.tsv"
    ledger.append_result(path, {**ROW, "description": "caf\udce9"})  # DESC=$'caf\xe9'
    assert ledger.read_results(path)[0]["description"].startswith("caf")


def test_torn_line_cut_keeps_crlf_rows(tmp_path):
    path = tmp_path / "results.tsv"
    for status in ("a", "b", "c"):
        ledger.append_result(path, {**ROW, "status": status})
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n") + b"2026-01-01T00:00")
    assert [row["status"] for row in ledger.read_results(path)] == ["a", "b", "c"]
    ledger.append_result(path, {**ROW, "status": "d"})
    assert [row["status"] for row in ledger.read_results(path)] == ["a", "b", "c", "d"]


def test_wrong_field_count_names_the_line(tmp_path):
    path = tmp_path / "results.tsv"
    ledger.append_result(path, ROW)
    ledger.append_result(path, ROW)
    with open(path, "a") as f:
        f.write("only\tthree\tfields\n")
    ledger.append_result(path, ROW)
    with pytest.raises(ledger.HarnessError) as info:
        ledger.read_results(path)
    assert info.value.code == ledger.EXIT_USAGE
    assert "line 4" in str(info.value) and "3 fields" in str(info.value)


def test_wrong_header_is_a_usage_error(tmp_path):
    path = tmp_path / "results.tsv"
    header = list(ledger.RESULTS_COLUMNS)
    header[1], header[2] = header[2], header[1]
    path.write_text("\t".join(header) + "\n")
    with pytest.raises(ledger.HarnessError) as info:
        ledger.read_results(path)
    assert info.value.code == ledger.EXIT_USAGE
    assert "line 1" in str(info.value)


# ---------------------------------------------------------------- the reply codec
REPLY_BYTES = wire.REPLY_HEADER_BYTES + (1 << 16)  # a small reply memory for the tests


def encoded(results, base=None, start=wire.REPLY_HEADER_BYTES):
    replies = bytearray(REPLY_BYTES)
    size = wire.encode_reply(results, replies, start, base)
    return replies, size


def header_words(replies):
    (count,) = struct.unpack_from("<Q", replies)
    return list(struct.unpack_from(f"<{count}q", replies, 8))


def with_words(replies, words):
    """The reply with its header replaced by `words` (the arrays stay where they are)."""
    replies = bytearray(replies)
    struct.pack_into(f"<Q{len(words)}q", replies, 0, len(words), *words)
    return replies


def sample_outputs():
    ids = np.arange(5, dtype=np.int64)
    dists = np.linspace(0, 1, 5, dtype=np.float32)
    return [(ids, dists), (ids[::-1], dists * 2), (ids + 1, dists + 1)]


def test_uniform_outputs_travel_stacked_and_come_back_intact():
    results = sample_outputs()
    replies, size = encoded(results)
    assert header_words(replies)[0] == wire.REPLY_STACKED
    outs, error = wire.decode_reply(memoryview(replies)[:size])
    assert error is None and len(outs) == 3
    for got, want in zip(outs, results, strict=True):
        assert [(a.dtype, a.shape) for a in got] == [(a.dtype, a.shape) for a in want]
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
        assert all(type(a) is np.ndarray for a in got)


def test_mixed_outputs_travel_one_array_at_a_time():
    ids, dists = sample_outputs()[0]
    results = [(ids, dists), (ids[:2], dists[:2].astype(np.float64)), (ids.reshape(5, 1),)]
    replies, size = encoded(results)
    assert header_words(replies)[0] == wire.REPLY_OK
    outs, error = wire.decode_reply(memoryview(replies)[:size])
    assert error is None
    assert [[(a.dtype, a.shape) for a in out] for out in outs] == [
        [(a.dtype, a.shape) for a in out] for out in results]
    assert np.array_equal(outs[2][0], ids.reshape(5, 1))


def test_error_reply():
    replies = bytearray(REPLY_BYTES)
    size = wire.encode_error("boom | line two", replies)
    assert wire.decode_reply(memoryview(replies)[:size]) == (None, "boom | line two")


@pytest.mark.parametrize("corrupt", [
    lambda w: w[:3] + [len(wire.DTYPES)] + w[4:],  # a dtype code beyond the whitelist
    lambda w: w[:4] + [wire.MAX_NDIM + 1] + w[5:],  # too many dimensions
    lambda w: w[:5] + [8] + w[6:],  # the first array inside the header
    lambda w: w[:5] + [REPLY_BYTES - 4] + w[6:],  # past the end of the reply
    lambda w: w[:6] + [-1] + w[7:],  # a negative dimension
    lambda w: w[:6] + [1 << 40] + w[7:],  # a shape larger than the reply
    lambda w: w + [7],  # words left over
    lambda w: w[:-2],  # a truncated header
    lambda w: [5] + w[1:],  # an unknown status
])
def test_decode_rejects_malformed_headers(corrupt):
    replies, _ = encoded(sample_outputs())
    bad = with_words(replies, corrupt(header_words(replies)))
    with pytest.raises(ValueError):
        wire.decode_reply(memoryview(bad))


def test_filled_output_slot_is_sent_in_place():
    replies = bytearray(REPLY_BYTES)
    cursor = [wire.REPLY_HEADER_BYTES]
    (out,) = wire.fill_slots((wire.output_slot(np.uint32, 100),), replies, cursor)
    out[:] = np.arange(100, dtype=np.uint32)
    base = np.frombuffer(replies, np.uint8).ctypes.data
    size = wire.encode_reply([(out[:60],)], replies, cursor[0], base)
    outs, _ = wire.decode_reply(memoryview(replies)[:size])
    np.testing.assert_array_equal(outs[0][0], np.arange(60, dtype=np.uint32))
    assert size == wire.REPLY_HEADER_BYTES + 60 * 4  # no copy was appended


class TrivialSubclass(np.ndarray):
    pass


@pytest.mark.parametrize("make", [
    lambda: np.ma.array(np.arange(3)),
    lambda: np.arange(3).view(TrivialSubclass),
    lambda: [1, 2, 3],
    lambda: np.array(["a", "b"]),
    lambda: np.array([1, 2], dtype=object),
])
@pytest.mark.parametrize("calls", [1, 2])  # one output, or a batch that could be stacked
def test_encode_refuses_what_is_not_a_plain_numeric_array(make, calls):
    with pytest.raises(TypeError):
        encoded([(make(), np.zeros(3, np.float32))] * calls)


@pytest.mark.parametrize("out", [
    [np.arange(3), np.zeros(3, np.float32)],
    np.arange(3),
    None,
])
def test_encode_refuses_non_tuple_output(out):
    with pytest.raises(TypeError):
        encoded([out, out])


def test_calls_travel_as_columns():
    queries = [np.full(4, j, np.float32) for j in range(3)]
    columns = wire.columns_of([(q, 10) for q in queries])
    assert columns[0].shape == (3, 4) and columns[1] == [10, 10, 10]
    mixed = wire.columns_of([(np.zeros(2),), (np.zeros(3),)])
    assert type(mixed[0]) is list  # shapes differ: one array per call


# ---------------------------------------------------------------- the no-seccomp fallback
FORKING_KERNEL = b"""
import subprocess
class PqKernel:
    def __init__(self, *args):
        self.child = subprocess.Popen(["sleep", "30"])
"""


def test_verify_catches_processes_where_seccomp_is_missing(monkeypatch):
    monkeypatch.setattr(sandbox, "install_seccomp", lambda *args: None)  # as if unsupported
    child = contestant.Contestant("candidate", FORKING_KERNEL, "PqKernel", REPO / "pq_l2",
                                  time.monotonic() + 60, 0)
    try:
        child.receive("import")
        child.request("__init__", "init", "h", ())
        with pytest.raises(ledger.TrialFault) as info:
            child.verify("the end of correctness")
        assert info.value.status == "fail" and "started processes" in str(info.value)
    finally:
        child.close()


TWO_CORES_KERNEL = b"""
import hashlib, os, threading
class PqKernel:
    def __init__(self, *args):
        os.sched_setaffinity(0, range(os.cpu_count()))  # seccomp would refuse this
    def run(self):
        work = [threading.Thread(target=hashlib.sha256, args=(bytes(64 << 20),))
                for _ in range(4)]  # hashing runs without the GIL
        for thread in work:
            thread.start()
        for thread in work:
            thread.join()
        return ()
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_more_than_one_core_fails_where_seccomp_is_missing(monkeypatch):
    monkeypatch.setattr(sandbox, "install_seccomp", lambda *args: None)  # as if unsupported
    child = contestant.Contestant("candidate", TWO_CORES_KERNEL, "PqKernel", REPO / "pq_l2",
                                  time.monotonic() + 60, 0)
    try:
        child.receive("import")
        child.request("__init__", "init", "h", ())
        with pytest.raises(ledger.TrialFault) as info:
            child.request("a call", "call", "h", "run", [()])
        assert info.value.status == "fail" and "used more than one core in a call" in str(
            info.value)
    finally:
        child.close()


SPINNER_KERNEL = b"""
import threading
def spin():
    while True:
        pass
class PqKernel:
    def __init__(self, *args):
        threading.Thread(target=spin, daemon=True).start()  # its main thread replies, sleeps
"""


def test_a_thread_still_running_after_the_reply_is_named_for_that():
    """Its main thread sleeps in the read of the next request, another thread runs: the CPU
    burned after the reply is work escaping the timer, not a second core (it has one)."""
    child = contestant.Contestant("candidate", SPINNER_KERNEL, "PqKernel", REPO / "pq_l2",
                                  time.monotonic() + 60, 0)
    try:
        child.receive("import")
        with pytest.raises(ledger.TrialFault) as info:
            child.request("__init__", "init", "h", ())
        assert info.value.status == "fail" and str(info.value).startswith(
            "candidate kernel kept running after its reply (work escaping the timer) in "
            "__init__: ")
    finally:
        child.close()


LATE_WORK_KERNEL = b"""
import os, threading, time
BURN_NS = int(os.environ.get("LATE_BURN_NS", "0"))
def burn_later():
    time.sleep(0.3)  # long after the judge's reading of the reply
    end = time.thread_time_ns() + BURN_NS
    while time.thread_time_ns() < end:
        pass
class PqKernel:
    def __init__(self, *args):
        threading.Thread(target=burn_later, daemon=True).start()
"""


@pytest.mark.parametrize("burn_ms", [3, 30])
def test_cpu_between_requests_is_charged_to_the_next_or_fails(monkeypatch, burn_ms):
    """Work a thread starts after the reply's reading: a few ms are added to the kernel's next
    request (none escapes its clock); more than IDLE_CPU_LIMIT_NS is work escaping the timer."""
    monkeypatch.setenv("LATE_BURN_NS", str(burn_ms * 1_000_000))
    child = contestant.Contestant("candidate", LATE_WORK_KERNEL, "PqKernel", REPO / "pq_l2",
                                  time.monotonic() + 60, 0)
    try:
        child.receive("import")
        _, init_cpu, _ = child.request("__init__", "init", "h", ())
        time.sleep(0.6)  # the thread has slept, burned and exited
        assert init_cpu < burn_ms * 1e6  # the burn came after this request's reading
        if burn_ms * 1e6 < contestant.IDLE_CPU_LIMIT_NS:
            _, cpu, _ = child.request("verify", "verify")
            assert cpu >= burn_ms * 1e6
        else:
            with pytest.raises(ledger.TrialFault) as info:
                child.request("verify", "verify")
            assert info.value.status == "fail" and re.match(
                rf"candidate kernel burned {burn_ms}\.\d ms CPU between its requests, before "
                "the verify", str(info.value))
    finally:
        child.close()


def test_a_reading_counts_only_once_a_second_one_agrees(monkeypatch):
    """The scheduler adds a thread's last stretch on the CPU to the clock just after /proc
    shows it asleep: the first reading (100) lags, the next ones (250) hold."""
    readings = iter([100, 250, 250, 999])
    monkeypatch.setattr(contestant, "_running_threads", lambda pid: 0)
    monkeypatch.setattr(contestant, "process_cpu_ns", lambda pid: next(readings))
    assert contestant.settled_cpu_ns(1) == (250, True)


def test_settled_cpu_of_a_sleeping_process_is_its_clock():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)  # the interpreter is up and asleep
        ns, asleep = contestant.settled_cpu_ns(sleeper.pid, 1.0)
        time.sleep(0.05)
        assert asleep and ns > 0 and contestant.process_cpu_ns(sleeper.pid) == ns
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_process_that_never_sleeps_does_not_settle():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # past the interpreter's start, which may wait on the disk
        started = time.monotonic()
        _, asleep = contestant.settled_cpu_ns(spinner.pid, 0.2)
        assert not asleep and 0.2 <= time.monotonic() - started < 1.0
    finally:
        spinner.kill()
        spinner.wait()


# ---------------------------------------------------------------- git states: one line each
def test_git_note_names_each_state(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger, "REPO", tmp_path)
    (tmp_path / "pq_l2").mkdir()
    (tmp_path / "requirements.txt").write_text("numpy\n")
    assert "no git repository" in ledger.git_note("pq_l2")

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                        *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (tmp_path / "harness.py").write_text("x = 1\n")
    git("add", "harness.py", "requirements.txt")
    git("commit", "-qm", "one")
    assert ledger.git_note("pq_l2") is None
    (tmp_path / "pq_l2" / "kernels.py").write_text("edited\n")  # the agent's file: no note
    (tmp_path / "README.md").write_text("docs\n")  # not hashed: no note either
    assert ledger.git_note("pq_l2") is None
    (tmp_path / "harness.py").write_text("x = 2\n")
    assert ledger.git_note("pq_l2") == ("uncommitted harness changes (harness.py): harness_sha "
                                        "covers them")
    git("checkout", "-q", "--", "harness.py")
    git("checkout", "-q", "--detach")
    assert "detached HEAD" in ledger.git_note("pq_l2")


# ---------------------------------------------------------------- the harness hash
UNHASHED_EDITS = ("README.md", "HARNESS.md", "docs/design.md", "tools/report.py",
                  "tools/templates/target/kernels.py", "pq_l2/kernels.py", "pq_l2/program.md",
                  "pq_l2/peers.py", "pq_l2/conformance.py", "bitpack/reference.py",
                  "tests/conftest.py")
HASHED_EDITS = ("common.py", "contestant.py", "child.py", "sandbox.py", "ledger.py", "seeds.py",
                "requirements.txt", "pq_l2/reference.py", "pq_l2/inputs.py",
                "pq_l2/run_experiment.py")


def test_harness_sha_covers_what_can_change_a_verdict(tmp_path):
    tree = trials.scratch_tree(tmp_path / "tree", caches=())
    before = ledger.harness_sha("pq_l2", tree)
    for name in UNHASHED_EDITS:
        with open(tree / name, "a") as f:
            f.write("\n# an edit that judges nothing\n")
    assert ledger.harness_sha("pq_l2", tree) == before
    for name in HASHED_EDITS:
        path = tree / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit the judge runs\n")
        assert ledger.harness_sha("pq_l2", tree) != before, name
        path.write_bytes(original)
    (tree / "pq_l2" / "stray.py").write_text("")  # a module the judge could import
    assert ledger.harness_sha("pq_l2", tree) != before


# ---------------------------------------------------------------- an older results.tsv
def old_line(key, row):
    fields = [row.get(c, "") for c in ledger.OLD_COLUMNS if c != "row_mac"]
    fields.insert(ledger.OLD_COLUMNS.index("row_mac"), ledger.row_mac(key, fields))
    return "\t".join(fields) + "\n"


def test_old_results_read_then_migrate_on_the_next_append(tmp_path, capsys):
    path = tmp_path / "results.tsv"
    ledger.append_result(tmp_path / "scratch.tsv", ROW)  # makes .results.key beside both
    key = (tmp_path / ".results.key").read_bytes()
    kept = {"target": "pq_l2", "status": "keep", "speedup_vs_baseline": "1.5000",
            "description": "an old keep"}
    discarded = {**kept, "status": "discard", "speedup_vs_baseline": "1.6000",
                 "description": "an old discard"}
    forged = old_line(b"not the key", {**kept, "description": "forged"})
    path.write_text("\t".join(ledger.OLD_COLUMNS) + "\n" + old_line(key, kept)
                    + old_line(key, discarded) + forged)
    rows = ledger.read_results(path)
    assert [r["description"] for r in rows] == ["an old keep", "an old discard"]
    assert rows[0]["speedup_vs_baseline"] == "1.5000" and rows[0]["machine"] == ""
    assert rows[1]["speedup_vs_baseline"] == "" and rows[1]["would_be_speedup"] == "1.6000"
    before = path.read_text()
    assert path.read_text() == before  # reading never rewrites
    ledger.append_result(path, {**ROW, "description": "a new row"})
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == list(ledger.RESULTS_COLUMNS)  # migrated
    assert len(lines) == 5 and "forged" in lines[3]  # nothing dropped
    assert [r["description"] for r in ledger.read_results(path)] == [
        "an old keep", "an old discard", "a new row"]  # re-signed; the forged row still fails
    assert "rewritten with the current columns" in capsys.readouterr().err


COPIES_KERNEL = b"""
import gc
import numpy as np
from numba import njit
@njit(cache=False)
def twice(x):
    return 2 * x
class PqKernel:
    def __init__(self, value):
        self.value = value
    def run(self):
        compiled = len(twice.signatures)  # before this call: what was built ahead of it
        return (np.array([id(globals()), compiled, twice(self.value), gc.get_freeze_count() > 0]),)
    def run_float(self):
        return (np.array([twice(float(self.value))]),)
"""


def test_each_round_calls_its_own_code_copy_compiled_ahead_and_sharing_the_state():
    """After `copies`, call copy r runs kernels.py's r-th execution (its own globals), whose
    numba functions are already compiled (from copy 0's cache, not inside the timed call),
    on the instance's one state; copy numbers wrap around. `copies` again tops every copy
    up with what copy 0 compiled since (a warm-up's new argument types)."""
    child = contestant.Contestant("candidate", COPIES_KERNEL, "PqKernel", REPO / "pq_l2",
                                  time.monotonic() + 120, 0)
    try:
        child.receive("import")
        child.request("__init__", "init", "h", (np.int64(21),))
        [(first,)], _, _ = child.request("a call", "call", "h", "run", [()], 0)
        child.request("copies", "copies", 3)
        outs = [child.request("a call", "call", "h", "run", [()], copy)[0][0][0]
                for copy in (0, 1, 2, 3)]
        child.request("a float call", "call", "h", "run_float", [()], 0)
        child.request("copies", "copies", 3)
        [(topped,)], _, _ = child.request("a call", "call", "h", "run", [()], 2)
    finally:
        child.close()
    assert first[1:].tolist() == [0, 42, 0]  # copy 0 compiled in its first call
    modules = [int(out[0]) for out in outs]
    assert len(set(modules[:3])) == 3 and modules[3] == modules[0] == int(first[0])
    assert [out[1:].tolist() for out in outs] == [[1, 42, 1]] * 4  # objects so far frozen
    assert topped[1:].tolist() == [2, 42, 1]
