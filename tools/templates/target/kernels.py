# SPDX-License-Identifier: MIT OR Apache-2.0
"""THE FILE YOU EDIT: the __target__ kernel.

Contract: HARNESS.md (the loop) and __target__/program.md (this kernel's API and priors).
TODO(__target__): replace the placeholder math (exact int64 matrix-vector product) with the
baseline: a faithful port of the upstream hot path, not a strawman.
"""
import numpy as np
from numba import njit


@njit(cache=False)
def _matvec(matrix, vector):
    n, d = matrix.shape
    out = np.zeros(n, np.int64)
    for i in range(n):
        acc = 0
        for j in range(d):
            acc += np.int64(matrix[i, j]) * np.int64(vector[j])
        out[i] = acc
    return out


class Kernel:
    def __init__(self, matrix):
        self.matrix = matrix  # TODO(__target__): the data the kernel is built from, once

    def run(self, vector):
        return (_matvec(self.matrix, vector),)  # TODO(__target__): the timed call
