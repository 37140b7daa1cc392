# SPDX-License-Identifier: MIT OR Apache-2.0
"""TOOL: the text calibrate.py appends to a kernel to make a contestant of known speed: the
slowdown wrapper (each timed call costs a factor x its own time) and the double wrapper (each
timed call does its work twice). Fields: {cls}, {method}; the slowdown's {match} (the third
shape), {matching} (its factor) and {other} (every other shape's).
"""

SLOWDOWN_WRAPPER = '''

# --- calibration wrapper: each call of the timed method costs `factor` x its own time. It spins
# on the wall clock (a thread-CPU clock read is a system call, ~0.5 us here, which at a call of
# a few microseconds slowed the kernel by 40 % instead of 30 %), carries each spin's overshoot
# into the next call, and takes off its own cost, measured once a process on a no-op call.
import sys as _calibration_sys
import time as _calibration_time
from types import SimpleNamespace as _CalibrationShared

_CalibrationBase = {cls}


def _calibration_stretch(self, start):
    now = _calibration_time.perf_counter_ns()
    end = start + int((now - start) * self._factor) - self._cost_ns - self._ahead_ns
    while now < end:
        now = _calibration_time.perf_counter_ns()
    self._ahead_ns = min(now - end, 10_000)  # overshoot, or the time it could not take off


class _CalibrationNoop:
    def call(self):
        return None


class _CalibrationNoopWrapped(_CalibrationNoop):
    _factor, _cost_ns, _ahead_ns = 1.0, 0, 0

    def call(self):
        start = _calibration_time.perf_counter_ns()
        out = super().call()
        _calibration_stretch(self, start)
        return out


def _calibration_per_call_ns(call, calls=1000):
    def once():
        start = _calibration_time.perf_counter_ns()
        for _ in range(calls):
            call()
        return (_calibration_time.perf_counter_ns() - start) / calls
    return min(once() for _ in range(5))


def _calibration_cost_ns():
    # once a process, at its first call (the battery's), shared by the code copies
    shared = _calibration_sys.modules.setdefault("calibration_wrapper_cost",
                                                 _CalibrationShared(ns=None))
    if shared.ns is None:
        shared.ns = max(0, int(_calibration_per_call_ns(_CalibrationNoopWrapped().call)
                               - _calibration_per_call_ns(_CalibrationNoop().call)))
    return shared.ns


class {cls}(_CalibrationBase):
    def __init__(self, *args):
        super().__init__(*args)
        self._factor = {matching} if {match} else {other}
        self._cost_ns = None
        self._ahead_ns = 0

    def {method}(self, *args):
        if self._cost_ns is None:
            self._cost_ns = _calibration_cost_ns()
        start = _calibration_time.perf_counter_ns()
        out = super().{method}(*args)
        _calibration_stretch(self, start)
        return out
'''
DOUBLE_WRAPPER = '''

# --- calibration wrapper: every call does the timed method's work twice
_CalibrationBase = {cls}


class {cls}(_CalibrationBase):
    def {method}(self, *args):
        super().{method}(*args)
        return super().{method}(*args)
'''
