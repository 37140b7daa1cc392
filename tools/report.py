# SPDX-License-Identifier: MIT OR Apache-2.0
"""TOOL: `make report`, results.tsv for a person, and the row helpers tools/plot.py shares.

`report.py [--target T] [--results PATH]` prints, per target, the best kernel of the current
champion chain, the counts and the last runs. Rows come only through ledger.read_results
(forged rows are ignored there, with a note); this tool adds no rows.

speedup_vs_baseline restarts at 1.0 at every baseline (HARNESS.md sections 4-5), so "best" is
the champion of the latest harness_sha only; earlier chains are shown but not comparable.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ledger  # noqa: E402

LAST_ROWS = 10  # the tail a person scans after a night of runs
DESC_WIDTH = 34  # description column of the report: a row fits a 100-column terminal
FAULT_STATUSES = ("fail", "timeout", "crash")  # runs with no metric: a kernel fault
CONFIRM = "confirm"  # make confirm's rows: a direct measurement, not a trial
NO_RESULTS = "no results.tsv yet: run `make run` first"
NO_ROWS = "no runs in {} yet: run `make run` first"  # empty, or only rows that do not verify


# ---------------------------------------------------------------- shared
def number(text):
    """A metric field as a float, or None when empty (faults carry no metrics)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def load(path, target):
    """(rows by target in first-seen order) for the wanted target(s); {} when there is none."""
    rows = ledger.read_results(path)  # HarnessError on a damaged file
    by_target = {}
    for row in rows:
        by_target.setdefault(row["target"], []).append(row)
    if target in (None, "all"):
        return by_target
    if target not in by_target and not (ledger.REPO / target / "run_experiment.py").is_file():
        known = ", ".join(by_target) or "none"
        raise ledger.HarnessError(f"unknown target {target!r} (targets in {Path(path).name}: "
                                  f"{known})", ledger.EXIT_USAGE)
    return {target: by_target.get(target, [])}


def current_chain(rows):
    """(champion row, index of the baseline its chain starts at) under the latest harness_sha,
    or (None, None).

    The champion is what the next `make run` times against (ledger.find_champion); its
    speedup counts from the baseline that started its chain, nothing earlier."""
    harness = rows[-1]["harness_sha"]
    champion = ledger.find_champion(rows, rows[0]["target"], harness)
    if champion is None:
        return None, None
    at = next(i for i, r in enumerate(rows) if r is champion)
    start = max(i for i in range(at + 1)
                if rows[i]["status"] == "baseline" and rows[i]["harness_sha"] == harness)
    return champion, start


def counts(rows):
    by_status = {s: sum(r["status"] == s for r in rows)
                 for s in (*ledger.CHAMPION_STATUSES, "discard", *FAULT_STATUSES, CONFIRM)}
    trials = len(rows) - by_status["baseline"] - by_status[CONFIRM]  # these try nothing
    return by_status, trials


def machines(results_path):
    """machine hash -> what it stands for (machines.tsv beside results.tsv)."""
    try:
        text = (Path(results_path).parent / ledger.MACHINES_FILE).read_text()
    except OSError:
        return {}
    return dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)


def direct_speedup(row):
    """1 / geomean_ratio of a confirm row: the champion's speedup measured directly."""
    ratio = number(row["geomean_ratio"])
    return None if not ratio else 1 / ratio


def restarts(rows, i):
    """Whether the baseline at rows[i] ends an earlier chain (a re-baseline)."""
    return any(r["status"] in ledger.CHAMPION_STATUSES for r in rows[:i])


def short(text, width):
    return text if len(text) <= width else text[:width - 3] + "..."


def speedup_text(row):
    """A champion's chained speedup; in parentheses what a discard would have had; a
    confirm's direct speedup with a `=`."""
    if row["status"] == CONFIRM:
        value = direct_speedup(row)
        return "-" if value is None else f"={value:.2f}x"
    value = number(row["speedup_vs_baseline"])
    if value is not None:
        return f"{value:.2f}x"
    value = number(row["would_be_speedup"])
    return "-" if value is None else f"({value:.2f}x)"


