# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: plumbing shared by every target. The rules it implements are stated in HARNESS.md.

Seeds (SplitMix64), statistics and the gate, the contestant process (the only place kernels
run) and its sandbox, the shared steps of a trial, results.tsv, snapshots and the harness hash.
Run as `python common.py contestant FD...` it is the contestant side of the protocol (requests
on a pipe, call arguments and replies in shared memory): that half never judges or writes.
"""
import argparse
import fcntl
import hashlib
import hmac
import importlib.util
import io
import json
import math
import mmap
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent
RESULTS_PATH = REPO / "results.tsv"  # default log; snapshots live beside it in .snapshots/
CACHE_DIR = REPO / ".cache"  # fixture cache, verified by hash on every load

DEADLINE_SCALE = float(os.environ.get("HARNESS_DEADLINE_SCALE", "1"))  # tests shorten waits
TIME_BUDGET_SECS = 180 * DEADLINE_SCALE  # whole trial; honest kernels finish in ~10 s
LOAD_DEADLINE_SECS = 30 * DEADLINE_SCALE  # import of kernels.py
CALL_DEADLINE_SECS = 30 * DEADLINE_SCALE  # one request: a battery case (with the numba
#                                           compile of a first call) or a timed batch
CHILD_MEM_CAP_MB = int(os.environ.get("HARNESS_MEM_CAP_MB", "4096"))  # address-space cap
MAX_MESSAGE_BYTES = 256 << 20  # a reply larger than this is a contract violation
REPLY_HEADER_BYTES = 1 << 20  # a reply's JSON header lives before its arrays
OUTPUT_SLOT = "__output_slot__"  # marks a call argument the contestant fills (output_slot)

CI_Z = 1.6449  # two-sided 90 % normal quantile; small samples get the t correction below
T90_TABLE = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796,
             1.782, 1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725)  # t(0.95, dof 1..20)
TRIM = 0.2  # fraction of rounds trimmed at each end of a combo's log ratios
MIN_GAIN = 0.01  # effect-size floor: keep needs geomean ratio <= 1 - MIN_GAIN
WORST_REGRESSION = 0.05  # a combo significantly slower by this much blocks a keep
MULTICORE_SLACK = 1.10  # child CPU time above this x wall time means more than one core
# glibc malloc in contestants keeps freed multi-MiB buffers mapped: otherwise every call
# page-faults fresh mappings, in a history-dependent way (a 7 % A/A bias on large outputs).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
              "MALLOC_TOP_PAD_": str(64 << 20)}
IDLE_CPU_LIMIT_NS = 2_000_000  # CPU a waiting contestant may burn during the other's batch
WARMUP_ROUNDS = 1  # untimed first round: compiles and warms caches
PR_SET_PDEATHSIG = 1  # prctl option: signal the child when the judge dies

EXIT_OK, EXIT_INTERNAL, EXIT_INCORRECT, EXIT_TIMEOUT, EXIT_CRASH, EXIT_USAGE = 0, 1, 2, 3, 4, 5
STATUS_EXIT = {"fail": EXIT_INCORRECT, "timeout": EXIT_TIMEOUT, "crash": EXIT_CRASH}

RESULTS_COLUMNS = (
    "timestamp", "target", "commit", "harness_sha", "kernel_sha", "champion_sha", "status",
    "geomean_ratio", "worst_ratio", "speedup_vs_baseline", "geomean_us", "peak_mem_mb",
    "total_seconds", "row_mac", "description",
)
CHAMPION_STATUSES = ("baseline", "keep")
# Never part of the harness hash: the kernels, logs, caches and tool output.
UNHASHED_NAMES = {
    ".git", ".venv", ".cache", ".snapshots", "__pycache__", ".pytest_cache", ".ruff_cache",
    "results.tsv", "results.png", "lessons.md", "kernels.py", ".results.key",
}

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15


class TrialFault(Exception):
    """The kernel failed: status is one of fail, timeout, crash."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class HarnessError(Exception):
    """The harness or its inputs are at fault, not the kernel."""

    def __init__(self, message, code=EXIT_INTERNAL):
        super().__init__(message)
        self.code = code


