# SPDX-License-Identifier: MIT OR Apache-2.0
"""THE FILE YOU EDIT: the bitpack kernel (Lance miniblock FastLanes bit-unpacking of a page).

Contract: HARNESS.md (the loop) and bitpack/program.md (this kernel's API and priors).
The baseline below is the straightforward loop: per chunk read the width from its header
word, then for each lane and each of its T rows pull W bits out of the lane's words (low bits
first, spilling into the next word) and store the value at its FastLanes position. The width,
word and shift are runtime values here; Lance's Rust has one unrolled kernel per (T, W).
The page arrives as a read-only uint8 array (viewed as words of T without a copy); the values
go into `out`, a buffer of whole chunks the caller provides.
"""
import numpy as np
from numba import njit

CHUNK_VALUES = 1024  # values per chunk
FL_ORDER = np.array([0, 4, 2, 6, 1, 5, 3, 7], dtype=np.int64)  # FastLanes row-group order


@njit(cache=False)
def _decode(page, num_values, out):
    bits = page.itemsize * 8
    n_lanes = CHUNK_VALUES // bits
    ones = np.uint64(0xFFFFFFFFFFFFFFFF)
    pos = 0
    for chunk in range((num_values + CHUNK_VALUES - 1) // CHUNK_VALUES):
        width = np.int64(page[pos])
        body = pos + 1
        base = chunk * CHUNK_VALUES
        mask = ones if width == 64 else (np.uint64(1) << np.uint64(width)) - np.uint64(1)
        for lane in range(n_lanes):
            for row in range(bits):
                start = row * width
                word = start // bits
                shift = start % bits
                value = np.uint64(0)
                if width > 0:
                    value = np.uint64(page[body + word * n_lanes + lane]) >> np.uint64(shift)
                    if shift + width > bits:
                        value |= np.uint64(page[body + (word + 1) * n_lanes + lane]) << \
                            np.uint64(bits - shift)
                index = FL_ORDER[row // 8] * 16 + (row % 8) * 128 + lane
                out[base + index] = value & mask
        pos = body + width * n_lanes
    return out


class BitpackKernel:
    def __init__(self, bits):
        self.dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[bits]

    def decode(self, page, num_values, out):
        page = np.frombuffer(page, self.dtype)  # the page's bytes as words of T, no copy
        return (_decode(page, num_values, out)[:num_values],)  # out: whole chunks, then cut
