# SPDX-License-Identifier: MIT OR Apache-2.0
"""TOOL: `make new-target NAME=foo` scaffolds foo/ from tools/templates/target/ and lists it in the
README's target table. The scaffold runs at once (`make run TARGET=foo`: its baseline is the
placeholder math); docs/adding-a-target.md says what to rewrite.
"""
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "templates" / "target"
PLACEHOLDER = "__target__"  # replaced by the target's name in every template file
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,39}")  # a folder name make and the table accept
TABLE_ROW = re.compile(r"^\| `(?P<name>[^`]+)` \| (?P<status>[^|]+) \|")
EXIT_USAGE = 5


def list_in_readme(name):
    """Mark the target scaffolded in the README table, adding a row if it is not there."""
    readme = REPO / "README.md"
    lines = readme.read_text().splitlines(keepends=True)
    rows = [i for i, line in enumerate(lines) if TABLE_ROW.match(line)]
    for i in rows:
        if TABLE_ROW.match(lines[i])["name"] == name:
            lines[i] = lines[i].replace("candidate, no code", "candidate, scaffolded", 1)
            break
    else:
        lines.insert(rows[-1] + 1, f"| `{name}` | candidate, scaffolded | TODO | TODO |\n")
    readme.write_text("".join(lines))


def main(argv):
    name = argv[1] if len(argv) == 2 else ""
    if not NAME_PATTERN.fullmatch(name):
        print("error: usage: make new-target NAME=<name> (lower case letters, digits, - or _)")
        return EXIT_USAGE
    folder = REPO / name
    if folder.exists():
        print(f"error: {name}/ already exists")
        return EXIT_USAGE
    folder.mkdir()
    for source in sorted(TEMPLATE.iterdir()):
        if source.is_file():
            (folder / source.name).write_text(source.read_text().replace(PLACEHOLDER, name))
    list_in_readme(name)
    print(f"{name}/ created from tools/templates/target/ and listed in README.md.\n"
          f"Next: `make run TARGET={name}` (runs the placeholder at once), then follow "
          "docs/adding-a-target.md: step 0, then the TODO markers.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
