"""Who a request to `council api` or `council mcp` over HTTP is, on the bus.

A bearer ``NAME:PASSWORD`` is a person's NATS login (`council users`): their
requests ask and read on a connection of their own, logged in as them, so the
NATS server keeps them to their own sessions and conversations. The service's
own key (or none, on loopback without one) asks as the service's login.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

from nats.aio.client import Client

from council.bus.errors import BusUnavailable
from council.bus.transport.connection import Credentials, connect

PEOPLE_CONNECTIONS = 64
"""People's connections kept open; the least recently used beyond it is closed."""


class Refused(Exception):
    """No login: the reason, for a 401."""


class Logins:
    def __init__(self, nats_url: str, key: str, service: str) -> None:
        self.nats_url = nats_url
        self.key = key
        self.service = service
        self._people: OrderedDict[str, tuple[bytes, Client]] = OrderedDict()

    async def person(self, authorization: str) -> Client | None:
        """The person's connection a bearer ``NAME:PASSWORD`` logs in (None for any other
        bearer: the service's own); Refused when the server refuses the login."""
        given = _bearer(authorization)
        name, colon, password = given.partition(":")
        if not (colon and name and password):
            return None
        if known := self._people.get(name):
            if secrets.compare_digest(known[0], given.encode()) and known[1].is_connected:
                self._people.move_to_end(name)
                return known[1]
        try:
            nc = await connect(
                self.nats_url,
                name=f"council-{self.service}-{name}",
                credentials=Credentials(name, password),
            )
        except BusUnavailable:
            raise Refused(f"the NATS server refused {name!r} with that password") from None
        if replaced := self._people.pop(name, None):
            await replaced[1].close()
        self._people[name] = (given.encode(), nc)
        while len(self._people) > PEOPLE_CONNECTIONS:
            await self._people.popitem(last=False)[1][1].close()
        return nc

    def is_service(self, authorization: str) -> bool:
        """The service's own key (any request, where there is none)."""
        return not self.key or secrets.compare_digest(
            _bearer(authorization).encode(), self.key.encode()
        )

    async def close(self) -> None:
        for _key, nc in self._people.values():
            await nc.close()
        self._people.clear()


def _bearer(authorization: str) -> str:
    return authorization.removeprefix("Bearer ").strip()
