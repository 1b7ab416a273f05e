"""A setting a person may tune, declared once, beside the code that reads it.

A role's config (``CouncilConfig``, ``RuntimeOptions``, the sandbox's ``Limits``,
...) marks each field a person may set with ``tunable``: its default, its
environment variable, its help and, where the field's name does not make it, its
flag. The settings object, every command's flags, ``--help`` and the docs' table
of settings are read from these declarations (``assembly/settings.py``), so that none
of them is written twice and a command takes every setting of the roles it runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
_KEY = "tunable"


@dataclass(frozen=True)
class Tunable:
    env: str
    help: str
    flag: str
    shown: str | None = None
    """How the default reads where it is computed at run time ("the members' models")."""


def tunable(
    default: T, env: str, help: str, *, flag: str | None = None, shown: str | None = None
) -> T:
    """A config field a person may set (``flag`` by default: ``--`` and the field's name)."""
    marks = {_KEY: Tunable(env, help, flag or "", shown)}
    return dataclasses.field(default=default, metadata=marks)  # type: ignore[no-any-return]


def declared(config: type[Any]) -> dict[str, Tunable]:
    """The tunable fields of a config dataclass, by field name, in declaration order."""
    found = {}
    for f in dataclasses.fields(config):
        if (mark := f.metadata.get(_KEY)) is not None:
            found[f.name] = mark if mark.flag else dataclasses.replace(mark, flag=_flag(f.name))
    return found


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
