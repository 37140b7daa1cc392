# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: the contestant's confinement, applied in the child between fork and exec.

Map:
  confine_child    memory cap, one core, death with the judge, then the sandbox
  SECCOMP_RULES    what a contestant may not do to other processes, and _seccomp_filter
  _sandbox         Landlock (writes only in its own directory) and the seccomp filter
What each defence stops, and what is left: docs/robustness.md.
"""
import os
import signal
import struct

PR_SET_PDEATHSIG = 1  # prctl option: signal the child when the judge dies

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


def confine_child(workdir, cpu, mem_cap_mb):
    """The preexec_fn of a contestant: memory cap, one core, death with the judge, and the
    sandbox."""
    def apply():
        import ctypes
        import resource

        cap = mem_cap_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.sched_setaffinity(0, {cpu})
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _sandbox(libc, workdir)
    return apply
