"""The house as the code builds it: every import between rooms runs down, never up or
across (the roles meet only on the bus), read from the source files themselves."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).parent.parent
ROOMS = ("bus", "agents", "chairman", "tools", "dashboard", "api", "evaluation", "assembly", "cli")
BUS = {"bus", "bus.transport", "bus.client"}
ROLES = {"agents", "chairman", "tools", "dashboard", "api"}
MAY_IMPORT: dict[str, set[str]] = {
    "bus": set(),  # the protocol: subjects, messages, events, codec, the fold
    "bus.transport": {"bus"},
    "bus.client": {"bus", "bus.transport"},
    **{role: BUS for role in ROLES},
    "evaluation": BUS | {"chairman"},  # it replays the chairman's own strategies
    "assembly": BUS | ROLES | {"evaluation"},
    "cli": BUS | ROLES | {"evaluation", "assembly"},
}


def room_of(module: str) -> str:
    parts = module.split(".")[1:]  # council.<room>...
    if parts[0] == "bus" and len(parts) > 1 and parts[1] in ("transport", "client"):
        return f"bus.{parts[1]}"
    return parts[0]


def imports_between_rooms() -> dict[tuple[str, str], list[str]]:
    """(from room, to room) → the files whose imports make that arrow."""
    arrows: dict[tuple[str, str], list[str]] = defaultdict(list)
    for top in ROOMS:
        for path in (ROOT / top).rglob("*.py"):
            inner = ".".join(path.relative_to(ROOT / top).with_suffix("").parts)
            here = room_of(f"council.{top}.{inner}")
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("council."):
                    modules = [node.module or ""]
                elif isinstance(node, ast.Import):
                    modules = [a.name for a in node.names if a.name.startswith("council.")]
                else:
                    continue
                for module in modules:
                    if (there := room_of(module)) != here:
                        arrows[(here, there)].append(str(path.relative_to(ROOT)))
    return arrows


def test_every_import_between_rooms_runs_down() -> None:
    """No role imports another, nothing below imports what stands above it, and the
    protocol imports neither the transport nor the client."""
    arrows = imports_between_rooms()
    wrong = {
        f"{a} -> {b}": sorted(set(files))
        for (a, b), files in arrows.items()
        if b not in MAY_IMPORT[a]
    }
    assert not wrong, wrong
    assert ("cli", "assembly") in arrows  # the reading is not empty
    assert ("bus.client", "bus.transport") in arrows


def test_no_dashboard_page_shows_a_string_meant_as_a_docstring() -> None:
    """A page is a Streamlit script: a string standing alone in it (a constant's
    docstring, say) is shown on the page by Streamlit's magic; only the page's own
    docstring is not."""
    shown = []
    for page in sorted((ROOT / "dashboard" / "screens").glob("*.py")):
        body = ast.parse(page.read_text()).body
        for statement in body[1:]:
            if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
                shown.append(f"{page.name}:{statement.lineno}")
    assert not shown, shown