# ---------------------------------------------------------------- report
def report_target(target, rows, described):
    if not rows:
        return [f"== {target} ==  no runs yet"]
    by_status, trials = counts(rows)
    faults = sum(by_status[s] for s in FAULT_STATUSES)
    detail = ", ".join(f"{s} {by_status[s]}" for s in FAULT_STATUSES if by_status[s])
    rate = f"{by_status['keep'] / trials:.0%} ({by_status['keep']} of {trials} trials)" \
        if trials else "n/a (no trials yet)"
    lines = [f"== {target} ==  runs {len(rows)}: baseline {by_status['baseline']}, "
             f"keep {by_status['keep']}, discard {by_status['discard']}, faults {faults}"
             + (f" ({detail})" if detail else ""),
             f"keep rate: {rate}"]
    champion, start = current_chain(rows)
    if champion is None:
        lines.append(f"best kernel: none under the current harness {rows[-1]['harness_sha']} "
                     "(its baseline has not completed)")
    else:
        lines += [f"best kernel: {champion['kernel_sha']}  {speedup_text(champion)} vs baseline"
                  f"  ({champion['status']}, {champion['timestamp']})",
                  f"  {champion['description']}",
                  f"  speedup within the current harness {champion['harness_sha']} only:",
                  f"  its chain starts at the baseline of {rows[start]['timestamp']} "
                  f"(runs since then: {len(rows) - start})"]
        confirmed = [r for r in rows[start:] if r["status"] == CONFIRM
                     and r["kernel_sha"] == champion["kernel_sha"]]
        if confirmed:
            last = confirmed[-1]
            lines.append(f"  confirmed directly {speedup_text(last)} against "
                         f"{last['champion_sha']} ({last['timestamp']}): "
                         f"{last['description']}")
    before = rows if start is None else rows[:start]
    earlier = [v for v in (number(r["speedup_vs_baseline"]) for r in before
                           if r["status"] in ledger.CHAMPION_STATUSES) if v is not None]
    if earlier:
        chains = sum(r["status"] == "baseline" for r in before)
        lines.append(f"  earlier chains: {chains}, best {max(earlier):.2f}x of their own "
                     "baseline (not comparable)")
    by_machine = {}
    for r in rows:
        by_machine[r["machine"] or "-"] = by_machine.get(r["machine"] or "-", 0) + 1
    lines.append("measured on: " + "; ".join(
        f"{m} {n} runs" + (f" ({described[m]})" if m in described else "")
        for m, n in by_machine.items()))
    tail = rows[-LAST_ROWS:]
    lines.append(f"last {len(tail)} runs:" if len(tail) > 1 else "last run:")
    table = [("timestamp", "machine", "status", "ratio", "speedup", "description")]
    table += [(r["timestamp"], r["machine"] or "-", r["status"], r["geomean_ratio"] or "-",
               speedup_text(r), short(r["description"], DESC_WIDTH)) for r in tail]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        cells = [row[i].ljust(widths[i]) if i != 3 else row[i].rjust(widths[i])
                 for i in range(5)]
        lines.append("  " + "  ".join(cells) + "  " + row[5])
    return lines


def cmd_report(args):
    if not Path(args.results).exists():
        print(NO_RESULTS)
        return ledger.EXIT_OK
    by_target = load(args.results, args.target)
    if not by_target:
        print(NO_ROWS.format(Path(args.results).name))
        return ledger.EXIT_OK
    described = machines(args.results)
    blocks = ["\n".join(report_target(t, rows, described)) for t, rows in by_target.items()]
    print("\n\n".join(blocks))
    return ledger.EXIT_OK


# ---------------------------------------------------------------- the command line
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="one target (default: every target in results.tsv)")
    parser.add_argument("--results", type=Path, default=ledger.RESULTS_PATH)
    return parser.parse_args(argv)


def run_command(command, parse, argv):
    """A tool's exit code: usage errors 5 (argparse says 2; HARNESS.md section 6), a damaged
    results.tsv or unreadable file one error line."""
    try:
        args = parse(argv)
    except SystemExit as e:
        return ledger.EXIT_USAGE if e.code == 2 else e.code
    try:
        return command(args)
    except ledger.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except OSError as e:  # e.g. results.tsv not writable (read_results locks it) or --out
        print(f"error: {e}", file=sys.stderr)
        return ledger.EXIT_USAGE


def main(argv=None):
    return run_command(cmd_report, parse_args, argv)


if __name__ == "__main__":
    sys.exit(main())
