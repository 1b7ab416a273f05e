"""`council users`: the people of a council, each with a login of their own that the
NATS server keeps to their own sessions and conversations."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from council.bus.transport.people import PeopleFile


def run_users(action: str, name: str, *, admin: bool, nats_config: str) -> int:
    people = PeopleFile(Path(nats_config or "nats.conf"))
    console = Console()
    if action == "list":
        table = Table(title=f"people of {people.path}")
        for column in ("name", "may"):
            table.add_column(column)
        for person in people.people():
            table.add_row(person.name, "everyone's (admin)" if person.admin else "their own")
        console.print(table)
        return 0
    if not name:
        console.print(f"[red]error:[/] `council users {action}` needs a NAME")
        return 2
    if action == "remove":
        people.remove(name)
        console.print(f"removed {name}")
    else:
        password = people.add(name, admin=admin) if action == "add" else people.reset(name)
        what = "an admin (every session)" if admin else "a person (their own sessions)"
        told = (
            f"{name}: {what if action == 'add' else 'a new password'}. The password is "
            "shown this once (only its bcrypt hash is kept):\n"
            f"  password  {password}\n"
            f"  ask       COUNCIL_NATS_USER={name} COUNCIL_NATS_PASSWORD={password} "
            'council ask "…"\n'
            "  any NATS client: user and password as above"
        )
        console.print(told, soft_wrap=True, highlight=False)
    if why_not := people.reload():
        console.print(f"[yellow]{why_not}[/]")
    else:
        console.print("the server reloaded its users")
    return 0
