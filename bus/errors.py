"""Errors meant for users; each carries the data needed to act on it."""

from __future__ import annotations


class CouncilError(Exception):
    """Base of every error council raises on purpose."""


class BusUnavailable(CouncilError):
    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"cannot reach NATS at {url}: {detail}")
        self.url = url
        self.detail = detail


class NoCouncil(CouncilError):
    """Nobody answered council.ask (no responders, or a time-out behind a wildcard tracer)."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"no council answered at {url}: start one with `council up` "
            "(or `council chairman` and `council agents`)"
        )
        self.url = url


class InvalidMessage(CouncilError):
    def __init__(self, subject: str, detail: str) -> None:
        super().__init__(f"invalid message on {subject}: {detail}")
        self.subject = subject
        self.detail = detail


class ModelNotFound(CouncilError):
    def __init__(self, model: str, known: list[str]) -> None:
        hint = ", ".join(known) if known else "none"
        super().__init__(f"unknown model {model!r}; known models: {hint}")
        self.model = model
        self.known = known


class ModelLoadError(CouncilError):
    def __init__(self, model: str, detail: str) -> None:
        super().__init__(f"cannot load model {model!r}: {detail}")
        self.model = model
        self.detail = detail


class QuestionRejected(CouncilError):
    def __init__(self, reason: str, detail: str, retry_after_s: float = 0.0) -> None:
        super().__init__(f"question rejected ({reason}): {detail}")
        self.reason = reason
        self.detail = detail
        self.retry_after_s = retry_after_s
        """``busy``: about how long until the council would take it."""


class SessionNotRunning(CouncilError):
    """No chairman runs the session asked to stop: it ended, or never existed."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"no chairman is running session {session_id}: it has ended or never was")
        self.session_id = session_id


class NotYours(CouncilError):
    """A person touched a session or conversation of another: refused by the chairman
    (``not_yours``) or, where nats.conf has people, by the server."""

    def __init__(self, what: str, owner: str) -> None:
        super().__init__(
            f"{what} belongs to {owner}: only {owner} and an admin may read, stop or delete it"
        )
        self.what = what
        self.owner = owner


class SessionTimeout(CouncilError):
    def __init__(self, session_id: str, waited_s: float) -> None:
        super().__init__(f"session {session_id} did not finish within {waited_s:.0f} s")
        self.session_id = session_id
        self.waited_s = waited_s
