# SPDX-License-Identifier: MIT OR Apache-2.0
"""The bitpack target: the layout round-trips on every (T, W), the fixture packer agrees with
the literal oracle, the oracle rejects one broken unpacker per bug class, the judge runs."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import seeds
from bitpack import fastlanes
from conftest import run_trial

REPO = Path(__file__).resolve().parent.parent
TARGET_DIR = REPO / "bitpack"
BASELINE = TARGET_DIR / "kernels.py"
WORDS = (8, 16, 32, 64)  # every T Lance bit-packs
ROUND_TRIP_VALUES = 1025  # one full chunk and a one-value tail
ROUND_TRIP_SEED = 0xB17  # values of the round-trip pages
SPEED_PAGE_SEED = 7  # the speed page each workload's test draws
FRESH_SEEDS = (1, 2)  # two batch seeds whose pages must differ


def load(name):
    """bitpack/<name>.py under a private name: conftest already owns `inputs`, `reference`."""
    spec = importlib.util.spec_from_file_location(f"bitpack_{name}", TARGET_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = load("reference")
inputs = load("inputs")


@pytest.fixture(scope="module")
def battery():
    """The battery with the oracle's answer for every page: the literal one, but for the pages
    of the timed size (reference.unpack, held to the literal one below)."""
    cases = inputs.make_battery()
    for case in cases:
        for page in case["pages"]:
            unpack = reference.unpack_literal if page["count"] <= (1 << 14) else reference.unpack
            page["want"] = unpack(page["page"], page["count"], case["bits"])
    return cases


# ---------------------------------------------------------------- the layout itself
@pytest.mark.parametrize("bits", WORDS)
def test_fastlanes_index_is_a_permutation_for_every_t(bits):
    positions = [reference.fl_index(r, lane) for r in range(bits)
                 for lane in range(reference.lanes(bits))]
    assert sorted(positions) == list(range(reference.CHUNK_VALUES))
    table = reference.index_table(bits)
    chunk = np.arange(reference.CHUNK_VALUES, dtype=np.uint16)[None, :]
    assert np.array_equal(inputs.rows_of(chunk, bits)[0], table)


@pytest.mark.parametrize("bits", WORDS)
def test_hand_checked_layout_at_w1_and_w_equal_t(bits):
    """W = T is a transpose (word r * LANES + l holds row r of lane l); W = 1 puts row r of
    lane l in bit r of word l."""
    values = np.arange(reference.CHUNK_VALUES, dtype=np.uint64) * 2654435761 & ((1 << bits) - 1)
    page = reference.pack_literal(values, bits, widths=[bits])
    lanes = reference.lanes(bits)
    for r in range(bits):
        for lane in range(lanes):
            assert int(page[1 + r * lanes + lane]) == int(values[reference.fl_index(r, lane)])
    odd = values & 1
    page = reference.pack_literal(odd, bits, widths=[1])
    assert int(page[0]) == 1 and len(page) == 1 + lanes
    for lane in range(lanes):
        want = sum(int(odd[reference.fl_index(r, lane)]) << r for r in range(bits))
        assert int(page[1 + lane]) == want


@pytest.mark.parametrize("bits", WORDS)
def test_round_trip_every_width(bits):
    """Every W in 0..T: literal pack, fixture pack and both unpackers agree."""
    for width in range(bits + 1):
        values = inputs.draw_values(bits, width, "uniform", ROUND_TRIP_VALUES,
                                    ROUND_TRIP_SEED + width)
        page = reference.pack_literal(values, bits)
        assert np.array_equal(inputs.pack(values, bits), page), width
        assert reference.chunk_starts(page, len(values), bits)[1][0] == width
        assert np.array_equal(reference.unpack_literal(page, len(values), bits), values), width
        assert np.array_equal(reference.unpack(page, len(values), bits), values), width


def test_compiled_draw_is_the_splitmix64_stream_masked():
    """fastlanes.draw is seeds.splitmix64_stream compiled: output i, masked to its chunk's
    width; sparse keeps output i where the second stream's output i is below the bound."""
    count, masks = 2 * 1024 + 5, np.array([2**64 - 1, 0x7F, 0], np.uint64)
    raw = seeds.splitmix64_stream(ROUND_TRIP_SEED, count)
    want = raw & np.repeat(masks, 1024)[:count]
    got = fastlanes.draw(np.uint64(ROUND_TRIP_SEED), count, masks, False, np.uint64(0),
                         np.uint64(0))
    assert np.array_equal(got, want)
    keep = seeds.splitmix64_stream(ROUND_TRIP_SEED + 1, count) < np.uint64(2**63)
    sparse = fastlanes.draw(np.uint64(ROUND_TRIP_SEED), count, masks, True,
                            np.uint64(ROUND_TRIP_SEED + 1), np.uint64(2**63))
    assert np.array_equal(sparse, np.where(keep, want, np.uint64(0))) and 0 < keep.sum() < count


def test_lance_chunk_width_is_the_bit_length_of_the_or():
    values = np.zeros(3 * 1024, np.uint64)
    values[5], values[1024 + 7], values[2048] = 1, 0b1011, 1 << 40
    page = inputs.pack(values[:2049], 64)
    assert reference.chunk_starts(page, 2049, 64)[1].tolist() == [1, 4, 41]


def test_battery_matches_the_values_it_was_packed_from(battery):
    for case in battery:
        for page in case["pages"]:
            assert np.array_equal(page["want"], page["values"]), (case["name"], page["label"])
            assert page["want"].dtype == reference.DTYPES[case["bits"]]


