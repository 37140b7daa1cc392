# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: the contestant, the judge's side: the process a kernel runs in, started, timed from
outside and read back.

Map:
  Contestant               start the process (child.py, the kernel's side), send a request,
                           time it from outside, read the reply back as plain arrays
  process_cpu_ns, ...      a process's CPU time and memory, read from outside
The wire it speaks is wire.py; the child's sandbox is sandbox.py.
"""
import mmap
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from ledger import HarnessError, TrialFault
from sandbox import confine_child
from wire import (MAX_MESSAGE_BYTES, OUTPUT_SLOT, columns_of, decode_reply, read_exact,
                  send_frame)

DEADLINE_SCALE = float(os.environ.get("HARNESS_DEADLINE_SCALE", "1"))  # tests shorten waits
LOAD_DEADLINE_SECS = 30 * DEADLINE_SCALE  # import of kernels.py
CALL_DEADLINE_SECS = 30 * DEADLINE_SCALE  # one request: a battery case (with the numba
#                                           compile of a first call) or a timed batch
CHILD_MEM_CAP_MB = int(os.environ.get("HARNESS_MEM_CAP_MB", "4096"))  # address-space cap
MULTICORE_SLACK = 1.10  # child CPU time above this x wall time means more than one core
SETTLE_SECS = 2.0  # a contestant must be back asleep this long after its reply (honest
#                    ones are within microseconds; a thread still running after it is a fail)
IDLE_CPU_LIMIT_NS = 10_000_000  # CPU between two of a contestant's requests, charged to the
#                                 next; more is a fail (a reading can lag by a tick: 4-10 ms)
# glibc malloc in contestants keeps freed multi-MiB buffers mapped: otherwise every call
# page-faults fresh mappings, in a history-dependent way (a 7 % A/A bias on large outputs).
CHILD = str(Path(__file__).with_name("child.py"))  # the kernel's side
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
              "MALLOC_TOP_PAD_": str(64 << 20)}


# ---------------------------------------------------------------- process measurements
def process_cpu_ns(pid):
    """CPU time of every thread of `pid`, living or exited, read from outside (ns). Exact only
    while the process sleeps: a thread on a CPU is counted up to its last tick or switch, so
    callers read settled_cpu_ns()."""
    return time.clock_gettime_ns(((~pid) << 3) | 2)  # CPUCLOCK_SCHED of the whole process


def _running_threads(pid):
    """How many threads of `pid` run, wait to run (R) or wait uninterruptibly mid-work (D: a
    page fault, a lock of the memory map), rather than sleep; 0 once it has exited."""
    running = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                running += f.read().rsplit(b")", 1)[1].split()[0] in (b"R", b"D")
        except (OSError, IndexError):  # the thread exited meanwhile
            pass
    return running


def settled_cpu_ns(pid, limit_secs=SETTLE_SECS):
    """The process's CPU time once every thread is asleep: (ns, True); (ns so far, False) if
    one still runs after `limit_secs`. /proc shows a thread asleep a moment before the
    scheduler adds its last stretch on the CPU (up to a tick, 4 ms at HZ=250) to the clock,
    so a reading counts only when the next one, every thread seen asleep between, agrees."""
    end, last = time.monotonic() + limit_secs, None
    while True:
        if not _running_threads(pid):
            now = process_cpu_ns(pid)
            if now == last:
                return now, True
            last = now
        if time.monotonic() >= end:
            return process_cpu_ns(pid), False


def peak_rss_mb(pid="self"):
    """Resident high-water mark (VmHWM), not the virtual peak."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise HarnessError(f"no VmHWM in /proc/{pid}/status")


# ---------------------------------------------------------------- the judge's side
def _signal_name(returncode):
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


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
        fds = (to_child_r, from_child_w, replies_fd, read_only_fd)
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, CHILD, *(str(fd) for fd in fds)], pass_fds=fds,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir,
                    env=env, start_new_session=True,
                    preexec_fn=confine_child(self.workdir, cpu, CHILD_MEM_CAP_MB))
        except subprocess.SubprocessError as e:  # the sandbox could not be applied: no child
            raise HarnessError(f"could not start a confined contestant ({e}); see "
                               "docs/robustness.md") from None
        for fd in fds:
            os.close(fd)
        os.set_blocking(self.to_child, False)
        self.cpu_end = None
        self.send("load", source, f"{self.workdir}/kernels.py", class_name,
                  limit_secs=LOAD_DEADLINE_SECS)

    def send(self, op, *args, limit_secs=CALL_DEADLINE_SECS):
        """Start a request; `receive` finishes it. Only one request is in flight. The arrays
        of a call or an __init__ travel through shared memory the contestant can only read: a
        call's are read in place, an __init__'s copied once (they outlive the request)."""
        buffers = []
        self.expected_outputs = len(args[2]) if op == "call" else 0
        if op == "call":  # handle, method, calls[, code copy]
            calls = args[2]
            slots = any(type(a) is tuple and a[:1] == (OUTPUT_SLOT,) for c in calls for a in c)
            args = (*args[:2], len(calls), columns_of(calls), slots, *(args[3:] or (0,)))
        message = pickle.dumps((op, *args), protocol=5, buffer_callback=buffers.append
                               if op in ("call", "init") else None)
        layout, pos = [], 0
        for buffer in buffers:
            raw = buffer.raw()
            if pos + raw.nbytes > MAX_MESSAGE_BYTES:
                raise HarnessError(f"{op} arguments exceed {MAX_MESSAGE_BYTES} bytes")
            self.requests[pos:pos + raw.nbytes] = raw
            layout += (pos, raw.nbytes)
            pos += -(-raw.nbytes // 64) * 64  # cache-line aligned, like a fresh allocation
        payload = struct.pack(f"<QQ{len(layout)}Q", len(buffers), op == "init",
                              *layout) + message
        self.limit_secs = limit_secs
        self.deadline = min(time.monotonic() + limit_secs, self.budget_end)
        self.cpu_start = process_cpu_ns(self.proc.pid)
        self.wall_start = time.perf_counter_ns()
        # CPU since its last reply, when it should have been asleep (none before the first
        # request: the interpreter's start): charged to this request, so none escapes
        self.idle = 0 if self.cpu_end is None else self.cpu_start - self.cpu_end
        if self.idle > IDLE_CPU_LIMIT_NS:
            self.kill()
            raise TrialFault("fail", f"{self.label} kernel burned {self.idle / 1e6:.1f} ms CPU "
                                     f"between its requests, before the {op}"
                                     f"{f' of {args[0]}' if args else ''}: "
                                     "work escaping the timer")
        try:
            send_frame(self.to_child, payload, self.deadline)
        except OSError:  # gone, or stopped reading (TimeoutError): receive() reports which
            pass

    def receive(self, phase):
        """Finish the request: (outputs, cpu_ns with the CPU since the last reply, wall_ns).
        Faults raise TrialFault."""
        deadline = self.deadline
        try:
            (size,) = struct.unpack("<Q", read_exact(self.from_child, 8, deadline))
            wall = time.perf_counter_ns() - self.wall_start
            self.cpu_end, asleep = settled_cpu_ns(self.proc.pid)
            cpu = self.cpu_end - self.cpu_start
            if size > MAX_MESSAGE_BYTES:
                raise ValueError(f"reply of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
            outs, error = decode_reply(memoryview(self.replies)[:size])
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
        except (ValueError, struct.error) as e:
            self.kill()
            raise TrialFault("crash", f"{self.label} kernel sent a malformed reply in {phase}: "
                                      f"{e}") from None
        if error is not None:
            if "MemoryError" in error:
                error += f" (the memory cap is {CHILD_MEM_CAP_MB} MiB of address space)"
            raise TrialFault("crash", f"{self.label} kernel raised in {phase}: {error}")
        if not asleep:
            self.kill()
            raise TrialFault("fail", f"{self.label} kernel kept running after its reply (work "
                                     f"escaping the timer) in {phase}: a thread still ran "
                                     f"{SETTLE_SECS:.0f} s later")
        if cpu > wall * MULTICORE_SLACK + 2_000_000:
            raise TrialFault("fail", f"{self.label} kernel used more than one core in {phase}: "
                                     f"{cpu / 1e6:.1f} ms CPU in {wall / 1e6:.1f} ms wall")
        return outs, cpu + self.idle, wall

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
