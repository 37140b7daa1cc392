# SPDX-License-Identifier: MIT OR Apache-2.0
"""The scaffold: `make new-target NAME=foo` gives a target that runs at once."""
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TREE = ("common.py", "new_target.py", "README.md", "templates")  # what a scaffold needs
FILES = ("kernels.py", "reference.py", "inputs.py", "run_experiment.py", "program.md")


def scratch_tree(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in TREE:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name)
        else:
            shutil.copy2(source, tree / name)
    return tree


def run(tree, *args):
    return subprocess.run([sys.executable, *args], cwd=tree, capture_output=True, text=True,
                          timeout=120)


def test_scaffold_runs_at_once_and_is_listed(tmp_path):
    tree = scratch_tree(tmp_path)
    done = run(tree, "new_target.py", "foo")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in FILES:
        text = (tree / "foo" / name).read_text()
        assert "__target__" not in text
    assert "foo/program.md" in (tree / "foo" / "program.md").read_text()
    assert "| `foo` | candidate, scaffolded |" in (tree / "README.md").read_text()
    results = tmp_path / "results.tsv"
    trial = run(tree, "foo/run_experiment.py", "--results", str(results), "--rounds", "2")
    assert trial.returncode == 0, trial.stdout + trial.stderr
    assert "\nstatus: baseline\n" in trial.stdout
    assert "\ncorrectness: pass\n" in trial.stdout
    assert len(results.read_text().splitlines()) == 2  # header + the baseline row


def test_scaffold_marks_a_listed_candidate(tmp_path):
    tree = scratch_tree(tmp_path)
    assert run(tree, "new_target.py", "dictionary").returncode == 0
    readme = (tree / "README.md").read_text()
    assert "| `dictionary` | candidate, scaffolded |" in readme
    assert readme.count("| `dictionary` |") == 1


def test_scaffold_refuses_bad_names_and_existing_folders(tmp_path):
    tree = scratch_tree(tmp_path)
    for bad in ("", "Foo", "../x", "a b"):
        done = run(tree, "new_target.py", bad)
        assert done.returncode == 5 and done.stdout.startswith("error: usage")
    (tree / "taken").mkdir()
    done = run(tree, "new_target.py", "taken")
    assert done.returncode == 5 and "already exists" in done.stdout
