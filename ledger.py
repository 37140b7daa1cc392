# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: the ledger: what a trial leaves behind, and the words every module shares.

Map:
  exit codes, TrialFault, HarnessError, progress   the shared vocabulary (HARNESS.md section 6)
  harness_sha                                      what can change a verdict (HARNESS.md section 1)
  describe_machine, note_machine                   where a row was measured; machines.tsv
  save_snapshot, load_snapshot                     .snapshots/<target>/<kernel_sha>.py (section 9)
  read_results, append_result, row_mac             results.tsv and its row MACs (section 7)
  find_champion, revert                            the champion row; `make revert`
  git, git_note                                    HEAD, and a note on an unusual git state
"""
import fcntl
import hashlib
import hmac
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
RESULTS_PATH = REPO / "results.tsv"  # default log; snapshots live beside it in .snapshots/

EXIT_OK, EXIT_INTERNAL, EXIT_INCORRECT, EXIT_TIMEOUT, EXIT_CRASH, EXIT_USAGE = 0, 1, 2, 3, 4, 5
STATUS_EXIT = {"fail": EXIT_INCORRECT, "timeout": EXIT_TIMEOUT, "crash": EXIT_CRASH}

RESULTS_COLUMNS = (
    "timestamp", "target", "commit", "machine", "harness_sha", "kernel_sha", "champion_sha",
    "status", "geomean_ratio", "ratio_ci90", "worst_combo", "worst_ratio", "speedup_vs_baseline",
    "would_be_speedup", "geomean_us", "peak_mem_mb", "total_seconds", "row_mac", "description",
)
OLD_COLUMNS = (  # the columns before machine, ratio_ci90, worst_combo and would_be_speedup
    "timestamp", "target", "commit", "harness_sha", "kernel_sha", "champion_sha", "status",
    "geomean_ratio", "worst_ratio", "speedup_vs_baseline", "geomean_us", "peak_mem_mb",
    "total_seconds", "row_mac", "description",
)
CHAMPION_STATUSES = ("baseline", "keep")
MACHINES_FILE = "machines.tsv"  # beside results.tsv: what each `machine` hash stands for
KERNEL_FILE = "kernels.py"  # the one file of a target the agent edits: never hashed
TOOL_FILES = ("peers.py", "conformance.py")  # per-target tools: they judge nothing
SHA_DIGITS = 12  # kernel_sha and harness_sha: leading hex digits of a sha256


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


# ---------------------------------------------------------------- the harness hash
def hashed_files(target, root=None):
    """What can change a target's verdicts: the judge's modules (every top-level .py),
    requirements.txt and the target's fixed modules (its .py files but the kernel and tools)."""
    root = root or REPO
    fixed = [p for p in sorted((root / target).glob("*.py"))
             if p.name not in (KERNEL_FILE, *TOOL_FILES)]
    return [*sorted(root.glob("*.py")), root / "requirements.txt", *fixed]


def harness_sha(target, root=None):
    root = root or REPO
    digest = hashlib.sha256()
    for path in hashed_files(target, root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:SHA_DIGITS]


# ---------------------------------------------------------------- the machine
def _cpuinfo(cpu):
    """The /proc/cpuinfo fields of one processor."""
    fields, current = {}, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    current = int(value)
                elif current == cpu and key:
                    fields[key] = value
    except OSError:
        pass
    return fields


def _cache_sizes(cpu):
    sizes = []
    for index in sorted(Path(f"/sys/devices/system/cpu/cpu{cpu}/cache").glob("index*")):
        try:
            sizes.append(f"L{(index / 'level').read_text().strip()}"
                         f"{(index / 'type').read_text().strip()[0].lower()} "
                         f"{(index / 'size').read_text().strip()}")
        except OSError:
            pass
    return " ".join(sizes)


def describe_machine(bench_cpu):
    """(machine, description): a short hash of what the timing depends on besides the code
    (the CPU of the benchmark core and its caches, the kernel, Python, numpy and numba), and
    what it stands for."""
    info = _cpuinfo(bench_cpu)
    versions = " ".join(f"{name} {importlib.metadata.version(name)}" for name in ("numpy", "numba"))
    description = "; ".join((
        info.get("model name", platform.processor() or platform.machine()),
        f"family {info.get('cpu family', '?')} model {info.get('model', '?')} stepping "
        f"{info.get('stepping', '?')}", f"benchmark core {bench_cpu} of "
        f"{len(os.sched_getaffinity(0))}", _cache_sizes(bench_cpu),
        f"Linux {platform.release()}", f"Python {platform.python_version()}", versions))
    return sha256_hex(description.encode())[:SHA_DIGITS], description


def note_machine(results_path, sha, description):
    """machines.tsv beside results.tsv: one line per machine hash, the first time it is seen."""
    path = Path(results_path).parent / MACHINES_FILE
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        known = os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")
        if not any(line.split("\t", 1)[0] == sha for line in known.splitlines()):
            os.write(fd, f"{sha}\t{clean_field(description)}\n".encode())
    finally:
        os.close(fd)


# ---------------------------------------------------------------- snapshots
def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def snapshot_dir(results_path, target):
    return Path(results_path).parent / ".snapshots" / target


def save_snapshot(results_path, target, source_bytes):
    sha = sha256_hex(source_bytes)[:SHA_DIGITS]
    path = snapshot_dir(results_path, target) / f"{sha}.py"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
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
    return data if sha256_hex(data)[:SHA_DIGITS] == sha else None


