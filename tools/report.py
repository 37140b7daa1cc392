# SPDX-License-Identifier: MIT OR Apache-2.0
"""TOOL: the human-facing summaries of results.tsv: `make report` (text) and `make plot` (PNG).

`report.py report [--target T] [--results PATH]` prints, per target, the best kernel of the
current champion chain, the counts and the last runs. `report.py plot [--target T|all]
[--results PATH] [--out results.png]` draws one panel per target: speedup vs baseline per run.
Rows come only through ledger.read_results (forged rows are ignored there, with a note); this
tool adds no rows. The plot needs matplotlib: tools/requirements-extras.txt.

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
LABEL_WIDTH = 26  # keep labels on the plot: longer ones collide with their neighbours
LABEL_FONT = 7.5  # points; the labels are the densest text on the plot
CHAR_WIDTH = 0.52  # average glyph width / font size (DejaVu Sans): label boxes for placement
LINE_HEIGHT = 1.3  # label box height / font size
LABEL_GAP = 4  # points between a kept point and its label
FAULT_STATUSES = ("fail", "timeout", "crash")  # runs with no metric: a kernel fault
CONFIRM = "confirm"  # make confirm's rows: a direct measurement, not a trial
PANEL_SIZE = (12.0, 5.0)  # inches per target panel: wide, since runs go left to right
PLOT_DPI = 100  # results.png is read on a screen; docs/example-plot.png is saved at 80
NICE_TICKS = (0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.1, 1.2, 1.3, 1.5, 1.75, 2, 2.5, 3, 4, 5, 6, 8,
              10, 15, 20, 30, 50, 100)  # log-axis labels a person reads as plain speedups
MAX_TICKS = 9  # more labels than this on one axis turn into a smear
NO_RESULTS = "no results.tsv yet: run `make run` first"
NO_ROWS = "no runs in {} yet: run `make run` first"  # empty, or only rows that do not verify
NO_MATPLOTLIB = ("error: the plot needs matplotlib: `pip install -r tools/requirements-extras.txt` "
                 "into .venv (`make plot` does it on first use)")


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


# ---------------------------------------------------------------- plot
def pyplot():
    """matplotlib.pyplot on the headless Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plotted_speedup(rows, i):
    """Where run i goes on the plot: a champion's chained speedup, what a discard would have
    had, or a confirm's direct speedup when it was timed against its chain's baseline."""
    row = rows[i]
    if row["status"] == CONFIRM:
        baseline = next((r for r in reversed(rows[:i]) if r["status"] == "baseline"
                         and r["harness_sha"] == row["harness_sha"]), None)
        same = baseline is not None and baseline["kernel_sha"] == row["champion_sha"]
        return direct_speedup(row) if same else None
    return number(row["speedup_vs_baseline"]) or number(row["would_be_speedup"])


def chain_levels(rows):
    """Champion speedup after each run, and the segments of one unbroken chain (index lists).

    A chain is per harness_sha (ledger.find_champion); a baseline restarts it at 1.0, and a
    change of harness_sha breaks the line even if it returns to an older chain."""
    level, levels, segments = {}, [], []
    for i, row in enumerate(rows):
        harness = row["harness_sha"]
        if row["status"] in ledger.CHAMPION_STATUSES:
            level[harness] = number(row["speedup_vs_baseline"])
        levels.append(level.get(harness))
        if (i == 0 or row["status"] == "baseline"
                or harness != rows[i - 1]["harness_sha"]):
            segments.append([])
        segments[-1].append(i)
    return levels, segments


