# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: the compiled half of inputs.py: SplitMix64 values masked to their chunk's width, and
the FastLanes packer. In numpy they took ~20 ms a timed page, most of a trial's wall time.

Imported as `bitpack.fastlanes` from everywhere: numba's cache beside this file is keyed by the
file, and a cache written under one module name fails to load under another.
"""
import sys
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from seeds import GOLDEN_GAMMA  # noqa: E402

CHUNK_VALUES = 1024  # values per chunk (Lance's ELEMS_PER_CHUNK)


@njit(cache=True)
def _mix(z):
    """SplitMix64's finalizer on uint64 (seeds.splitmix64_mix, compiled)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def draw(seed, count, chunk_masks, sparse, keep_seed, keep_below):
    """Output i of SplitMix64(seed) (seeds.splitmix64_stream), masked to its chunk's width;
    if sparse, zero where output i of SplitMix64(keep_seed) is not below keep_below."""
    gamma = np.uint64(GOLDEN_GAMMA)
    values = np.empty(count, np.uint64)
    for i in range(count):
        step = np.uint64(i + 1) * gamma
        z = _mix(seed + step)
        if sparse and _mix(keep_seed + step) >= keep_below:
            z = np.uint64(0)
        values[i] = z & chunk_masks[i // CHUNK_VALUES]
    return values


@njit(cache=True)
def pack(values, positions, page):
    """page (zeroed, its words of T) <- per chunk one header word (the bit length of the OR of
    its values: Lance's Stat::BitWidth), then W words per lane, row r of lane l at bits
    [r W, r W + W) of that lane's words; values past the end are zeros."""
    bits, lanes = positions.shape
    at = 0
    for start in range(0, len(values), CHUNK_VALUES):
        stop = min(start + CHUNK_VALUES, len(values))
        acc = np.uint64(0)
        for i in range(start, stop):
            acc |= values[i]
        width = 0
        while width < 64 and (acc >> np.uint64(width)) != 0:
            width += 1
        page[at] = width
        at += 1
        for r in range(bits if width else 0):
            word, shift = divmod(r * width, bits)
            for lane in range(lanes):
                i = start + positions[r, lane]
                v = values[i] if i < stop else np.uint64(0)
                page[at + word * lanes + lane] |= v << np.uint64(shift)  # bits above T fall off
                if shift + width > bits:
                    page[at + (word + 1) * lanes + lane] |= v >> np.uint64(bits - shift)
        at += width * lanes
    return at
