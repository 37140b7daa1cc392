# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: deterministic __target__ fixtures: the correctness battery and the speed workloads.

Every array comes from a named seed through SplitMix64 (seeds.py). TODO(__target__): shapes
and distributions that Lance really sees; cache on disk (like pq_l2/inputs.py) once
generation takes more than a fraction of a second.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from seeds import mix_seeds, uniform01  # noqa: E402

FIXTURE_SEED = 0x5EED_0001  # root of every fixture array
SPEED_SHAPES = ((4096, 16), (1024, 128))  # (rows, columns) of the matrix
DISTRIBUTIONS = ("uniform", "small")  # full int32 range / values in [-8, 8)
BATTERY_SHAPES = ((1, 1), (7, 3), (33, 17))  # edge sizes: one row, not multiples of 8
CALLS_PER_CASE = 3  # fresh vectors per battery case


def draw(distribution, shape, seed):
    u = uniform01(seed, shape)
    if distribution == "uniform":
        return np.floor(u * 2.0**32 - 2.0**31).astype(np.int32)
    return np.floor(u * 16 - 8).astype(np.int32)


def make_battery():
    cases = []
    for rows, cols in BATTERY_SHAPES + SPEED_SHAPES:
        for dist in DISTRIBUTIONS:
            seed = mix_seeds(FIXTURE_SEED, "battery", rows, cols, dist)
            cases.append({"name": f"{rows}x{cols}/{dist}", "distribution": dist,
                          "matrix": draw(dist, (rows, cols), seed),
                          "vectors": draw(dist, (CALLS_PER_CASE, cols), mix_seeds(seed, "v"))})
    return cases


def make_speed_workloads():
    return [{"name": f"{rows}x{cols}_{dist}", "distribution": dist,
             "matrix": draw(dist, (rows, cols), mix_seeds(FIXTURE_SEED, "speed", rows, cols, dist))}
            for rows, cols in SPEED_SHAPES for dist in DISTRIBUTIONS]


def draw_vectors(workload, count, seed):
    """Fresh per-call inputs from the workload's own distribution."""
    return draw(workload["distribution"], (count, workload["matrix"].shape[1]), seed)
