"""The per-role permissions of the shipped nats.conf, read from the file itself.

Just enough of the NATS config format for that file: variables holding a list,
and each user's `publish` and `subscribe` lists (a queue subscription's
subject is taken without its queue). So tests follow the config, not a copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

NATS_CONF = Path(__file__).parent.parent / "nats.conf"

_COMMENT = re.compile(r"#[^\n]*")
_LIST = r"\[(?P<items>[^\]]*)\]"
_VARIABLE = re.compile(r"^(?P<name>[A-Z_]+)\s*=\s*" + _LIST, re.MULTILINE)
_USER = re.compile(r"\buser:\s*(?P<name>\w+)")
_STRING = re.compile(r'"([^"]*)"')


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def allows(self, operation: str, subject: str) -> bool:
        patterns = self.publish if operation == "publish" else self.subscribe
        return any(matches(pattern, subject) for pattern in patterns)


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` one or more at the end."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or (token != "*" and token != tokens[i]):
            return False
    return len(tokens) == len(wanted)


def _items(text: str) -> tuple[str, ...]:
    return tuple(item.split(" ")[0] for item in _STRING.findall(text))


def permissions(path: Path = NATS_CONF) -> dict[str, Permissions]:
    text = _COMMENT.sub("", path.read_text())
    variables = {m["name"]: _items(m["items"]) for m in _VARIABLE.finditer(text)}
    users = list(_USER.finditer(text))
    roles: dict[str, Permissions] = {}
    for user, following in zip(users, [*users[1:], None], strict=True):
        block = text[user.end() : following.start() if following else len(text)]
        lists: dict[str, tuple[str, ...]] = {}
        for operation in ("publish", "subscribe"):
            found = re.search(rf"\b{operation}:\s*(?:\$(?P<var>\w+)|{_LIST})", block)
            if found is None:
                lists[operation] = ()
            elif found["var"]:
                lists[operation] = variables[found["var"]]
            else:
                lists[operation] = _items(found["items"])
        roles[user["name"]] = Permissions(lists["publish"], lists["subscribe"])
    return roles
