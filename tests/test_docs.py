"""`council docs`: every generated figure in the docs is the one its JSON holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from council.assembly.settings import FIRST, SETTINGS
from council.bus.reports import markdown_table
from council.cli.docs import render, run_docs
from council.cli.main import build_parser, commands_of_settings

ROOT = Path(__file__).parent.parent
REPORT = Path(__file__).parent / "data" / "eval-report.json"


def test_the_repositorys_docs_match_the_json_they_were_generated_from() -> None:
    assert run_docs(ROOT, check=True) == 0


def test_a_stale_block_is_found_then_regenerated_from_its_source(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    shutil.copy(REPORT, tmp_path / "run.report.json")
    (tmp_path / "saved.json").write_text(
        json.dumps(
            {
                "command": "python -m bench.x",
                "date": "2026-12-01 10:00 UTC",
                "machine": "x86_64, 2 cores, Linux",
                "tables": [
                    {"title": "Speed", "headers": ["calls", "tok/s"], "rows": [["3", "41"]]}
                ],
            }
        )
    )
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "Prose stays.\n<!-- generated from run.report.json -->\nold figure\n"
        "<!-- end generated -->\n<!-- generated from saved.json -->\n"
        "<!-- end generated -->\nMore prose.\n"
    )
    assert run_docs(tmp_path, check=True) == 1
    assert "old figure" in page.read_text()  # --check changes nothing
    assert run_docs(tmp_path, check=False) == 0
    text = page.read_text()
    report = json.loads(REPORT.read_text())
    council = next(s for s in report["systems"] if s["system"] == "council")
    assert f"| council | {council['accuracy']:.1%} |" in text
    assert "| 3 | 41 |" in text
    assert text.startswith("Prose stays.\n")
    assert text.endswith("More prose.\n")
    assert "old figure" not in text
    assert run_docs(tmp_path, check=True) == 0


def test_a_block_whose_source_is_missing_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "<!-- generated from gone.report.json -->\n<!-- end generated -->\n"
    )
    assert run_docs(tmp_path, check=True) == 2


def test_the_settings_table_has_every_setting_as_help_shows_it() -> None:
    """docs/settings.md's table is rendered from the settings object: each variable,
    its flag and its default once, and a pipe in a cell cannot break the table; the
    README's short table is the first user's handful of the same rows."""
    table = render(ROOT / "assembly" / "settings.py").splitlines()
    assert len(table) == 2 + len(SETTINGS)
    for s in SETTINGS.values():
        (row,) = [r for r in table if f"`{s.tunable.env}`" in r]
        assert row.startswith(f"| `{s.tunable.flag}` |")
        assert s.shown in row
    first = render(ROOT / "assembly" / "settings.py", "first").splitlines()
    assert [r.split(" | ")[0] for r in first[2:]] == [
        f"| `{SETTINGS[k].tunable.flag}`" for k in FIRST
    ]
    assert markdown_table(["a"], [["x | y"]])[-1] == "| x \\| y |"


def test_every_command_takes_each_flag_the_settings_table_gives_it() -> None:
    """The commands column read back: each command's parser accepts every flag the
    table lists for it, and every setting is some command's flag (four the README
    once listed were no command's)."""
    parser = build_parser()
    positionals = {
        "ask": ["q"], "export": ["c"], "delete": ["c"], "stop": ["s"], "eval": ["f"],
        "users": ["list"],
    }  # fmt: skip
    for key, commands in commands_of_settings().items():
        flag = SETTINGS[key].tunable.flag
        assert commands, f"{key}: no command takes {flag}"
        for command in commands:
            args = parser.parse_args([command, *positionals.get(command, []), flag, "1"])
            assert getattr(args, key) is not None, (command, key)
    taken = commands_of_settings()
    for key in ("council.settle_early", "council.history_tokens", "runtime.openai_base_url",
                "runtime.openai_api_key"):  # fmt: skip
        assert {"up", "chairman"} <= set(taken[key]), key
