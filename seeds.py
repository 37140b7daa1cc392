# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: the seeds every fixture is drawn from: SplitMix64 and what is built on it.

Every target's inputs.py draws its arrays from named seeds through these functions, so
fixtures are identical on every machine. A fixture cache keyed by this file's content stays
valid as long as it is unchanged.
"""
import hashlib

import numpy as np

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment


def splitmix64_mix(z):
    """The SplitMix64 finalizer (output function) on one 64-bit integer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + GOLDEN_GAMMA) & MASK64
        return splitmix64_mix(self.state)


def _seed_part(part):
    if isinstance(part, (int, np.integer)):
        return int(part) & MASK64
    return int.from_bytes(hashlib.blake2b(str(part).encode(), digest_size=8).digest(), "little")


def mix_seeds(*parts):
    """Order-sensitive seed from ints or strings: the finalizer runs once per part."""
    h = 0
    for part in parts:
        h = splitmix64_mix((h + GOLDEN_GAMMA + _seed_part(part)) & MASK64)
    return h


def splitmix64_stream(seed, count):
    """The first `count` outputs of SplitMix64(seed), vectorised and in place (uint64
    arithmetic wraps): fresh timed inputs are drawn from it every round."""
    z = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z *= np.uint64(GOLDEN_GAMMA)
        z += np.uint64(seed & MASK64)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def uniform01(seed, shape):
    """Float64 in [0, 1) from the top 53 bits of the stream."""
    count = int(np.prod(shape))
    return ((splitmix64_stream(seed, count) >> np.uint64(11)) * 2.0**-53).reshape(shape)


def standard_normal(seed, shape):
    """Box-Muller: each pair of uniforms gives two normals (cosine half, then sine half)."""
    count = int(np.prod(shape))
    half = (count + 1) // 2
    u = uniform01(seed, (2, half))
    radius = np.sqrt(-2.0 * np.log(1.0 - u[0]))  # 1 - u is in (0, 1]: the log is finite
    angle = 2.0 * np.pi * u[1]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count].reshape(shape)
