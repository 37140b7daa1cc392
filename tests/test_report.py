# SPDX-License-Identifier: MIT OR Apache-2.0
"""tools/report.py and tools/plot.py: the text report and the plot, on a synthetic results.tsv."""
import subprocess
import sys

import pytest
from conftest import REPO

import ledger
import plot
import report

HARNESS_OLD, HARNESS_NEW = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
MACHINE = "123456abcdef"  # where the synthetic rows were "measured"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NO_MPL = "matplotlib is optional: pip install -r tools/requirements-extras.txt"
# (harness, status, geomean_ratio, speedup, description): an old chain, then a re-baseline.
RUNS = (
    (HARNESS_OLD, "baseline", "1.0010", "1.0000", "first baseline"),
    (HARNESS_OLD, "keep", "0.5000", "2.0000", "old chain win"),
    (HARNESS_NEW, "baseline", "0.9990", "1.0000", "re-baseline"),
    (HARNESS_NEW, "discard", "1.0200", "0.9804", "slower idea"),
    (HARNESS_NEW, "fail", "", "", "wrong answers"),
    (HARNESS_NEW, "keep", "0.9000", "1.1111", "unrolled scan"),
    (HARNESS_NEW, "timeout", "", "", "endless loop"),
    (HARNESS_NEW, "keep", "0.9000", "1.2346", "fused table build"),
    (HARNESS_NEW, "crash", "", "", "segfault"),
    (HARNESS_NEW, "discard", "0.9950", "1.2408", "noise-sized gain"),
) + tuple((HARNESS_NEW, "discard", "1.0100", "1.2224", f"filler idea {i}") for i in range(4))


def write_results(path, runs=RUNS, target="pq_l2"):
    ledger.note_machine(path, MACHINE, "a synthetic machine")
    for number, (harness, status, ratio, speedup, desc) in enumerate(runs):
        figure = "would_be_speedup" if status == "discard" else "speedup_vs_baseline"
        ledger.append_result(path, {
            "timestamp": f"2025-11-25T{number // 60:02d}:{number % 60:02d}:00Z",
            "target": target, "commit": "abc1234", "machine": MACHINE, "harness_sha": harness,
            "kernel_sha": f"{number:012x}", "champion_sha": "000000000000", "status": status,
            "geomean_ratio": ratio, "worst_ratio": ratio, figure: speedup,
            "geomean_us": "", "peak_mem_mb": "", "total_seconds": "10.0", "description": desc})
    return path


def run(capsys, command, *argv):
    code = (report if command == "report" else plot).main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_report_best_counts_and_tail(tmp_path, capsys):
    results = write_results(tmp_path / "results.tsv")
    code, out, err = run(capsys, "report", "--results", results)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("== pq_l2 ==  runs 14: baseline 2, keep 3, discard 6, faults 3")
    assert "(fail 1, timeout 1, crash 1)" in lines[0]
    assert "keep rate: 25% (3 of 12 trials)" in out
    # the best is the last keep of the current harness, not the old chain's bigger number
    assert f"best kernel: {7:012x}  1.23x vs baseline" in out
    assert "fused table build" in out and f"current harness {HARNESS_NEW} only" in out
    assert "earlier chains: 1, best 2.00x" in out
    assert f"measured on: {MACHINE} 14 runs (a synthetic machine)" in out
    tail = lines[lines.index("last 10 runs:") + 2:]
    assert len(tail) == 10
    assert tail[0].split()[:5] == ["2025-11-25T00:04:00Z", MACHINE, "fail", "-", "-"]
    assert tail[-1].split()[2:] == ["discard", "1.0100", "(1.22x)", "filler", "idea", "3"]
    assert len({line.index("discard") for line in tail if "discard" in line}) == 1  # aligned


CONFIRM_RUN = (HARNESS_NEW, "confirm", "0.8200", "", "confirm: n=20000 0.8200; chain holds")


