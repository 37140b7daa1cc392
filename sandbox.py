# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: the contestant's confinement, applied in the child between fork and exec.

Map:
  confine_child        limits (memory, real-time priority, nice), one core, death with the
                       judge, then: no capabilities, no new privileges, Landlock, seccomp
  drop_capabilities    every capability set emptied, and kept empty across exec as root
  landlock             writes only in the contestant's own directory; signals only to itself
  seccomp_filter       what may reach another process, refused (SYSCALLS, RULES)
Each step either applies or raises (and the contestant then never starts), except where the
Linux kernel lacks the feature: Landlock and seccomp are then skipped, and docs/robustness.md
says what still holds.
"""
import ctypes
import errno
import os
import platform
import resource
import signal
import struct

PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 38, 22  # prctl options
PR_CAPBSET_READ, PR_CAPBSET_DROP, PR_GET_SECUREBITS, PR_SET_SECUREBITS = 23, 24, 27, 28
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SECUREBITS = 0xEF  # NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE, locked; KEEP_CAPS locked off
CAPABILITY_VERSION_3 = 0x20080522
ARCHES = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH_* of seccomp_data.arch
X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 ABI: another numbering, refused whole
# Syscall numbers (x86_64, aarch64; None: not on that arch) of everything the filter rules on.
SYSCALLS = {
    "clone": (56, 220), "clone3": (435, 435), "fork": (57, None), "vfork": (58, None),
    "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240), "prlimit64": (302, 261), "fcntl": (72, 25),
    "ioctl": (16, 29), "sched_setaffinity": (203, 122), "sched_setscheduler": (144, 119),
    "sched_setparam": (142, 118), "sched_setattr": (314, 274), "setpriority": (141, 140),
    "ioprio_set": (251, 30), "move_pages": (279, 239), "migrate_pages": (256, 238),
    "process_madvise": (440, 440), "process_mrelease": (448, 448),
    "perf_event_open": (298, 241), "kcmp": (312, 272), "get_robust_list": (274, 100),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "pidfd_open": (434, 434), "pidfd_getfd": (438, 438), "pidfd_send_signal": (424, 424),
    "capset": (126, 91), "setns": (308, 268), "unshare": (272, 97), "mount": (165, 40),
    "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51),
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430),
    "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433),
    "mount_setattr": (442, 442), "keyctl": (250, 219), "add_key": (248, 217),
    "request_key": (249, 218), "bpf": (321, 280), "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "fanotify_init": (300, 262),
}
# Allowed only at the contestant itself: argument 0 (a pid, low 32 bits) is 0 or its own pid.
SELF_ONLY = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "prlimit64")
RULES = {"clone": "thread", "clone3": "enosys", "fcntl": "fcntl", "ioctl": "ioctl",
         **dict.fromkeys(SELF_ONLY, "self")}
RULES.update({name: "deny" for name in SYSCALLS if name not in RULES})  # no kernel needs them
CLONE_THREAD = 0x10000
FCNTL_DENIED = (8, 10, 15)  # F_SETOWN, F_SETSIG, F_SETOWN_EX: signals by file
IOCTL_DENIED = (0x8901, 0x8902)  # FIOSETOWN, SIOCSPGRP: the same for sockets
BPF_LD, BPF_JEQ, BPF_JGE, BPF_JSET, BPF_RET = 0x20, 0x15, 0x35, 0x45, 0x06  # opcodes used
SECCOMP_ALLOW, SECCOMP_ERRNO, SECCOMP_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1, 1 << 2
SECCOMP_SYSCALL = {"x86_64": 317, "aarch64": 277}
LANDLOCK_WRITE_RIGHTS = 0b1_1111_1111_0010  # write, remove, make-*: bits 1, 4-12 of the ABI
LANDLOCK_REFER, LANDLOCK_TRUNCATE = 1 << 13, 1 << 14  # ABI 2 and 3 rights
LANDLOCK_SCOPES = 0b11  # ABI 6: no signals or abstract sockets beyond the contestant itself


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(result, what, tolerated=()):
    """A libc call's result: -1 raises with its errno, unless that errno is tolerated."""
    if result == -1 and ctypes.get_errno() not in tolerated:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")
    return result


def drop_capabilities(libc, machine):
    """Securebits first and the bounding set (both need CAP_SETPCAP; without it there is
    nothing to drop), the ambient set, then effective, permitted and inheritable: all empty,
    and an exec as uid 0 gains none back."""
    bits = _check(libc.prctl(PR_GET_SECUREBITS, 0, 0, 0, 0), "PR_GET_SECUREBITS")
    if bits & SECUREBITS != SECUREBITS:
        _check(libc.prctl(PR_SET_SECUREBITS, bits | SECUREBITS, 0, 0, 0), "PR_SET_SECUREBITS",
               (errno.EPERM,))
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1:
            if _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"PR_CAPBSET_DROP {cap}",
                      (errno.EPERM,)) == -1:
                break  # not privileged: no_new_privs keeps exec from gaining any
    _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient capabilities",
           (errno.EINVAL,))  # EINVAL: a kernel before 4.3 has no ambient set
    if machine in ARCHES:  # elsewhere the bounding set and no_new_privs must do
        header, data = CapHeader(CAPABILITY_VERSION_3, 0), (CapData * 2)()
        _check(libc.syscall(SYSCALLS["capset"][list(ARCHES).index(machine)],
                            ctypes.byref(header), data), "capset")