def progress(message):
    print(f"[harness] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- seeds
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
    """The first `count` outputs of SplitMix64(seed), vectorised (uint64 arithmetic wraps)."""
    steps = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed & MASK64) + steps * np.uint64(GOLDEN_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


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


# ---------------------------------------------------------------- statistics
def geomean(values):
    values = np.asarray(values, dtype=np.float64)
    return float(np.exp(np.mean(np.log(values))))


def t_quantile_90(dof):
    """Two-sided 90 % Student t quantile: tabulated to 20 degrees of freedom, then the
    Cornish-Fisher expansion (within 0.1 % from there on)."""
    if dof <= len(T90_TABLE):
        return T90_TABLE[dof - 1]
    z = CI_Z
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def log_ratio_summary(log_ratios):
    """Trimmed mean of the per-round log ratios, its standard error and degrees of freedom
    (Yuen's method): a round hit by a neighbour's burst is an outlier, not evidence."""
    x = np.sort(np.asarray(log_ratios, dtype=np.float64))
    n = len(x)
    g = int(TRIM * n)
    winsorized = np.clip(x, x[g], x[n - 1 - g])
    stderr = np.std(winsorized, ddof=1) / ((1 - 2 * g / n) * math.sqrt(n))
    return float(np.mean(x[g:n - g])), float(stderr), n - 2 * g - 1


def ratio_with_ci(mean_log, stderr, dof):
    half = t_quantile_90(max(dof, 1)) * stderr
    return math.exp(mean_log), math.exp(mean_log - half), math.exp(mean_log + half)


def combined_geomean(summaries):
    """Geomean ratio over combos with its CI: combos are independent, their errors add."""
    means = [s[0] for s in summaries]
    stderr = math.sqrt(sum(s[1] ** 2 for s in summaries)) / len(summaries)
    return ratio_with_ci(float(np.mean(means)), stderr, sum(s[2] for s in summaries))


def decide(is_baseline, geo, geo_lo, geo_hi, combos):
    """The gate (HARNESS.md). combos: name -> (ratio, lo, hi). Returns (verdict, reason)."""
    if is_baseline:
        return "baseline", "first run on this harness: the champion is recorded"
    if not all(math.isfinite(x) for x in (geo, geo_lo, geo_hi, *sum(combos.values(), ()))):
        return "discard", "statistics are not finite (too few rounds?)"
    regressed = [n for n, (r, lo, _) in combos.items() if r >= 1 + WORST_REGRESSION and lo > 1]
    if regressed:
        return "discard", f"worst-case guard: {', '.join(regressed)} slower by >= 5 %"
    if geo_hi >= 1:
        return "discard", f"no significant gain: geomean CI90 upper {geo_hi:.4f} >= 1"
    if geo > 1 - MIN_GAIN:
        return "discard", f"gain below the {MIN_GAIN:.0%} floor: geomean {geo:.4f}"
    return "keep", f"faster: geomean {geo:.4f}, CI90 [{geo_lo:.4f}, {geo_hi:.4f}]"


# ---------------------------------------------------------------- process measurements
def process_cpu_ns(pid):
    """CPU time of every thread of `pid`, living or exited, read from outside (ns). Exact only
    while the process sleeps: a thread running on another core is counted up to its last
    tick, so callers first wait_until_blocked()."""
    return time.clock_gettime_ns(((~pid) << 3) | 2)  # CPUCLOCK_SCHED of the whole process


def wait_until_blocked(pid, limit_secs=0.05):
    """Wait (briefly) until the process is asleep, e.g. back in its read of the next request."""
    end = time.monotonic() + limit_secs
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state != b"R":
            return


def peak_rss_mb(pid="self"):
    """Resident high-water mark (VmHWM), not the virtual peak."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise HarnessError(f"no VmHWM in /proc/{pid}/status")


# ---------------------------------------------------------------- the pipe protocol
def _write_all(fd, data, deadline=math.inf):
    view = memoryview(data)
    while view:
        if deadline != math.inf:  # the judge never blocks on a contestant that stopped reading
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise TimeoutError
        view = view[os.write(fd, view):]


def _read_exact(fd, size, deadline):
    chunks, got = [], 0
    while got < size:
        remaining = None if deadline == math.inf else deadline - time.monotonic()
        if remaining is not None and remaining <= 0 or not select.select([fd], [], [],
                                                                         remaining)[0]:
            raise TimeoutError
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _send_frame(fd, payload, deadline=math.inf):
    _write_all(fd, struct.pack("<Q", len(payload)) + payload, deadline)


def _recv_frame(fd, deadline):
    (size,) = struct.unpack("<Q", _read_exact(fd, 8, deadline))
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"a message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    return _read_exact(fd, size, deadline)


def output_slot(dtype, length):
    """A call argument the contestant replaces with a writable array in the reply memory: a
    kernel that fills it and returns it (or a prefix of it) sends its output without a copy."""
    return (OUTPUT_SLOT, np.dtype(dtype).str, int(length))


def _fill_slots(call_args, replies, cursor):
    """Contestant side: output slots become views into the reply memory, past the header."""
    filled = []
    for arg in call_args:
        if type(arg) is tuple and len(arg) == 3 and arg[0] == OUTPUT_SLOT:
            dtype = np.dtype(arg[1])
            filled.append(np.frombuffer(replies, dtype, arg[2], cursor[0]))
            cursor[0] += -(-arg[2] * dtype.itemsize // 64) * 64
        else:
            filled.append(arg)
    return tuple(filled)


def encode_arrays(results, out=None, start=REPLY_HEADER_BYTES):
    """Contestant side: a list of output tuples -> the reply: a size-prefixed JSON header at
    offset 0, arrays at the offsets it names. Arrays already in `out` (filled output slots)
    stay where they are; others are copied once, from `start` on. Returns the reply's size
    (without `out`, its bytes). Plain ndarrays only."""
    header, copies, pos = [], [], start
    base = None if out is None else np.frombuffer(out, np.uint8).ctypes.data
    for result in results:
        if not isinstance(result, tuple):
            raise TypeError(f"an output is {type(result).__name__}, expected a tuple of arrays")
        entry = []
        for arr in result:
            if type(arr) is not np.ndarray:
                raise TypeError(f"an output element is {type(arr).__module__}."
                                f"{type(arr).__name__}, not exactly numpy.ndarray")
            where = None if base is None else arr.ctypes.data - base
            if not (arr.flags.c_contiguous and where is not None
                    and REPLY_HEADER_BYTES <= where <= len(out) - arr.nbytes):
                where = pos
                copies.append((arr, pos))
                pos += -(-arr.nbytes // 64) * 64
            entry.append([arr.dtype.str, list(arr.shape), arr.nbytes, where])
        header.append(entry)
    return _write_reply({"ok": True, "outs": header}, copies, out)


def _write_reply(head, copies, out):
    head = json.dumps(head).encode()
    ends = [8 + len(head)] + [e[3] + e[2] for entry in json.loads(head).get("outs", [])
                              for e in entry]
    size = max(ends)
    if 8 + len(head) > REPLY_HEADER_BYTES or size > MAX_MESSAGE_BYTES:
        raise ValueError(f"outputs of {size} bytes exceed the {MAX_MESSAGE_BYTES} byte limit")
    buffer = bytearray(size) if out is None else out
    buffer[:8 + len(head)] = struct.pack("<Q", len(head)) + head
    for arr, pos in copies:
        view = np.frombuffer(buffer, np.uint8, arr.nbytes, pos)
        view[:] = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return bytes(buffer) if out is None else size


def decode_arrays(payload):
    """Judge side: rebuild arrays from untrusted bytes; only plain numeric dtypes, each within
    the reply and clear of its header."""
    (head_size,) = struct.unpack_from("<Q", payload)
    head = json.loads(bytes(payload[8:8 + head_size]))
    if not head.get("ok"):
        return None, str(head.get("error", "unknown contestant error"))
    outs = []
    for entry in head["outs"]:
        out = []
        for dtype_str, shape, nbytes, pos in entry:
            dtype = np.dtype(dtype_str)
            if dtype.kind not in "biuf" or dtype.itemsize > 8:
                raise ValueError(f"dtype {dtype_str} is not a plain numeric type")
            count = int(np.prod(shape)) if shape else 1
            if nbytes != count * dtype.itemsize:
                raise ValueError("array byte count does not match its shape")
            if pos < 8 + head_size or pos + nbytes > len(payload):
                raise ValueError("array lies outside the reply")
            out.append(np.frombuffer(payload, dtype, count, pos).reshape(shape))
        outs.append(tuple(out))
    return outs, None


def _signal_name(returncode):
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


# What a contestant may not do to other processes: start them (threads are allowed and show as
# CPU time), signal, trace, read or write them, or change their limits and scheduling.
SECCOMP_RULES = {
    "clone": "thread", "clone3": "enosys", "fork": "deny", "vfork": "deny",
    "kill": "self", "tkill": "self", "tgkill": "self", "rt_sigqueueinfo": "self",
    "rt_tgsigqueueinfo": "self", "prlimit64": "self", "sched_setaffinity": "self",
    "sched_setscheduler": "self", "sched_setparam": "self", "setpriority": "deny",
    "ioprio_set": "deny", "ptrace": "deny", "process_vm_readv": "deny",
    "process_vm_writev": "deny", "pidfd_open": "deny", "pidfd_getfd": "deny",
    "pidfd_send_signal": "deny", "fcntl": "fcntl",
}
SECCOMP_ARCHES = {  # audit arch, syscall numbers
    "x86_64": (0xC000003E, {
        "clone": 56, "clone3": 435, "fork": 57, "vfork": 58, "kill": 62, "tkill": 200,
        "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "prlimit64": 302,
        "sched_setaffinity": 203, "sched_setscheduler": 144, "sched_setparam": 142,
        "setpriority": 141, "ioprio_set": 251, "ptrace": 101, "process_vm_readv": 310,
        "process_vm_writev": 311, "pidfd_open": 434, "pidfd_getfd": 438,
        "pidfd_send_signal": 424, "fcntl": 72}),
    "aarch64": (0xC00000B7, {
        "clone": 220, "clone3": 435, "kill": 129, "tkill": 130, "tgkill": 131,
        "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "prlimit64": 261,
        "sched_setaffinity": 122, "sched_setscheduler": 119, "sched_setparam": 118,
        "setpriority": 140, "ioprio_set": 30, "ptrace": 117, "process_vm_readv": 270,
        "process_vm_writev": 271, "pidfd_open": 434, "pidfd_getfd": 438,
        "pidfd_send_signal": 424, "fcntl": 25}),
}
CLONE_THREAD = 0x10000
FCNTL_SIGNAL_COMMANDS = (8, 10, 15)  # F_SETOWN, F_SETSIG, F_SETOWN_EX: signals by file
BPF_LD, BPF_JEQ, BPF_JSET, BPF_RET = 0x20, 0x15, 0x45, 0x06  # classic BPF opcodes used
SECCOMP_ALLOW, SECCOMP_ERRNO = 0x7FFF0000, 0x00050000
LANDLOCK_WRITE_RIGHTS = 0b1_1111_1111_0010  # write, remove, make-*: bits 1, 4-12 of the ABI
LANDLOCK_REFER, LANDLOCK_TRUNCATE = 1 << 13, 1 << 14  # ABI 2 and 3 rights
LANDLOCK_SCOPES = 0b11  # ABI 6: no signals or abstract sockets beyond the contestant itself


def _seccomp_filter(arch, numbers, own_pid):
    """A classic-BPF program for SECCOMP_RULES: "self" calls may only name this process (or
    0), "thread" clones must be threads, clone3 says ENOSYS (libc falls back to clone)."""
    prog, labels = [], {}

    def emit(code, k, jt=None, jf=None):
        prog.append([code, jt, jf, k])

    emit(BPF_LD, 4)  # seccomp_data.arch
    emit(BPF_JEQ, arch, jf="allow")
    emit(BPF_LD, 0)  # seccomp_data.nr
    for name, nr in numbers.items():
        emit(BPF_JEQ, nr, jt=SECCOMP_RULES[name])
    emit(BPF_RET, SECCOMP_ALLOW)
    labels["self"] = len(prog)
    emit(BPF_LD, 16)  # args[0], low half
    emit(BPF_JEQ, own_pid, jt="allow")
    emit(BPF_JEQ, 0, jt="allow", jf="deny")
    labels["thread"] = len(prog)
    emit(BPF_LD, 16)
    emit(BPF_JSET, CLONE_THREAD, jt="allow", jf="deny")
    labels["fcntl"] = len(prog)
    emit(BPF_LD, 24)  # args[1]: the fcntl command
    for command in FCNTL_SIGNAL_COMMANDS:
        emit(BPF_JEQ, command, jt="deny")
    for name, value in (("allow", SECCOMP_ALLOW), ("deny", SECCOMP_ERRNO | 1),
                        ("enosys", SECCOMP_ERRNO | 38)):
        labels[name] = len(prog)
        emit(BPF_RET, value)
    for i, ins in enumerate(prog):  # jumps are relative and forward only
        ins[1], ins[2] = ((labels[j] - i - 1) if j else 0 for j in ins[1:3])
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog), len(prog)


def _sandbox(libc, workdir):
    """Landlock: writes only beneath the contestant's workdir, signals only to itself;
    seccomp: the filter above.
    Both are inherited and irrevocable; both are skipped where the kernel lacks them."""
    import ctypes
    import platform

    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: required to self-sandbox
    abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(VERSION)
    if abi >= 1:
        rights = LANDLOCK_WRITE_RIGHTS | (LANDLOCK_REFER if abi >= 2 else 0) | \
            (LANDLOCK_TRUNCATE if abi >= 3 else 0)
        attr = struct.pack("<QQQ", rights, 0, LANDLOCK_SCOPES if abi >= 6 else 0)
        ruleset = libc.syscall(444, ctypes.c_char_p(attr), 24 if abi >= 6 else 8, 0)
        for path, allowed in ((workdir, rights), ("/dev/null", 1 << 1)):
            fd = os.open(path, os.O_PATH)
            rule = struct.pack("<Qi", allowed, fd)
            libc.syscall(445, ruleset, 1, ctypes.c_char_p(rule), 0)
            os.close(fd)
        libc.syscall(446, ruleset, 0)
        os.close(ruleset)
    if platform.machine() in SECCOMP_ARCHES:
        arch, numbers = SECCOMP_ARCHES[platform.machine()]
        code, length = _seccomp_filter(arch, numbers, os.getpid())
        buffer = ctypes.create_string_buffer(code)
        fprog = struct.pack("<HxxxxxxQ", length, ctypes.addressof(buffer))
        libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0)  # PR_SET_SECCOMP, FILTER


def _confine_child(workdir, cpu):
    """Runs in the child between fork and exec: memory cap, one core, death with the judge,
    and the sandbox."""
    def apply():
        import ctypes
        import resource

        cap = CHILD_MEM_CAP_MB << 20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.sched_setaffinity(0, {cpu})
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _sandbox(libc, workdir)
    return apply


class Contestant:
    """Judge side of one kernel process. The judge never imports the kernel: it sends source
    and inputs down a pipe and reads back raw arrays, timing each request itself."""

    def __init__(self, label, source, class_name, import_dir, budget_end, cpu):
        self.label = label
        self.budget_end = budget_end
        self.workdir = tempfile.mkdtemp(prefix=f"contestant-{label}-")
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        replies_fd = os.memfd_create(f"replies-{label}")  # outputs come back through memory
        os.ftruncate(replies_fd, MAX_MESSAGE_BYTES)  # sparse: only written pages cost memory
        self.replies = mmap.mmap(replies_fd, MAX_MESSAGE_BYTES, prot=mmap.PROT_READ)
        requests_fd = os.memfd_create(f"requests-{label}")  # call arguments go out the same way
        os.ftruncate(requests_fd, MAX_MESSAGE_BYTES)
        self.requests = mmap.mmap(requests_fd, MAX_MESSAGE_BYTES)
        read_only_fd = os.open(f"/proc/self/fd/{requests_fd}", os.O_RDONLY)  # no remapping
        os.close(requests_fd)
        self.log_path = Path(self.workdir) / "output.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "HARNESS_"))}
        env.update({k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")})
        env["NUMBA_CACHE_DIR"] = str(Path(self.workdir) / "numba-cache")  # private per run
        env["PYTHONPATH"] = str(import_dir)  # the target's own modules, for unpickling inputs
        env.update(MALLOC_ENV)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "common.py"), "contestant", str(to_child_r),
                 str(from_child_w), str(replies_fd), str(read_only_fd)],
                pass_fds=(to_child_r, from_child_w, replies_fd, read_only_fd),
                stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, cwd=self.workdir, env=env, start_new_session=True,
                preexec_fn=_confine_child(self.workdir, cpu))
        for fd in (to_child_r, from_child_w, replies_fd, read_only_fd):
            os.close(fd)
        os.set_blocking(self.to_child, False)
        self.send("load", source, f"{self.workdir}/kernels.py", class_name,
                  limit_secs=LOAD_DEADLINE_SECS)

    def send(self, op, *args, limit_secs=CALL_DEADLINE_SECS):
        """Start a request; `receive` finishes it. Only one request is in flight. The arrays
        of a call travel through shared memory the contestant can only read: no copies."""
        buffers = []
        message = pickle.dumps((op, *args), protocol=5,
                               buffer_callback=buffers.append if op == "call" else None)
        layout, pos = [], 0
        for buffer in buffers:
            raw = buffer.raw()
            if pos + raw.nbytes > MAX_MESSAGE_BYTES:
                raise HarnessError(f"call arguments exceed {MAX_MESSAGE_BYTES} bytes")
            self.requests[pos:pos + raw.nbytes] = raw
            layout.append((pos, raw.nbytes))
            pos += -(-raw.nbytes // 64) * 64  # cache-line aligned, like a fresh allocation
        payload = pickle.dumps((layout, message))
        self.expected_outputs = len(args[2]) if op == "call" else 0
        self.limit_secs = limit_secs
        self.deadline = min(time.monotonic() + limit_secs, self.budget_end)
        self.cpu_start = process_cpu_ns(self.proc.pid)
        self.wall_start = time.perf_counter_ns()
        try:
            _send_frame(self.to_child, payload, self.deadline)
        except OSError:  # gone, or stopped reading (TimeoutError): receive() reports which
            pass

    def receive(self, phase):
        """Finish the request: (outputs, cpu_ns, wall_ns). Faults raise TrialFault."""
        deadline = self.deadline
        try:
            (size,) = struct.unpack("<Q", _read_exact(self.from_child, 8, deadline))
            wall = time.perf_counter_ns() - self.wall_start
            wait_until_blocked(self.proc.pid)
            cpu = process_cpu_ns(self.proc.pid) - self.cpu_start
            if size > MAX_MESSAGE_BYTES:
                raise ValueError(f"reply of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
            outs, error = decode_arrays(memoryview(self.replies)[:size])
            # Copies the kernel cannot touch: only the arrays, not the header's 1 MiB.
            outs = outs and [tuple(a.copy() for a in out) for out in outs]
            if error is None and len(outs) != self.expected_outputs:
                raise ValueError(f"{len(outs)} outputs for {self.expected_outputs} calls")
        except TimeoutError:
            self.kill()
            limit = ("the trial's time budget" if deadline >= self.budget_end
                     else f"the {self.limit_secs:.0f} s deadline")
            raise TrialFault("timeout", f"{self.label} kernel hung in {phase}: "
                                        f"no answer within {limit}") from None
        except EOFError:
            raise TrialFault("crash", f"{self.label} kernel process died in {phase}: "
                                      f"{self.exit_description()}") from None
        except (ValueError, KeyError, TypeError, struct.error, json.JSONDecodeError) as e:
            self.kill()
            raise TrialFault("crash", f"{self.label} kernel sent a malformed reply in {phase}: "
                                      f"{e}") from None
        if error is not None:
            if "MemoryError" in error:
                error += f" (the memory cap is {CHILD_MEM_CAP_MB} MiB of address space)"
            raise TrialFault("crash", f"{self.label} kernel raised in {phase}: {error}")
        if cpu > wall * MULTICORE_SLACK + 2_000_000:
            raise TrialFault("fail", f"{self.label} kernel used more than one core in {phase}: "
                                     f"{cpu / 1e6:.1f} ms CPU in {wall / 1e6:.1f} ms wall")
        return outs, cpu, wall

    def request(self, phase, op, *args):
        self.send(op, *args)
        return self.receive(phase)

    def verify(self, phase):
        """After a phase: its inputs are unchanged and it runs alone (seccomp forbids forks;
        this catches them where seccomp is missing)."""
        self.request(phase, "verify")
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        if children:
            raise TrialFault("fail", f"{self.label} kernel started processes (pids "
                                     f"{', '.join(str(c.pid) for c in children)}) by {phase}: "
                                     "work outside the timer")

    def exit_description(self):
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        how = f"killed by {_signal_name(code)}" if code < 0 else f"exit status {code}"
        tail = self.log_tail()
        if "MemoryError" in tail or "bad_alloc" in tail:
            how += f" (the memory cap is {CHILD_MEM_CAP_MB} MiB of address space)"
        return f"{how}; output tail: {tail}" if tail else how

    def log_tail(self, lines=6):
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def peak_rss_mb(self):
        return peak_rss_mb(self.proc.pid)

    def pin(self, cpu):
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            os.sched_setaffinity(int(tid), {cpu})

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def close(self):
        self.kill()
        for shared in (self.replies, self.requests):
            try:
                shared.close()
            except BufferError:  # a view from a malformed reply lingers: the GC unmaps it
                pass
        for fd in (self.to_child, self.from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        subprocess.run(["rm", "-rf", self.workdir], check=False)


def _arrays_digest(values):
    digest = hashlib.sha256()
    for value in values:
        if isinstance(value, np.ndarray):
            digest.update(np.ascontiguousarray(value).view(np.uint8).data)
    return digest.digest()


def _check_inputs(seen, handle):
    """Contestant side, a contract check for honest kernels: the judge never relies on it
    (its inputs are the contestant's private copies)."""
    if seen is not None and _arrays_digest(seen[0]) != seen[1]:
        raise ValueError(f"the kernel wrote to its __init__ inputs ({handle}); inputs are "
                         "read-only")


def contestant_main(fd_in, fd_out, fd_replies, fd_requests):
    """The kernel's process: load source, build instances, answer calls with raw arrays
    written into the shared reply buffer; the pipe carries their size. Call arguments are
    read-only views of the shared request buffer."""
    module, instances, inputs_seen = None, {}, {}
    replies = mmap.mmap(fd_replies, MAX_MESSAGE_BYTES)
    requests = memoryview(mmap.mmap(fd_requests, MAX_MESSAGE_BYTES, prot=mmap.PROT_READ))
    while True:
        try:
            layout, message = pickle.loads(_recv_frame(fd_in, math.inf))
        except EOFError:
            return
        op, *args = pickle.loads(message, buffers=[requests[a:a + n] for a, n in layout])
        try:
            if op == "load":
                source, path, class_name = args
                Path(path).write_bytes(source)
                spec = importlib.util.spec_from_file_location("kernels", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules["kernels"] = module
                exec(compile(source, path, "exec"), module.__dict__)  # the bytes the judge sent
                kernel_class = getattr(module, class_name, None)
                if not callable(kernel_class):
                    raise AttributeError(f"kernels.py defines no class {class_name}")
                size = encode_arrays([], replies)
            elif op == "init":
                handle, ctor_args = args
                _check_inputs(inputs_seen.pop(handle, None), handle)  # before it is replaced
                inputs_seen[handle] = (ctor_args, _arrays_digest(ctor_args))
                for arr in ctor_args:
                    if isinstance(arr, np.ndarray):
                        arr.setflags(write=False)  # inputs are read-only by contract
                instances[handle] = kernel_class(*ctor_args)
                size = encode_arrays([], replies)
            elif op == "call":
                handle, method, arg_list = args
                bound = getattr(instances[handle], method)
                cursor = [REPLY_HEADER_BYTES]
                results = [bound(*_fill_slots(call_args, replies, cursor))
                           for call_args in arg_list]
                size = encode_arrays(results, replies, cursor[0])
            elif op == "verify":
                for handle, seen in inputs_seen.items():
                    _check_inputs(seen, handle)
                size = encode_arrays([], replies)
        except Exception as e:
            lines = traceback.format_exception(e)
            tail = "".join(lines[-3:]).strip().replace("\n", " | ")
            size = _write_reply({"ok": False, "error": tail}, [], replies)
        _write_all(fd_out, struct.pack("<Q", size))


# ---------------------------------------------------------------- hashing, git, snapshots
def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def harness_sha(root=REPO):
    """Hash of every harness file (all but kernels, logs and caches), path and content."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in UNHASHED_NAMES)
        for name in sorted(filenames):
            if name in UNHASHED_NAMES or name.endswith(".pyc"):
                continue
            path = Path(dirpath) / name
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def git(*args):
    """Output of a git command in the repo, or None without git or outside a work tree."""
    try:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def snapshot_dir(results_path, target):
    return Path(results_path).parent / ".snapshots" / target


def save_snapshot(results_path, target, source_bytes):
    sha = sha256_hex(source_bytes)[:12]
    path = snapshot_dir(results_path, target) / f"{sha}.py"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(source_bytes)
        os.replace(tmp, path)
    return sha


def load_snapshot(results_path, target, sha):
    """Snapshot bytes, or None when missing or not matching their name."""
    path = snapshot_dir(results_path, target) / f"{sha}.py"
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if sha256_hex(data)[:12] == sha else None


# ---------------------------------------------------------------- results.tsv
def _row_key(results_path, create):
    """The secret behind row_mac, beside results.tsv (mode 0600, git-ignored)."""
    path = Path(results_path).parent / ".results.key"
    if create and not path.exists():
        tmp = path.with_name(f".results.key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        _write_all(fd, os.urandom(32))
        os.close(fd)
        try:
            os.link(tmp, path)  # appears whole or not at all; the first run's key wins
        except FileExistsError:
            pass
        os.unlink(tmp)
    try:
        return path.read_bytes()
    except OSError:
        return None


def row_mac(key, fields):
    """HMAC of a row's other fields: a row the judge did not write does not verify."""
    return hmac.new(key, "\t".join(fields).encode(), "sha256").hexdigest()[:16]


def clean_field(value):
    """Tabs and newlines become single spaces; bytes that were not UTF-8 become '?'."""
    return " ".join(str(value).encode("utf-8", "replace").decode("utf-8").split())


def read_results(path):
    """All rows as dicts. A damaged line is a HarnessError naming it; a torn last line (a run
    killed mid-write) is dropped, with a note."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        data = f.read()
        if data and not data.endswith(b"\n"):
            data = data[:data.rfind(b"\n") + 1]  # byte offsets: safe whatever the line endings
            f.truncate(len(data))
            progress(f"{path.name}: dropped a torn last line left by a killed run")
    lines = data.decode("utf-8", errors="replace").splitlines()
    if not lines:
        return []
    if tuple(lines[0].split("\t")) != RESULTS_COLUMNS:
        raise HarnessError(f"{path} line 1: header is not the expected columns "
                           f"({' '.join(RESULTS_COLUMNS)}); move the file aside", EXIT_USAGE)
    rows, key = [], _row_key(path, create=False)
    mac_at = RESULTS_COLUMNS.index("row_mac")
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(RESULTS_COLUMNS):
            raise HarnessError(f"{path} line {number}: {len(fields)} fields, expected "
                               f"{len(RESULTS_COLUMNS)}; fix or delete that line", EXIT_USAGE)
        if key is None or fields[mac_at] != row_mac(key, fields[:mac_at] + fields[mac_at + 1:]):
            progress(f"{path.name} line {number} was not written by the harness (row_mac does "
                     "not verify): ignored")
            continue
        rows.append(dict(zip(RESULTS_COLUMNS, fields, strict=True)))
    return rows


def append_result(path, row):
    """One locked, single-write append; the header goes in with the first row."""
    fields = [clean_field(row.get(c, "")) for c in RESULTS_COLUMNS if c != "row_mac"]
    mac_at = RESULTS_COLUMNS.index("row_mac")
    fields.insert(mac_at, row_mac(_row_key(path, create=True), fields))
    line = "\t".join(fields) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_size == 0:
            line = "\t".join(RESULTS_COLUMNS) + "\n" + line
        _write_all(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def find_champion(rows, target, harness):
    """The last baseline/keep row of this target under this harness, or None."""
    for row in reversed(rows):
        if (row["target"] == target and row["status"] in CHAMPION_STATUSES
                and row["harness_sha"] == harness):
            return row
    return None


def print_block(fields):
    """The result block: `---`, then one `key: value` per line."""
    out = io.StringIO()
    out.write("---\n")
    for key, value in fields.items():  # one line each, whatever a kernel's message holds
        out.write(f"{key}: {clean_field(value)}\n")
    sys.stdout.write(out.getvalue())
    sys.stdout.flush()


# ---------------------------------------------------------------- the trial: shared steps
class UsageParser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments; here 2 means a correctness failure."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def at_least_two(text):
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("needs at least 2 rounds for a confidence interval")
    return value


def parse_trial_args(description, kernel_path, rounds):
    parser = UsageParser(description=description)
    parser.add_argument("--desc", default=os.environ.get("DESC", ""))
    parser.add_argument("--check", action="store_true", help="correctness only, no row")
    parser.add_argument("--revert", action="store_true", help="put the champion in kernels.py")
    parser.add_argument("--kernel", default=str(kernel_path), help="candidate kernel file")
    parser.add_argument("--champion", help="champion kernel file (default: from results.tsv)")
    parser.add_argument("--results", default=str(RESULTS_PATH), type=Path)
    parser.add_argument("--rounds", type=at_least_two, default=rounds)
    return parser.parse_args()


def read_kernel(path):
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise HarnessError(f"cannot read the kernel: {e}", EXIT_USAGE) from None


def pick_champion(target, kernel_path, args, rows, harness, candidate_source):
    """(champion source, its sha, its speedup_vs_baseline, is_baseline, candidate source).
    Without a champion this run is the baseline: kernels.py as committed at HEAD."""
    if args.champion:
        source = read_kernel(args.champion)
        return source, sha256_hex(source)[:12], 1.0, False, candidate_source
    row = find_champion(rows, target, harness)
    if row is not None:
        source = load_snapshot(args.results, target, row["kernel_sha"])
        if source is not None:
            speedup = float(row["speedup_vs_baseline"])
            return source, row["kernel_sha"], speedup, False, candidate_source
        progress(f"champion snapshot {row['kernel_sha']} is missing or altered: re-baselining")
    elif any(r["target"] == target and r["status"] in CHAMPION_STATUSES for r in rows):
        progress(f"the harness changed (harness_sha now {harness}): earlier rows are not "
                 "comparable, re-baselining")
    baseline = candidate_source
    if Path(args.kernel).resolve() == kernel_path:
        baseline = git("show", f"HEAD:{kernel_path.relative_to(REPO)}")
        if baseline is None:
            progress("no git commit to take the baseline from: using the working kernels.py")
            baseline = candidate_source
        elif baseline != candidate_source:
            progress("baseline = kernels.py as committed at HEAD; your edits are not evaluated "
                     "in this run: run again to try them")
    return baseline, sha256_hex(baseline)[:12], 1.0, True, baseline


def in_step(contestants, phase, op, *args):
    """The same request to every contestant at once (each on its own core): outputs by label."""
    for contestant in contestants:
        contestant.send(op, *args)
    return {contestant.label: contestant.receive(phase)[0] for contestant in contestants}


def whose(label):
    """Message prefix naming the kernel at fault: none for the candidate."""
    return "" if label == "candidate" else f"{label} kernel: "


def time_side_by_side(candidate, champion, workloads, rounds, rng, method, init_args,
                      draw_calls, check_timed):
    """Interleaved rounds over every workload (combo), mirrored order, fresh inputs each batch.
    draw_calls(workload, seed) -> call argument tuples; check_timed(workload, calls, outputs,
    spot) -> a problem or None. Returns per-combo CPU times and log ratios."""
    run_seed = int(rng.integers(0, 2**63))  # fresh inputs every run, unknown in advance
    for contestant in (candidate, champion):
        for w in workloads:
            contestant.request(f"__init__ of {w['name']}", "init", w["name"], init_args(w))
    stats = {w["name"]: {"log_ratios": [], "candidate_ns": [], "champion_ns": []}
             for w in workloads}
    first_order = {w["name"]: int(rng.integers(2)) for w in workloads}
    for r in range(WARMUP_ROUNDS + rounds):
        for index in rng.permutation(len(workloads)):
            w = workloads[index]
            name = w["name"]
            calls = draw_calls(w, mix_seeds(run_seed, name, r))
            pair = (candidate, champion) if (r + first_order[name]) % 2 else (champion, candidate)
            cpu, outs = {}, {}
            for runner, idle in (pair, pair[::-1]):
                idle_before = process_cpu_ns(idle.proc.pid)
                phase = f"timed batch {name} round {r}"
                outs[runner.label], cpu[runner.label], wall = runner.request(
                    phase, "call", name, method, calls)
                idle_cpu = process_cpu_ns(idle.proc.pid) - idle_before
                if idle_cpu > IDLE_CPU_LIMIT_NS + wall // 10:
                    raise TrialFault("fail", f"{idle.label} kernel burned {idle_cpu / 1e6:.1f} "
                                             f"ms CPU while idle in {phase}: work escaping "
                                             "the timer")
            spot = int(rng.integers(len(calls)))  # which timed output meets the oracle
            for label, answers in outs.items():
                problem = check_timed(w, calls, answers, spot)
                if problem:
                    raise TrialFault("fail", f"{label} kernel wrong while timed: {name} round "
                                             f"{r}: {problem}")
            if r >= WARMUP_ROUNDS:
                s = stats[name]
                s["log_ratios"].append(math.log(cpu["candidate"] / cpu["champion"]))
                s["candidate_ns"].append(cpu["candidate"])
                s["champion_ns"].append(cpu["champion"])
        if r % 6 == 0:
            progress(f"timing round {r + 1}/{WARMUP_ROUNDS + rounds}")
    return stats


def gate(block, stats, is_baseline, champion_speedup, calls_per_batch, unit):
    """Per-combo ratios and CIs, the geomean, the verdict: filled into the result block.
    unit = (name, units per call, ns per unit) of the reported time, e.g. ("us_per_query", 1,
    1e3) or ("ns_per_value", values per page, 1). Returns the row's geomean_us: the geometric
    mean over combos of the candidate's median microseconds per call."""
    unit_name, units_per_call, ns_per_unit = unit
    combos, summaries, batch_ns = {}, [], []
    for name, s in stats.items():
        summary = log_ratio_summary(s["log_ratios"])
        summaries.append(summary)
        combos[name] = ratio, lo, hi = ratio_with_ci(*summary)
        batch_ns.append(float(np.median(s["candidate_ns"])))
        cand, champ = (float(np.median(s[k])) / (calls_per_batch * units_per_call) / ns_per_unit
                       for k in ("candidate_ns", "champion_ns"))
        block[f"combo_{name}"] = (f"ratio {ratio:.4f} ci90 [{lo:.4f}, {hi:.4f}] "
                                  f"candidate_{unit_name} {cand:.1f} champion_{unit_name} "
                                  f"{champ:.1f}")
    geo, geo_lo, geo_hi = combined_geomean(summaries)
    verdict, reason = decide(is_baseline, geo, geo_lo, geo_hi, combos)
    worst = max(combos, key=lambda name: combos[name][0])
    per_call_us = geomean(batch_ns) / calls_per_batch / 1e3
    metrics = {
        "status": verdict, "verdict": verdict, "verdict_reason": reason,
        "geomean_ratio": f"{geo:.4f}", "ratio_ci90": f"[{geo_lo:.4f}, {geo_hi:.4f}]",
        "worst_combo": worst, "worst_ratio": f"{combos[worst][0]:.4f}",
        "speedup_vs_baseline": f"{1.0 if is_baseline else champion_speedup / geo:.4f}",
        f"geomean_{unit_name}": f"{per_call_us * 1e3 / units_per_call / ns_per_unit:.1f}",
        "peak_mem_mb": block.pop("peak_mem_mb", ""),
    }
    combo_lines = {k: block.pop(k) for k in list(block) if k.startswith("combo_")}
    block.update(metrics)
    block.update(combo_lines)
    return per_call_us


def check_untouched(harness, cache_intact):
    """Harness files and the fixture cache must hash as they did before the kernels ran."""
    if harness_sha() != harness:
        raise TrialFault("fail", f"harness files changed during the run (harness_sha {harness} "
                                 f"-> {harness_sha()})")
    if not cache_intact:
        raise TrialFault("fail", "the fixture cache changed during the run: it was deleted and "
                                 "will be regenerated")


def record(args, block, started, row):
    """Append the trial's one row; `row` holds the target-specific fields."""
    block["total_seconds"] = f"{time.monotonic() - started:.1f}"
    block.update(kernel_sha=row["kernel_sha"], champion_sha=row["champion_sha"],
                 harness_sha=row["harness_sha"])
    commit = git("rev-parse", "--short", "HEAD")
    row.update(
        timestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), status=block["status"],
        commit=commit.decode().strip() if commit else "none",
        total_seconds=block["total_seconds"],
        **{k: block.get(k, "") for k in ("geomean_ratio", "worst_ratio", "speedup_vs_baseline",
                                         "peak_mem_mb")})
    row["description"] = clean_field(args.desc) or "(no description)"
    append_result(args.results, row)


def revert(target, kernel_path, results):
    """`make revert`: the last champion's snapshot back into kernels.py."""
    for row in reversed(read_results(results)):
        if row["target"] == target and row["status"] in CHAMPION_STATUSES:
            source = load_snapshot(results, target, row["kernel_sha"])
            if source is None:
                raise HarnessError(f"snapshot {row['kernel_sha']} is missing or altered")
            tmp = kernel_path.with_suffix(".tmp")
            tmp.write_bytes(source)
            os.replace(tmp, kernel_path)
            print(f"{kernel_path.name} <- champion {row['kernel_sha']} ({row['status']}: "
                  f"{row['description']})")
            return EXIT_OK
    raise HarnessError(f"no champion for {target} in {results} yet", EXIT_USAGE)


def run_trial(t, args, started):
    """One trial of a target: `t` is its run_experiment module, which names TARGET, HERE,
    KERNEL_PATH, KERNEL_CLASS, KERNEL_METHOD, ROUNDS, CALLS_PER_BATCH and UNIT and defines
    fixtures, check_battery, init_args, draw_calls and check_timed. Correctness in step,
    timing side by side, the gate, one row. Returns (result block, exit code)."""
    rows = read_results(args.results)
    harness = harness_sha()
    candidate_source = read_kernel(args.kernel)
    if args.check:  # the working file as it is; no champion, no row
        champion_source, champion_sha, champion_speedup, is_baseline = None, "", 1.0, False
    else:
        champion_source, champion_sha, champion_speedup, is_baseline, candidate_source = \
            pick_champion(t.TARGET, t.KERNEL_PATH, args, rows, harness, candidate_source)
    kernel_sha = save_snapshot(args.results, t.TARGET, candidate_source)
    battery, workloads, cache_intact = t.fixtures()
    budget_end = time.monotonic() + TIME_BUDGET_SECS
    block = {"target": t.TARGET, "status": "", "correctness": "not run", "verdict": "discard"}
    geomean_us = None  # set by the gate
    contestants = []
    try:
        progress("loading and compiling the kernels")
        cpus = sorted(os.sched_getaffinity(0))
        bench_cpu = cpus[-1]  # both contestants are timed on this core
        candidate = Contestant("candidate", candidate_source, t.KERNEL_CLASS, t.HERE,
                               budget_end, bench_cpu)
        contestants.append(candidate)
        if not args.check:
            champion = Contestant("champion", champion_source, t.KERNEL_CLASS, t.HERE,
                                  budget_end, cpus[0])  # the other core, for now
            contestants.append(champion)
        for contestant in contestants:
            contestant.receive("import of kernels.py" if contestant is candidate
                               else "import of the champion kernels.py")
        t.check_battery(contestants, battery)
        for contestant in contestants:
            contestant.verify("the end of correctness")
        block["correctness"] = "pass"
        if args.check:
            check_untouched(harness, cache_intact())
            block.update(status="checked", verdict="none")
            return block, EXIT_OK
        champion.pin(bench_cpu)
        if len(cpus) > 1:
            os.sched_setaffinity(0, set(cpus[:-1]))  # the judge stays off the benchmark core
        progress(f"timing {len(workloads)} combos x {args.rounds} rounds, "
                 f"interleaved with the champion {champion_sha}")
        stats = time_side_by_side(candidate, champion, workloads, args.rounds,
                                  np.random.default_rng(), t.KERNEL_METHOD, t.init_args,
                                  t.draw_calls, t.check_timed)
        for contestant in contestants:
            contestant.verify("the end of timing")
        block["peak_mem_mb"] = f"{candidate.peak_rss_mb():.1f}"
        check_untouched(harness, cache_intact())
        geomean_us = gate(block, stats, is_baseline, champion_speedup, t.CALLS_PER_BATCH, t.UNIT)
        code = EXIT_OK
    except TrialFault as fault:
        if block["correctness"] == "not run" and fault.status == "fail":
            block["correctness"] = "fail"
        block.update(status=fault.status, message=str(fault))
        block.pop("peak_mem_mb", None)
        code = STATUS_EXIT[fault.status]
        if args.check:
            return block, code
    finally:
        for contestant in contestants:
            contestant.close()
    record(args, block, started, {
        "target": t.TARGET, "harness_sha": harness, "kernel_sha": kernel_sha,
        "champion_sha": champion_sha, "geomean_us": f"{geomean_us:.1f}" if geomean_us else ""})
    return block, code


def git_note():
    """One line on the state of git, or None when all is plain (a clean branch checkout)."""
    if git("rev-parse", "--git-dir") is None:
        return "no git repository (or no git): rows record commit 'none'"
    if git("symbolic-ref", "-q", "HEAD") is None:
        return "detached HEAD: rows record the commit, not a branch"
    changed = [line[3:] for line in (git("status", "--porcelain") or b"").decode().splitlines()
               if not line[3:].endswith(("kernels.py", "lessons.md"))]
    if changed:
        return (f"uncommitted harness changes ({', '.join(changed[:3])}"
                f"{', ...' if len(changed) > 3 else ''}): harness_sha covers them")
    return None


def main_of(t):
    """A target's run_experiment.py as a program: one trial (or `--revert`), one result block
    on stdout, one exit code."""
    args = parse_trial_args(t.__doc__.splitlines()[0], t.KERNEL_PATH, t.ROUNDS)
    started = time.monotonic()
    if importlib.util.find_spec("numba") is None:
        print("error: numba is not installed in this Python: run `make setup`", file=sys.stderr)
        return EXIT_USAGE
    if clean_field(args.desc) != args.desc.strip():
        progress("DESC had tabs or newlines: they are logged as spaces")
    note = git_note()
    if note:
        progress(f"git: {note}")
    try:
        if args.revert:
            return revert(t.TARGET, t.KERNEL_PATH, args.results)
        block, code = run_trial(t, args, started)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    block.setdefault("total_seconds", f"{time.monotonic() - started:.1f}")
    print_block(block)
    return code

if __name__ == "__main__" and sys.argv[1:2] == ["contestant"]:
    contestant_main(*(int(fd) for fd in sys.argv[2:6]))
