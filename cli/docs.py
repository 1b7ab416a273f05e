"""`council docs`: the figures in the docs, regenerated from the JSON that printed them.

A page marks each generated block with the file it comes from:

    <!-- generated from evals/results/dev--default.report.json -->
    ...
    <!-- end generated -->

An eval report (`council eval`'s ``.report.json``) becomes its tables; a
benchmark's saved result (``python -m bench.X --save``, in ``bench/results/``)
becomes the tables the benchmark printed; ``assembly/settings.py`` becomes the table
of settings (flag, variable, default, meaning, and the commands whose parsers take
it), read from the declarations, so the docs cannot drift from ``--help``;
``assembly/settings.py#first`` the README's short one. ``--check`` changes nothing and
fails when a block differs from its source, so the suite can tell when a figure in the
docs is not one that a command printed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import msgspec

from council.assembly.settings import FIRST, SETTINGS, settings_rows
from council.bus.reports import Report, markdown_table

BLOCK = re.compile(
    r"(?P<open><!-- generated from (?P<source>\S+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- end generated -->)",
    re.DOTALL,
)


def render(source: Path, part: str = "") -> str:
    """The Markdown of one source file: an eval report, a saved benchmark, or the
    settings object (docs/settings.md's table with the commands that take each;
    ``part`` "first": the README's short one)."""
    if source.name == "settings.py":
        return _settings_table(first=part == "first")
    data = source.read_bytes()
    if source.name.endswith(".report.json"):
        return msgspec.json.decode(data, type=Report).markdown()
    saved = json.loads(data)
    out: list[str] = []
    for table in saved["tables"]:
        out += ["", f"**{table['title']}**", "", *markdown_table(table["headers"], table["rows"])]
    out += ["", f"({saved['command']}, {saved['date']}, {saved['machine']})"]
    return "\n".join(out).strip()


def _settings_table(*, first: bool) -> str:
    from council.cli.main import commands_of_settings  # the parsers, built by the CLI

    names = FIRST if first else tuple(SETTINGS)
    taking = commands_of_settings()
    commands = list(dict.fromkeys(c for taken in taking.values() for c in taken))
    rows = []
    for name, (flag, env, shown, meaning) in zip(names, settings_rows(names), strict=True):
        shown = shown if " " in shown or shown == "none" else f"`{shown}`"
        row = [f"`{flag}`", f"`{env}`", shown, meaning]
        rows.append(row if first else [*row, _commands(taking[name], commands)])
    headers = ["flag", "environment", "default", "meaning", *([] if first else ["commands"])]
    return "\n".join(markdown_table(headers, rows, numbers=False))


def _commands(taking: list[str], commands: list[str]) -> str:
    left_out = [c for c in commands if c not in taking]
    if len(left_out) < len(taking) / 2:
        return "every command" + (f" but {', '.join(left_out)}" if left_out else "")
    return ", ".join(taking)


def regenerate(page: Path, root: Path) -> tuple[str, list[str]]:
    """The page with every block regenerated, and the sources that could not be read."""
    missing: list[str] = []

    def block(match: re.Match[str]) -> str:
        name, _, part = match["source"].partition("#")
        source = root / name
        if not source.is_file():
            missing.append(match["source"])
            return match[0]
        return f"{match['open']}{render(source, part)}\n{match['close']}"

    return BLOCK.sub(block, page.read_text()), missing


def run_docs(root: Path, *, check: bool) -> int:
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    stale: list[str] = []
    for page in pages:
        if not page.is_file():
            continue
        text, missing = regenerate(page, root)
        for source in missing:
            print(f"{page.relative_to(root)}: no such source {source}", file=sys.stderr)
        if missing:
            return 2
        if text != page.read_text():
            stale.append(str(page.relative_to(root)))
            if not check:
                page.write_text(text)
    verb = "out of date" if check else "regenerated"
    for name in stale:
        print(f"{name}: {verb}", file=sys.stderr)
    if not stale:
        print("docs: every generated block matches its source", file=sys.stderr)
    return 1 if check and stale else 0
