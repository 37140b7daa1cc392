# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: one bitpack trial, the judge. `make run TARGET=bitpack DESC="what I tried"`.

What is particular to bitpack: its fixtures, how the battery is checked, what a timed call is
and how its output is checked. The trial itself (correctness in step, timing side by side, the
gate, one row in results.tsv) is common.py; the rules are in HARNESS.md. This process never
imports kernels.py: kernels run in contestant processes (contestant.py).
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402
import inputs  # noqa: E402
import reference  # noqa: E402
import wire  # noqa: E402

KERNEL_CLASS = "BitpackKernel"
KERNEL_METHOD = "decode"
ROUNDS = 16  # timed rounds; each round times every combo once per kernel
BATCH_VALUES = 1 << 21  # values decoded per timed batch: ~10 ms of baseline work, so the fixed
#                         cost of a request (0.1-0.3 ms, HARNESS.md section 2) stays small
LITERAL_MAX_VALUES = 1 << 14  # larger battery pages meet reference.unpack (held to the literal)
UNIT = ("ns_per_value", "values", 1)  # reported time: ns per decoded value (values per page)


def check_battery(contestants, battery):
    """Every battery case against the oracle. Candidate and champion answer in step, each on
    its own core: the champion is re-checked for free and both processes reach the timing
    with the same history (a lone warm-up call biased A/A by ~0.3 %). The first failure is a
    TrialFault."""
    for case in battery:
        bits = case["bits"]
        where = f"case {case['name']}"
        common.in_step(contestants, f"__init__ of {where}", "init", "battery", (bits,))
        calls = [call(p["page"], p["count"], bits) for p in case["pages"]]
        answers = common.in_step(contestants, where, "call", "battery", KERNEL_METHOD, calls)
        for j, page in enumerate(case["pages"]):
            unpack = (reference.unpack_literal if page["count"] <= LITERAL_MAX_VALUES
                      else reference.unpack)  # the literal oracle is Python ints: ~1 us a value
            want = unpack(page["page"], page["count"], bits)
            for label, outs in answers.items():
                problem = reference.check(outs[j], want, bits)
                if problem:
                    raise common.TrialFault("fail", f"{common.whose(label)}{where}, page "
                                                    f"{page['label']} (T={bits}, "
                                                    f"n={page['count']}): {problem}")
    common.progress(f"correctness {len(battery)}/{len(battery)} cases, "
                    f"{sum(len(c['pages']) for c in battery)} pages")


def init_args(workload):
    return (workload["bits"],)


def call(page, num_values, bits):
    """decode's arguments: the page's bytes, the count, and an output buffer in the reply
    memory, padded to whole chunks (as Lance decodes a whole chunk into its caller's buffer)."""
    padded = -(-num_values // inputs.CHUNK_VALUES) * inputs.CHUNK_VALUES
    return page.view(np.uint8), num_values, wire.output_slot(f"u{bits // 8}", padded)


def draw_calls(workload, seed):
    """Fresh pages, and the values each was packed from (the answers check_timed wants)."""
    pages = inputs.draw_pages(workload, max(1, BATCH_VALUES // workload["values"]), seed)
    calls = [call(page, len(values), workload["bits"]) for page, values in pages]
    return calls, [values for _, values in pages]


def check_timed(workload, calls, truth, outputs):
    """Every output of both kernels, bitwise, against the values its page was packed from
    (inputs.pack is held to the literal oracle by tests/test_bitpack.py). Returns None or
    (label, what is wrong)."""
    for label, outs in outputs.items():
        for j, (want, out) in enumerate(zip(truth, outs, strict=True)):
            problem = reference.check(out, want, workload["bits"])
            if problem:
                return label, f"page {j}: {problem}"
    return None


# make confirm (tools/confirm.py): page sizes whose working set moves from L1 to DRAM
TRIAL_SCALE = inputs.SPEED_VALUES  # values per page in a trial
CONFIRM_SCALES = (1 << 13, 1 << 16, TRIAL_SCALE, 1 << 22)
CONFIRM_SCALE_NAME = "values"


def confirm_workloads(workloads, scale):
    return inputs.make_speed_workloads(scale)


def confirm_memory(scale):
    """Bytes a confirm round holds: every combo's pages, their values and both kernels' outputs
    (at most 8 bytes a value each, about four times over)."""
    return 4 * 8 * max(BATCH_VALUES, scale) * len(inputs.make_speed_workloads())


def fixtures():
    """(battery, speed workloads, a check that cached fixtures are intact: none are cached)."""
    return inputs.make_battery(), inputs.make_speed_workloads(), lambda: True


if __name__ == "__main__":
    sys.exit(common.main_of(sys.modules[__name__]))