# ---------------------------------------------------------------- results.tsv
def _row_key(results_path, create):
    """The secret behind row_mac, beside results.tsv (mode 0600, git-ignored)."""
    path = Path(results_path).parent / ".results.key"
    if create and not path.exists():
        tmp = path.with_name(f".results.key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, os.urandom(32))
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


def _parse(data, path, key):
    """(columns, rows as field lists, verified flags) of results.tsv bytes. The header may be
    the current one or OLD_COLUMNS; a torn last line is left out."""
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
        progress(f"{Path(path).name}: skipped a torn last line left by a killed run")
    lines = data.decode("utf-8", errors="replace").splitlines()
    if not lines:
        return RESULTS_COLUMNS, [], []
    columns = tuple(lines[0].split("\t"))
    if columns not in (RESULTS_COLUMNS, OLD_COLUMNS):
        raise HarnessError(f"{path} line 1: header is not the expected columns "
                           f"({' '.join(RESULTS_COLUMNS)}); move the file aside", EXIT_USAGE)
    mac_at = columns.index("row_mac")
    rows, verified = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise HarnessError(f"{path} line {number}: {len(fields)} fields, expected "
                               f"{len(columns)}; fix or delete that line", EXIT_USAGE)
        rows.append(fields)
        verified.append(key is not None and
                        fields[mac_at] == row_mac(key, fields[:mac_at] + fields[mac_at + 1:]))
        if not verified[-1]:
            progress(f"{Path(path).name} line {number} was not written by the harness (row_mac "
                     "does not verify): ignored")
    return columns, rows, verified


def _as_current(columns, fields):
    """A row as a dict of the current columns. Under OLD_COLUMNS the new ones are empty and a
    discard's speedup_vs_baseline (the figure it would have had) moves to would_be_speedup."""
    row = {**dict.fromkeys(RESULTS_COLUMNS, ""), **dict(zip(columns, fields, strict=True))}
    if columns == OLD_COLUMNS and row["status"] == "discard":
        row["would_be_speedup"], row["speedup_vs_baseline"] = row["speedup_vs_baseline"], ""
    return row


def read_results(path):
    """The rows that verify, as dicts of every current column (_as_current); the file is only
    read. A damaged line is a HarnessError naming it; a torn last line (a run killed
    mid-write) is skipped with a note."""
    try:
        with open(path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)  # never half of a concurrent append
            data = f.read()
    except FileNotFoundError:
        return []
    columns, rows, verified = _parse(data, path, _row_key(path, create=False))
    return [_as_current(columns, fields) for fields, ok in zip(rows, verified, strict=True)
            if ok]


def _signed_line(key, row):
    fields = [clean_field(row.get(c, "")) for c in RESULTS_COLUMNS if c != "row_mac"]
    mac_at = RESULTS_COLUMNS.index("row_mac")
    fields.insert(mac_at, row_mac(key, fields))
    return "\t".join(fields) + "\n"


def _migrate(path, fd, key):
    """An old-format results.tsv rewritten under the current header, whole, by rename: each
    row that verified is signed again; one that did not keeps its old row_mac (and still does
    not verify). Nothing is dropped but a torn last line."""
    columns, rows, verified = _parse(os.pread(fd, os.fstat(fd).st_size, 0), path, key)
    lines = ["\t".join(RESULTS_COLUMNS) + "\n"]
    for fields, ok in zip(rows, verified, strict=True):
        row = _as_current(columns, fields)
        if ok:
            lines.append(_signed_line(key, row))
        else:
            lines.append("\t".join(row[c] for c in RESULTS_COLUMNS) + "\n")
    tmp = Path(path).with_name(f".{Path(path).name}.migrate{os.getpid()}")
    tmp.write_text("".join(lines))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    progress(f"{Path(path).name}: rewritten with the current columns ({len(rows)} rows kept)")


def append_result(path, row):
    """One locked, single-write append; the header goes in with the first row. A torn last
    line left by a killed run is cut off first; an old-format file is migrated first."""
    key = _row_key(path, create=True)
    line = _signed_line(key, row)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                continue  # another run migrated the file while this one waited: reopen
            size = os.fstat(fd).st_size
            header = os.pread(fd, 4096, 0).split(b"\n", 1)[0].decode(errors="replace")
            if size and tuple(header.split("\t")) == OLD_COLUMNS:
                _migrate(path, fd, key)
                continue
            if size and os.pread(fd, 1, size - 1) != b"\n":
                tail = os.pread(fd, min(size, 1 << 16), max(0, size - (1 << 16)))
                os.ftruncate(fd, size - len(tail) + tail.rfind(b"\n") + 1)
            data = line if os.fstat(fd).st_size else "\t".join(RESULTS_COLUMNS) + "\n" + line
            data = memoryview(data.encode())
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
            return
        finally:
            os.close(fd)


def find_champion(rows, target, harness):
    """The last baseline/keep row of this target under this harness, or None."""
    for row in reversed(rows):
        if (row["target"] == target and row["status"] in CHAMPION_STATUSES
                and row["harness_sha"] == harness):
            return row
    return None


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


# ---------------------------------------------------------------- git
def git(*args):
    """Output of a git command in the repo, or None without git or outside a work tree."""
    try:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_note(target):
    """One line on the state of git, or None when all is plain (a clean branch checkout)."""
    if git("rev-parse", "--git-dir") is None:
        return "no git repository (or no git): rows record commit 'none'"
    if git("symbolic-ref", "-q", "HEAD") is None:
        return "detached HEAD: rows record the commit, not a branch"
    hashed = {str(p.relative_to(REPO)) for p in hashed_files(target)}
    changed = [line[3:] for line in (git("status", "--porcelain") or b"").decode().splitlines()
               if line[3:] in hashed]
    if changed:
        return (f"uncommitted harness changes ({', '.join(changed[:3])}"
                f"{', ...' if len(changed) > 3 else ''}): harness_sha covers them")
    return None
