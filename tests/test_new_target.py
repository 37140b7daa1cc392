# SPDX-License-Identifier: MIT OR Apache-2.0
"""The scaffold: `make new-target NAME=foo` gives a target that runs at once."""
import subprocess
import sys

from trials import run_trial, scratch_tree

FILES = ("kernels.py", "reference.py", "inputs.py", "run_experiment.py", "program.md")


def scaffold(tree, name):
    return subprocess.run([sys.executable, "tools/new_target.py", name], cwd=tree,
                          capture_output=True, text=True, timeout=60)


def test_scaffold_runs_at_once_and_is_listed(tmp_path):
    tree = scratch_tree(tmp_path / "tree", caches=())
    done = scaffold(tree, "foo")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in FILES:
        text = (tree / "foo" / name).read_text()
        assert "__target__" not in text
    assert "foo/program.md" in (tree / "foo" / "program.md").read_text()
    assert "| `foo` | candidate, scaffolded |" in (tree / "README.md").read_text()
    results = tmp_path / "results.tsv"
    trial = run_trial(tree, "foo", tree / "foo" / "kernels.py", results, rounds=2, timeout=120)
    assert trial.code == 0, trial.stdout + trial.stderr
    assert trial.block["status"] == "baseline" and trial.block["correctness"] == "pass"
    assert len(results.read_text().splitlines()) == 2  # header + the baseline row


def test_scaffold_marks_a_listed_candidate(tmp_path):
    tree = scratch_tree(tmp_path / "tree", caches=())
    assert scaffold(tree, "dictionary").returncode == 0
    readme = (tree / "README.md").read_text()
    assert "| `dictionary` | candidate, scaffolded |" in readme
    assert readme.count("| `dictionary` |") == 1


def test_scaffold_refuses_bad_names_and_existing_folders(tmp_path):
    tree = scratch_tree(tmp_path / "tree", caches=())
    for bad in ("", "Foo", "../x", "a b"):
        done = scaffold(tree, bad)
        assert done.returncode == 5 and done.stdout.startswith("error: usage")
    (tree / "taken").mkdir()
    done = scaffold(tree, "taken")
    assert done.returncode == 5 and "already exists" in done.stdout
