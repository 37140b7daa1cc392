# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: deterministic bitpack fixtures: the correctness battery and the speed workloads.

Values come from named seeds through SplitMix64 (seeds.py); pages are built from them by
`pack`, a packer written apart from the oracle (reference.py), so a round trip through both
is a real cross-check (tests/test_bitpack.py). Every timed batch gets freshly drawn pages, so
the draw and the packer are compiled (fastlanes.py).
"""
import functools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bitpack import fastlanes  # noqa: E402  (one module name everywhere: numba caches by file)
from seeds import MASK64, mix_seeds, splitmix64_stream  # noqa: E402

FIXTURE_SEED = 0x5EED_B175  # root of every battery page
CHUNK_VALUES = fastlanes.CHUNK_VALUES  # values per chunk (Lance's ELEMS_PER_CHUNK)
FL_ORDER = np.array([0, 4, 2, 6, 1, 5, 3, 7])  # FastLanes row-group order
DTYPES = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}  # T -> word type
SPEED_SHAPES = ((16, 7), (32, 13), (32, 24))  # (T, W); T = 64 is battery-only (program.md)
DISTRIBUTIONS = ("uniform", "varying", "sparse")  # speed: how widths vary chunk to chunk
SPEED_VALUES = 1 << 19  # values per timed page (of a trial)
SPARSE_DENSITY = 7e-4  # sparse: share of non-zero values; about half the chunks are all zero
BATTERY_COUNTS = (0, 1, 7, 1023, 1024, 1025, 3 * 1024 + 17)  # page lengths of the edge cases
BATTERY_WIDTH_COUNT = 1025  # every width: one full chunk and a one-value tail
BATTERY_MIXED_VALUES = 9 * 1024 - 3  # mixed widths: nine chunks, a partial last one


def rows_of(chunks, bits):
    """[count, T, LANES]: the value in row r, lane l of each chunk, i.e. the value at
    FL_ORDER[r // 8] * 16 + (r % 8) * 128 + l. Row r = 8 o + s reads the LANES contiguous
    values that start at s * 128 + FL_ORDER[o] * 16, block FL_ORDER[o] * T / 64 of its 128."""
    n_lanes = CHUNK_VALUES // bits
    blocks = chunks.reshape(len(chunks), 8, bits // 8, n_lanes)  # [count, s, block, lane]
    order = FL_ORDER[:bits // 8] * bits // 64
    return blocks[:, :, order, :].transpose(0, 2, 1, 3).reshape(len(chunks), bits, n_lanes)


@functools.cache
def row_positions(bits):
    """[T, LANES]: the position in its chunk of the value in row r, lane l (rows_of)."""
    return rows_of(np.arange(CHUNK_VALUES)[None, :], bits)[0]


def pack(values, bits):
    """A page: per chunk one header word (its width), then its FastLanes body."""
    values = np.ascontiguousarray(values, np.uint64)
    count = -(-len(values) // CHUNK_VALUES)
    page = np.zeros(count + len(values) + CHUNK_VALUES, DTYPES[bits])  # W <= T words a value
    used = fastlanes.pack(values, row_positions(bits), page)
    return page[:used].copy()


def draw_values(bits, width, distribution, count, seed):
    """`count` values of T below 2^width (uint64), from a named distribution."""
    chunks = -(-count // CHUNK_VALUES)
    if distribution in ("uniform", "sparse"):  # every chunk has width `width` (sparse: mostly
        widths = np.full(chunks, width)  # zeros, many zero-width chunks, the rest near width)
    elif distribution == "varying":  # each chunk its own width in 0..width
        pick = splitmix64_stream(mix_seeds(seed, "widths"), chunks)
        widths = (pick % np.uint64(width + 1)).astype(np.int64)
    elif distribution == "ones":  # every bit of the width set
        return np.full(count, (1 << width) - 1, np.uint64)
    elif distribution == "zeros":
        return np.zeros(count, np.uint64)
    else:
        raise ValueError(f"unknown distribution {distribution}")
    masks = (np.uint64(1) << np.minimum(widths, 63).astype(np.uint64)) - np.uint64(1)
    masks[widths == 64] = np.uint64(2**64 - 1)
    return fastlanes.draw(np.uint64(seed & MASK64), count, masks, distribution == "sparse",
                          np.uint64(mix_seeds(seed, "mask")),
                          np.uint64(int(SPARSE_DENSITY * 2.0**64)))


def make_page(bits, width, distribution, count, seed):
    values = draw_values(bits, width, distribution, count, seed)
    return pack(values, bits), values.astype(DTYPES[bits])


def _case(name, bits, pages):
    """One battery case: one kernel instance for T, several pages (page, count, values)."""
    return {"name": name, "bits": bits, "pages": pages}


def make_battery():
    """Per T: every width 0..T (uniform, then all ones: the maximum of each width) on 1025
    values; the edge counts; mixed widths chunk to chunk; all-zero and all-ones pages. Then one
    page of every timed combo, at the timed size."""
    cases = []
    for bits in DTYPES:
        seed = mix_seeds(FIXTURE_SEED, "battery", bits)
        widths = range(bits + 1)
        cases.append(_case(f"T{bits}/every-width", bits, [
            (*make_page(bits, w, "uniform", BATTERY_WIDTH_COUNT, mix_seeds(seed, w)),
             f"W{w}") for w in widths]))
        cases.append(_case(f"T{bits}/max-of-width", bits, [
            (*make_page(bits, w, "ones", BATTERY_WIDTH_COUNT, mix_seeds(seed, "ones", w)),
             f"W{w}") for w in widths]))
        edge = []
        for count in BATTERY_COUNTS:
            for w in sorted({1, bits // 2 + 1, bits - 1, bits}):
                edge.append((*make_page(bits, w, "uniform", count, mix_seeds(seed, count, w)),
                             f"n{count}/W{w}"))
        cases.append(_case(f"T{bits}/edge-counts", bits, edge))
        cases.append(_case(f"T{bits}/mixed", bits, [
            (*make_page(bits, bits, dist, BATTERY_MIXED_VALUES, mix_seeds(seed, dist)), dist)
            for dist in ("varying", "sparse", "zeros", "ones")]))
    for w in make_speed_workloads():  # what is timed, at its size: a gated fast path meets it
        seed = mix_seeds(FIXTURE_SEED, "battery", w["name"])
        cases.append(_case(f"{w['name']}/speed-scale", w["bits"], [
            (*make_page(w["bits"], w["width"], w["distribution"], w["values"], seed), "page")]))
    return [{**case, "pages": [{"page": p, "values": v, "label": label, "count": len(v)}
                               for p, v, label in case["pages"]]} for case in cases]


def make_speed_workloads(values=SPEED_VALUES):
    """The timed combos, with pages of `values` values (make confirm times other sizes)."""
    return [{"name": f"T{bits}W{width}_{dist}", "bits": bits, "width": width,
             "distribution": dist, "values": values}
            for bits, width in SPEED_SHAPES for dist in DISTRIBUTIONS]


def draw_pages(workload, count, seed):
    """`count` fresh (page, values) pairs from the workload's own distribution."""
    return [make_page(workload["bits"], workload["width"], workload["distribution"],
                      workload["values"], mix_seeds(seed, i)) for i in range(count)]
