"""The people of a council: each a user of their own in nats.conf, whom the server keeps
to their own subjects, written there by `council users` and applied by a reload.

Why users in the server's own configuration, and not NATS accounts, JWTs or the auth
callout: the people share one stream and one chairman, which across accounts would
need each person's JetStream API and delivery subjects exported and imported;
decentralized JWTs would replace the roles' users by an operator's; the auth callout
puts a service of ours on every login. Per-user permissions keep every check in the
server, the roles' users as they are, and nothing more running. Passwords are stored
as bcrypt hashes, which nats-server checks itself.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from council.bus import subjects
from council.bus.errors import CouncilError
from council.bus.transport.server import PID_FILE, STORE_DIR, find_nats_server

BEGIN = "# people: begin (written by `council users`: add, remove and reset people with it)"
END = "# people: end"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_ENTRY = re.compile(r'^\s*\{ user: (?P<name>[a-z0-9_-]+), password: "(?P<hash>[^"]+)"')
_USERS = re.compile(r"^\s*user:\s*(\w+)", re.MULTILINE)


class PeopleError(CouncilError):
    pass


def permissions(name: str, *, admin: bool) -> dict[str, list[str]]:
    """What a person may do: ask, stop and delete as themselves and read their own
    sessions, live text and conversations; an admin reads and controls anyone's."""
    mine = "*" if admin else name
    consumer = "$JS.API.CONSUMER.CREATE.COUNCIL.*"
    return {
        "publish": [
            subjects.ask(name),
            subjects.document(name),
            subjects.stop(mine),
            subjects.forget(mine),
            subjects.ROSTER,
            subjects.PRESETS,
            f"{consumer}.{subjects.sessions_of(mine)}",
            f"{consumer}.{subjects.conversations_of(mine)}",
            "$JS.FC.>",
        ],
        "subscribe": [
            subjects.live_of(mine),
            subjects.HEALTH,
            f"{subjects.inbox_prefix(name)}.>",
        ],
    }


@dataclass(frozen=True)
class Person:
    name: str
    admin: bool
    password_hash: str

    def entry(self) -> str:
        """The person's line in nats.conf: one line, so that `council users` reads it back."""
        allowed = permissions(self.name, admin=self.admin)
        lists = ", ".join(f"{what}: {json.dumps(listed)}" for what, listed in allowed.items())
        user = f'user: {self.name}, password: "{self.password_hash}"'
        return f"        {{ {user}, permissions: {{ {lists} }} }}"


def new_password() -> str:
    """Letters and digits (a NATS config token, and easy to paste), 128 bits."""
    alphabet = string.ascii_letters + string.digits
    return "p" + "".join(secrets.choice(alphabet) for _ in range(22))


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(11)).decode()


@dataclass
class PeopleFile:
    """The people block of one nats.conf."""

    path: Path

    def _text(self) -> str:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise PeopleError(f"cannot read {self.path}: {exc.strerror}") from None
        if BEGIN not in text or END not in text:
            raise PeopleError(
                f"{self.path} has no people block: copy the lines from `{BEGIN[:16]}` to "
                f"`{END}` from the nats.conf council ships into its users list"
            )
        return text

    def people(self) -> list[Person]:
        text = self._text()
        block = text[text.index(BEGIN) : text.index(END)]
        found = []
        for line in block.splitlines():
            if m := _ENTRY.match(line):
                admin = f'"{subjects.stop("*")}"' in line
                found.append(Person(m["name"], admin, m["hash"]))
        return found

    def write(self, people: list[Person]) -> None:
        text = self._text()
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        indent = head[head.rindex("\n") + 1 :]
        lines = [person.entry() for person in sorted(people, key=lambda p: p.name)]
        block = BEGIN + "\n" + "".join(line + "\n" for line in lines) + indent + END
        written = self.path.with_name(self.path.name + ".new")
        written.write_text(head + block + tail)
        written.replace(self.path)  # whole or not at all: the server reads this file

    def add(self, name: str, *, admin: bool) -> str:
        """A new person; their password, shown once."""
        if not NAME.match(name):
            raise PeopleError(
                f"{name!r}: a name is 1-32 of a-z, 0-9, _ and -, starting with a letter"
            )
        taken = set(_USERS.findall(self._text())) | {p.name for p in self.people()}
        if name in taken or name == subjects.ANYONE:
            raise PeopleError(f"{name!r} is taken (by a person or a role's user)")
        password = new_password()
        self.write([*self.people(), Person(name, admin, hashed(password))])
        return password

    def remove(self, name: str) -> None:
        kept = [p for p in self.people() if p.name != name]
        if len(kept) == len(self.people()):
            raise PeopleError(f"no person {name!r} in {self.path}")
        self.write(kept)

    def reset(self, name: str) -> str:
        """A new password for ``name`` (the old one stops working at the reload)."""
        people = self.people()
        person = next((p for p in people if p.name == name), None)
        if person is None:
            raise PeopleError(f"no person {name!r} in {self.path}")
        password = new_password()
        changed = Person(name, person.admin, hashed(password))
        self.write([changed if p.name == name else p for p in people])
        return password

    def reload(self) -> str:
        """Tell the server started from this file to read it again: "" when it did, else
        why not (no server of this file running: the change applies at its start)."""
        named = STORE_DIR.search(self.path.read_text())
        store = Path(named[1]).expanduser().resolve() if named else None
        pid_file = store / PID_FILE if store else None
        if pid_file is None or not pid_file.exists():
            return "no running nats-server of this nats.conf found (it applies at its start)"
        done = subprocess.run(
            [find_nats_server(), "--signal", f"reload={pid_file}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return f"the server did not reload: {done.stderr.strip() or done.returncode}"
        return ""
