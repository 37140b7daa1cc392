# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: the __target__ oracle. Independent of kernels.py; only the judge process uses it.

TODO(__target__): the same math as the kernel, written as plainly as possible. Decoders and
integer kernels are held to bitwise equality (as here); float kernels to a tolerance derived
from error analysis (see pq_l2/reference.py and docs/adding-a-target.md).
"""
import numpy as np


def expected(matrix, vector):
    return matrix.astype(np.int64) @ vector.astype(np.int64)


def check(outputs, matrix, vector):
    """None if the kernel's outputs are right, else the reason."""
    if len(outputs) != 1:
        return f"run returned {len(outputs)} arrays, expected 1"
    (got,) = outputs
    want = expected(matrix, vector)
    if type(got) is not np.ndarray or got.dtype != np.int64 or got.shape != want.shape:
        return f"output is {type(got).__name__} {got.dtype} {got.shape}, expected int64 " \
               f"{want.shape}"
    if not np.array_equal(got, want):
        j = int(np.argmax(got != want))
        return f"position {j}: expected {want[j]}, kernel says {got[j]}"
    return None