def y_ticks(low, high):
    """Plain-number labels for a log axis, thinned evenly around 1x (always labelled)."""
    ticks = [t for t in NICE_TICKS if low <= t <= high]
    step = -(-len(ticks) // MAX_TICKS)  # ceiling division
    anchor = ticks.index(1) if 1 in ticks else 0
    return [t for i, t in enumerate(ticks) if (i - anchor) % step == 0]


def plot_target(ax, target, rows):
    from matplotlib import ticker

    runs = range(1, len(rows) + 1)
    speed = [plotted_speedup(rows, i) for i in range(len(rows))]
    levels, segments = chain_levels(rows)
    pick = {s: [(x, y) for x, y, r in zip(runs, speed, rows, strict=True) if r["status"] == s
                and y is not None] for s in ("baseline", "keep", "discard", CONFIRM)}

    ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle=":", zorder=1)
    for segment in segments:
        xs = [i + 1 for i in segment if levels[i] is not None]
        ys = [levels[i] for i in segment if levels[i] is not None]
        if xs:  # the step runs on to half-way to the next run
            ax.plot(xs + [xs[-1] + 0.5], ys + [ys[-1]], drawstyle="steps-post",
                    color="tab:green", linewidth=1.8, alpha=0.8, zorder=2,
                    label="champion (running best)" if segment is segments[0] else None)
    if pick["discard"]:
        ax.scatter(*zip(*pick["discard"], strict=True), s=18, color="0.55", alpha=0.55,
                   linewidths=0, zorder=3, label="discard (speedup it would have had)")
    faults = [x for x, r in zip(runs, rows, strict=True) if r["status"] in FAULT_STATUSES]
    if faults:  # no metric to place them by: a rug on the x axis
        ax.scatter(faults, [0] * len(faults), transform=ax.get_xaxis_transform(),
                   marker="x", s=30, color="tab:red", alpha=0.8, zorder=3, clip_on=False,
                   label="fail / timeout / crash (on the x axis)")
    if pick["keep"]:
        ax.scatter(*zip(*pick["keep"], strict=True), s=42, color="tab:green",
                   edgecolors="black", linewidths=0.6, zorder=4, label="keep")
    if pick[CONFIRM]:
        ax.scatter(*zip(*pick[CONFIRM], strict=True), s=90, marker="*", color="tab:orange",
                   edgecolors="black", linewidths=0.5, zorder=4,
                   label="make confirm (measured directly)")
    if pick["baseline"]:
        ax.scatter(*zip(*pick["baseline"], strict=True), s=60, marker="D", color="tab:blue",
                   edgecolors="black", linewidths=0.6, zorder=4, label="baseline (1.0x)")
    for i, r in enumerate(rows):  # where a chain ends: a re-baseline or a new harness_sha
        rebaseline = r["status"] == "baseline" and restarts(rows, i)
        if rebaseline or i and r["harness_sha"] != rows[i - 1]["harness_sha"]:
            previous = [p["harness_sha"] for p in rows[:i]
                        if p["status"] in ledger.CHAMPION_STATUSES][-1:]
            cause = "same harness" if [r["harness_sha"]] == previous \
                else f"harness {r['harness_sha'][:6]}"
            ax.axvline(i + 0.5, color="tab:blue", linewidth=1, linestyle="--", alpha=0.6)
            ax.annotate(f"{'re-baseline' if rebaseline else 'new chain'}\n{cause}",
                        (i + 0.5, 0.97), xycoords=ax.get_xaxis_transform(), xytext=(3, 0),
                        textcoords="offset points", fontsize=8, color="tab:blue", va="top")

    values = [v for v in speed + levels if v is not None] or [1.0]
    low, high = min(values + [1.0]) / 1.12, max(values + [1.0]) * 1.25  # room for labels
    ax.set_yscale("log")
    ax.set_ylim(low, high)
    ax.yaxis.set_major_locator(ticker.FixedLocator(y_ticks(low, high)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlim(0.3, len(rows) + 1.5)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(True, axis="y", color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_ylabel("speedup vs baseline (log)")
    ax.set_xlabel(f"run # in results.tsv  ({rows[0]['timestamp']} to {rows[-1]['timestamp']})")

    by_status, _ = counts(rows)
    champion, start = current_chain(rows)
    best = "no baseline yet under the current harness"
    if champion is not None:
        since = f", since the re-baseline at run {start + 1}" if restarts(rows, start) else ""
        best = f"best {speedup_text(champion)} (current harness{since})"
    ax.set_title(f"{target}: {len(rows)} runs, {by_status['keep']} kept, {best}", fontsize=12,
                 loc="left")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=5, fontsize=8,
              frameon=False)
    starts = {i: segment[0] for segment in segments for i in segment}
    return [(x, y, f"{y:.2f}x {short(rows[x - 1]['description'], LABEL_WIDTH)}",
             starts[x - 1] + 0.5) for x, y in pick["keep"]]


def label_keeps(ax, keeps, levels):
    """Label kept runs, once the axes have their final size (positions are in points).

    A label goes above-left of its point: the running best only rises, so that corner is
    free (near the start of a chain it slides right, not into the previous chain). A label
    that would hit the curve or an earlier label moves up, with a thin leader to its point."""
    to_points = 72 / ax.figure.dpi
    at = [ax.transData.transform((x, y or 1)) * to_points
          for x, y in enumerate(levels + [None], start=1)]  # one past the end: the last step
    blocked = []  # the step line and its points, as boxes: labels must not cover them
    for i, level in enumerate(levels):
        if level is None:
            continue
        if i == 0 or level != levels[i - 1]:  # a point, and the riser up to it
            below = at[i - 1][1] if i and levels[i - 1] is not None else at[i][1]
            blocked.append((at[i][0] - 4, min(below, at[i][1]) - 4, at[i][0] + 4,
                            at[i][1] + 4))
        blocked.append((at[i][0], at[i][1] - 1, at[i + 1][0], at[i][1] + 1))
    for x, y, text, left in keeps:
        px, py = ax.transData.transform((x, y)) * to_points
        edge = ax.transData.transform((left, y))[0] * to_points
        width, height = len(text) * LABEL_FONT * CHAR_WIDTH, LABEL_FONT * LINE_HEIGHT
        x0 = max(px - LABEL_GAP - width, edge + LABEL_GAP)
        y0 = py + LABEL_GAP
        hit = True
        while hit:
            hit = [b for b in blocked
                   if x0 < b[2] and b[0] < x0 + width and y0 < b[3] and b[1] < y0 + height]
            y0 = max([y0] + [b[3] + 1 for b in hit])
        blocked.append((x0, y0, x0 + width, y0 + height))
        leader = None
        if y0 > py + LABEL_GAP:  # moved up: a leader says which point it names
            leader = {"arrowstyle": "-", "color": "0.55", "linewidth": 0.6,
                      "relpos": (min(1, max(0, (px - x0) / width)), 0), "shrinkB": 3}
        ax.annotate(text, (x, y), xytext=(x0 - px, y0 - py), textcoords="offset points",
                    ha="left", va="bottom", fontsize=LABEL_FONT, color="0.1", zorder=5,
                    arrowprops=leader, annotation_clip=False, in_layout=False,
                    bbox={"boxstyle": "square,pad=0.05", "facecolor": "white",
                          "edgecolor": "none", "alpha": 0.75})


def cmd_plot(args):
    plt = pyplot()
    if plt is None:
        print(NO_MATPLOTLIB, file=sys.stderr)
        return ledger.EXIT_USAGE
    if not Path(args.results).exists():
        print(NO_RESULTS)
        return ledger.EXIT_OK
    by_target = {t: rows for t, rows in load(args.results, args.target).items() if rows}
    if not by_target:
        print(NO_ROWS.format(Path(args.results).name) if args.target == "all"
              else f"no runs of {args.target} in {Path(args.results).name} yet")
        return ledger.EXIT_OK
    width, height = PANEL_SIZE
    fig, axes = plt.subplots(len(by_target), 1, figsize=(width, height * len(by_target)),
                             squeeze=False)
    panels = [(ax, plot_target(ax, target, rows), chain_levels(rows)[0])
              for ax, (target, rows) in zip(axes[:, 0], by_target.items(), strict=True)]
    fig.tight_layout()
    for ax, keeps, levels in panels:
        label_keeps(ax, keeps, levels)
    fig.savefig(args.out, dpi=args.dpi)
    plt.close(fig)
    print(f"wrote {args.out}: {', '.join(f'{t} (runs: {len(r)})' for t, r in by_target.items())}")
    return ledger.EXIT_OK


# ---------------------------------------------------------------- main
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    text = sub.add_parser("report", help="best kernel, counts and the last runs, per target")
    text.add_argument("--target", help="one target (default: every target in results.tsv)")
    picture = sub.add_parser("plot", help="speedup per run, one panel per target, as a PNG")
    picture.add_argument("--target", default="all", help="one target or all (default)")
    picture.add_argument("--out", type=Path, default=ledger.RESULTS_PATH.with_name("results.png"))
    picture.add_argument("--dpi", type=int, default=PLOT_DPI)
    for each in (text, picture):
        each.add_argument("--results", type=Path, default=ledger.RESULTS_PATH)
    return parser.parse_args(argv)


def main(argv=None):
    try:
        args = parse_args(argv)
    except SystemExit as e:  # argparse says 2; a usage error is 5 here (HARNESS.md section 6)
        return ledger.EXIT_USAGE if e.code == 2 else e.code
    try:
        return cmd_report(args) if args.command == "report" else cmd_plot(args)
    except ledger.HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except OSError as e:  # e.g. results.tsv not writable (read_results locks it) or --out
        print(f"error: {e}", file=sys.stderr)
        return ledger.EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