def landlock(libc, workdir):
    """Writes only beneath workdir (and /dev/null); with ABI 6, signals only to itself.
    Returns the ABI, or 0 where the kernel has no Landlock."""
    abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
    if abi < 1:
        return 0
    rights = LANDLOCK_WRITE_RIGHTS | (LANDLOCK_REFER if abi >= 2 else 0) | \
        (LANDLOCK_TRUNCATE if abi >= 3 else 0)
    attr = ctypes.create_string_buffer(struct.pack("<QQQ", rights, 0,
                                                   LANDLOCK_SCOPES if abi >= 6 else 0))
    ruleset = _check(libc.syscall(444, attr, 24 if abi >= 6 else 8, 0), "landlock ruleset")
    for path, allowed in ((workdir, rights), ("/dev/null", 1 << 1)):
        fd = os.open(path, os.O_PATH)
        rule = ctypes.create_string_buffer(struct.pack("<Qi", allowed, fd))
        _check(libc.syscall(445, ruleset, 1, rule, 0), f"landlock rule for {path}")
        os.close(fd)
    _check(libc.syscall(446, ruleset, 0), "landlock_restrict_self")
    os.close(ruleset)
    return abi


def seccomp_filter(machine, own_pid):
    """A classic-BPF program: a foreign architecture (the i386 ABI through int 0x80, or an
    exec'd 32-bit binary) and x32 numbers kill the process; RULES decide SYSCALLS; everything
    else is allowed. Returns (program bytes, instruction count)."""
    column = list(ARCHES).index(machine)
    prog, labels = [], {}

    def emit(code, k, jt=None, jf=None):
        prog.append([code, jt, jf, k])

    emit(BPF_LD, 4)  # seccomp_data.arch
    emit(BPF_JEQ, ARCHES[machine], jf="kill")
    emit(BPF_LD, 0)  # seccomp_data.nr
    if machine == "x86_64":
        emit(BPF_JGE, X32_SYSCALL_BIT, jt="kill")
    for name, numbers in SYSCALLS.items():
        if numbers[column] is not None:
            emit(BPF_JEQ, numbers[column], jt=RULES[name])
    emit(BPF_RET, SECCOMP_ALLOW)
    labels["self"] = len(prog)
    emit(BPF_LD, 16)  # args[0], low half: a pid_t
    emit(BPF_JEQ, own_pid, jt="allow")
    emit(BPF_JEQ, 0, jt="allow", jf="deny")
    labels["thread"] = len(prog)
    emit(BPF_LD, 16)  # clone's flags
    emit(BPF_JSET, CLONE_THREAD, jt="allow", jf="deny")
    for label, commands in (("fcntl", FCNTL_DENIED), ("ioctl", IOCTL_DENIED)):
        labels[label] = len(prog)
        emit(BPF_LD, 24)  # args[1]: the command
        for command in commands:
            emit(BPF_JEQ, command, jt="deny")
        emit(BPF_RET, SECCOMP_ALLOW)
    for label, value in (("allow", SECCOMP_ALLOW), ("deny", SECCOMP_ERRNO | errno.EPERM),
                         ("enosys", SECCOMP_ERRNO | errno.ENOSYS),
                         ("kill", SECCOMP_KILL_PROCESS)):
        labels[label] = len(prog)
        emit(BPF_RET, value)
    for i, ins in enumerate(prog):  # jumps are relative, forward and 8-bit
        ins[1], ins[2] = ((labels[j] - i - 1) if j else 0 for j in ins[1:3])
        if not (0 <= ins[1] < 256 and 0 <= ins[2] < 256):
            raise ValueError("seccomp filter: a jump longer than 255 instructions")
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog), len(prog)


def install_seccomp(libc, machine, code, length):
    """seccomp(2) with SECCOMP_FILTER_FLAG_SPEC_ALLOW, so that the filter does not force
    speculative-store-bypass mitigation on the contestant (it would be slower than the same
    code unfiltered); without that flag (kernels before 4.17), then prctl (before 3.17)."""
    buffer = ctypes.create_string_buffer(code)
    fprog = ctypes.create_string_buffer(struct.pack("<HxxxxxxQ", length,
                                                    ctypes.addressof(buffer)))
    for flags in (SECCOMP_FILTER_FLAG_SPEC_ALLOW, 0):
        if libc.syscall(SECCOMP_SYSCALL[machine], SECCOMP_SET_MODE_FILTER, flags, fprog) == 0:
            return
        if ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS):
            break
    _check(libc.prctl(PR_SET_SECCOMP, 2, fprog, 0, 0), "seccomp filter")


def confine_child(workdir, cpu, mem_cap_mb):
    """The preexec_fn of a contestant: limits, one core, death with the judge, no privileges,
    then Landlock and seccomp (each skipped only where the kernel lacks it)."""
    def apply():
        cap = mem_cap_mb << 20
        for limit, value in ((resource.RLIMIT_AS, cap), (resource.RLIMIT_CORE, 0),
                             (resource.RLIMIT_RTPRIO, 0), (resource.RLIMIT_NICE, 0)):
            resource.setrlimit(limit, (value, value))
        os.sched_setaffinity(0, {cpu})
        libc = ctypes.CDLL(None, use_errno=True)
        machine = platform.machine()
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")
        drop_capabilities(libc, machine)
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
        landlock(libc, workdir)
        if machine in ARCHES:
            install_seccomp(libc, machine, *seccomp_filter(machine, os.getpid()))
    return apply