def test_confirm_rows_are_shown_apart_from_trials(tmp_path, capsys):
    results = write_results(tmp_path / "results.tsv", RUNS[:8] + (CONFIRM_RUN,))
    rows = ledger.read_results(results)
    confirm = dict(rows[-1], champion_sha=rows[2]["kernel_sha"], kernel_sha=rows[7]["kernel_sha"])
    (tmp_path / "results.tsv").unlink()
    for row in rows[:-1] + [confirm]:
        ledger.append_result(results, row)
    code, out, _ = run(capsys, "report", "--results", results)
    assert code == 0
    assert "keep rate: 50% (3 of 6 trials)" in out  # the confirm is no trial
    assert f"confirmed directly =1.22x against {rows[2]['kernel_sha']}" in out
    assert "chain holds" in out
    assert plot.plotted_speedup(ledger.read_results(results), 8) == pytest.approx(1 / 0.82)


def test_report_no_champion_yet_under_a_new_harness(tmp_path, capsys):
    results = write_results(tmp_path / "results.tsv", RUNS[:2] + (
        ("cccccccccccc", "crash", "", "", "baseline crashed"),))
    code, out, _ = run(capsys, "report", "--results", results, "--target", "pq_l2")
    assert code == 0
    assert "best kernel: none under the current harness cccccccccccc" in out
    assert "earlier chains: 1, best 2.00x" in out


def test_report_missing_and_empty_file(tmp_path, capsys):
    code, out, err = run(capsys, "report", "--results", tmp_path / "results.tsv")
    assert (code, out, err) == (0, report.NO_RESULTS + "\n", "")
    (tmp_path / "results.tsv").write_text("")
    code, out, _ = run(capsys, "report", "--results", tmp_path / "results.tsv")
    assert code == 0 and out.startswith("no runs in results.tsv yet")


@pytest.mark.parametrize("command", ["report", "plot"])
def test_damaged_file_is_one_error_line(tmp_path, capsys, command):
    results = write_results(tmp_path / "results.tsv", RUNS[:2])
    with open(results, "a") as f:
        f.write("only\tthree\tfields\n")
    extra = []
    if command == "plot":
        pytest.importorskip("matplotlib", reason=NO_MPL)
        extra = ["--out", tmp_path / "x.png"]
    code, out, err = run(capsys, command, "--results", results, *extra)
    assert code == ledger.EXIT_USAGE and out == ""
    assert err.splitlines() == [f"error: {results} line 4: 3 fields, expected "
                                f"{len(ledger.RESULTS_COLUMNS)}; fix or delete that line"]


def test_unknown_target_and_bad_usage(tmp_path, capsys):
    results = write_results(tmp_path / "results.tsv", RUNS[:2])
    code, _, err = run(capsys, "report", "--results", results, "--target", "no-such-target")
    assert code == ledger.EXIT_USAGE and err.startswith("error: unknown target")
    assert report.main(["--no-such-option"]) == ledger.EXIT_USAGE


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason=NO_MPL)
    results = write_results(tmp_path / "results.tsv")
    write_results(results, RUNS[:3], target="other")
    out_png = tmp_path / "results.png"
    code, out, err = run(capsys, "plot", "--results", results, "--out", out_png, "--dpi", 40)
    assert code == 0 and err == ""
    assert out == f"wrote {out_png}: pq_l2 (runs: 14), other (runs: 3)\n"
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_plot_without_results_writes_nothing(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason=NO_MPL)
    code, out, _ = run(capsys, "plot", "--results", tmp_path / "results.tsv",
                       "--out", tmp_path / "results.png")
    assert (code, out) == (0, report.NO_RESULTS + "\n")
    assert not (tmp_path / "results.png").exists()


def test_plot_without_matplotlib_is_one_line(tmp_path):
    results = write_results(tmp_path / "results.tsv", RUNS[:2])
    hide = ("import runpy, sys; sys.modules['matplotlib'] = None; "  # import now fails
            f"sys.argv = ['tools/plot.py', '--results', {str(results)!r}, "
            f"'--out', {str(tmp_path / 'x.png')!r}]; runpy.run_path('tools/plot.py', "
            "run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", hide], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == ledger.EXIT_USAGE
    assert done.stderr.splitlines() == [plot.NO_MATPLOTLIB]
    assert "pip install -r tools/requirements-extras.txt" in plot.NO_MATPLOTLIB
    assert done.stdout == "" and not (tmp_path / "x.png").exists()
