# SPDX-License-Identifier: MIT OR Apache-2.0
"""TOOL: `make plot`, results.tsv as a PNG: one panel per target, speedup vs baseline per run.

`plot.py [--target T|all] [--results PATH] [--out results.png] [--dpi N]`. Needs matplotlib
(tools/requirements-extras.txt). The row helpers are report.py's: the plot and the text report
read a chain alike.
"""
import argparse
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(TOOLS), str(TOOLS.parent)]
import ledger  # noqa: E402
from report import (CONFIRM, FAULT_STATUSES, NO_RESULTS, NO_ROWS, counts,  # noqa: E402
                    current_chain, direct_speedup, load, number, restarts, run_command, short,
                    speedup_text)

LABEL_WIDTH = 26  # keep labels on the plot: longer ones collide with their neighbours
LABEL_FONT = 7.5  # points; the labels are the densest text on the plot
CHAR_WIDTH = 0.52  # average glyph width / font size (DejaVu Sans): label boxes for placement
LINE_HEIGHT = 1.3  # label box height / font size
LABEL_GAP = 4  # points between a kept point and its label
PANEL_SIZE = (12.0, 5.0)  # inches per target panel: wide, since runs go left to right
PLOT_DPI = 100  # results.png is read on a screen; docs/example-plot.png is saved at 80
NICE_TICKS = (0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.1, 1.2, 1.3, 1.5, 1.75, 2, 2.5, 3, 4, 5, 6, 8,
              10, 15, 20, 30, 50, 100)  # log-axis labels a person reads as plain speedups
MAX_TICKS = 9  # more labels than this on one axis turn into a smear
NO_MATPLOTLIB = ("error: the plot needs matplotlib: `pip install -r tools/requirements-extras.txt` "
                 "into .venv (`make plot` does it on first use)")


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


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="all", help="one target or all (default)")
    parser.add_argument("--results", type=Path, default=ledger.RESULTS_PATH)
    parser.add_argument("--out", type=Path, default=ledger.RESULTS_PATH.with_name("results.png"))
    parser.add_argument("--dpi", type=int, default=PLOT_DPI)
    return parser.parse_args(argv)


def main(argv=None):
    return run_command(cmd_plot, parse_args, argv)


if __name__ == "__main__":
    sys.exit(main())