def test_battery_covers_the_edges(battery):
    for bits in WORDS:
        pages = [p for c in battery if c["bits"] == bits for p in c["pages"]]
        widths = {int(w) for p in pages
                  for w in reference.chunk_starts(p["page"], p["count"], bits)[1]}
        assert widths == set(range(bits + 1)), bits
        counts = {p["count"] for p in pages}
        assert {0, 1, 1023, 1024, 1025} <= counts and any(n % 8 for n in counts)
        top = (1 << bits) - 1
        assert any(len(p["values"]) and np.all(p["values"] == top) for p in pages)
        assert any(len(p["values"]) and not np.any(p["values"]) for p in pages)


@pytest.mark.parametrize("workload", inputs.make_speed_workloads(), ids=lambda w: w["name"])
def test_speed_pages_round_trip_with_their_width_pattern(workload):
    ((page, values),) = inputs.draw_pages(workload, 1, SPEED_PAGE_SEED)
    bits, width = workload["bits"], workload["width"]
    assert len(values) == inputs.SPEED_VALUES and page.dtype == reference.DTYPES[bits]
    assert np.array_equal(reference.unpack(page, len(values), bits), values)
    widths = reference.chunk_starts(page, len(values), bits)[1]
    if workload["distribution"] == "uniform":
        assert set(widths.tolist()) == {width}
    elif workload["distribution"] == "varying":
        assert set(widths.tolist()) == set(range(width + 1))
    else:  # sparse: about half the chunks all zero, the rest close to the full width
        assert 0.3 < np.mean(widths == 0) < 0.7 and widths.max() == width


def test_fresh_pages_differ_per_seed():
    workload = inputs.make_speed_workloads()[0]
    (a, _), (b, _) = inputs.draw_pages(workload, 2, FRESH_SEEDS[0])
    ((c, _),) = inputs.draw_pages(workload, 1, FRESH_SEEDS[1])
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


# ---------------------------------------------------------------- the oracle rejects bugs
def unpacker(order=reference.FL_ORDER, spill_extra=0, mask_mod_t=False, drop_tail=False):
    """A plain numpy unpacker with one optional bug per argument."""
    def decode(page, num_values, bits):
        dtype, lanes = reference.DTYPES[bits], reference.lanes(bits)
        out = np.zeros(reference.num_chunks(num_values) * reference.CHUNK_VALUES, np.uint64)
        pos = 0
        chunks = num_values // 1024 if drop_tail else reference.num_chunks(num_values)
        for c in range(chunks):
            width = int(page[pos])
            body = page[pos + 1:pos + 1 + width * lanes].astype(np.uint64).reshape(width, lanes)
            mask = (1 << (width % bits if mask_mod_t else width)) - 1
            for r in range(bits):
                word, shift = divmod(r * width, bits)
                value = body[word] >> np.uint64(shift) if width else np.zeros(lanes, np.uint64)
                if shift + width > bits:
                    value |= body[word + 1] << np.uint64(bits - shift + spill_extra)
                where = order[r // 8] * 16 + (r % 8) * 128 + np.arange(lanes)
                out[c * 1024 + where] = value & np.uint64(mask)
            pos += 1 + width * lanes
        return (out[:num_values].astype(dtype),)
    return decode


BROKEN = {
    "wrong FL_ORDER (rows in natural order)": unpacker(order=(0, 1, 2, 3, 4, 5, 6, 7)),
    "off-by-one shift of the bits spilled into the next word": unpacker(spill_extra=1),
    "mask (1 << W % T) - 1: zero at W = T": unpacker(mask_mod_t=True),
    "last partial chunk dropped (zeros)": unpacker(drop_tail=True),
}


def failures(decode, battery):
    return [(case["name"], page["label"]) for case in battery for page in case["pages"]
            if reference.check(decode(page["page"], page["count"], case["bits"]),
                               page["want"], case["bits"])]


def test_an_honest_independent_unpacker_passes_the_battery(battery):
    assert failures(unpacker(), battery) == []


@pytest.mark.parametrize("bug", BROKEN)
def test_each_broken_unpacker_fails_the_battery(bug, battery):
    assert failures(BROKEN[bug], battery), f"{bug} passed every battery page"


def test_check_rejects_wrong_types_and_lengths():
    want = np.arange(5, dtype=np.uint32)
    assert reference.check((want.copy(),), want, 32) is None
    assert "int64" in reference.check((want.astype(np.int64),), want, 32)
    assert "expected uint32 (5,)" in reference.check((want[:4].copy(),), want, 32)
    assert "list" in reference.check((list(want),), want, 32)
    assert "expected 1" in reference.check((want, want), want, 32)
    bad = want.copy()
    bad[3] += 1
    assert "value 3" in reference.check((bad,), want, 32)


# ---------------------------------------------------------------- the judge
def test_check_passes_on_the_baseline(test_tree, tmp_path):
    trial = run_trial(test_tree, BASELINE, tmp_path / "results.tsv", extra=["--check"],
                      target="bitpack")
    assert trial.code == 0, trial.stdout + trial.stderr
    assert trial.block["correctness"] == "pass" and trial.block["status"] == "checked"


def test_a_short_trial_runs(test_tree, tmp_path):
    trial = run_trial(test_tree, BASELINE, tmp_path / "results.tsv", champion=BASELINE,
                      target="bitpack")
    assert trial.code == 0, trial.stdout + trial.stderr
    assert trial.block["correctness"] == "pass"
    assert float(trial.block["geomean_ns_per_value"]) > 0
    assert len((tmp_path / "results.tsv").read_text().splitlines()) == 2
