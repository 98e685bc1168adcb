"""Console sessions: a token logs a person in once; a cookie carries a random session id.

Sessions live in memory (a restart logs everyone out) and are bound to the hash of the
token that opened them. Who a session is gets resolved again on every lookup (the
`resolve` the console gives), so removing a token from the config (and reloading) ends its
sessions and a changed role applies at once. Each session has its own CSRF token that
every form must send back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from daemon.config.auth import Identity
from daemon.web.bodies import form_body

COOKIE = "wk_session"
LOGIN_COOKIE = "wk_login"
TTL_SECONDS = 12 * 3600
MAX_SESSIONS = 1000


def token_digest(token: str) -> str:
    """What a session remembers of its token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    """One logged-in browser."""

    identity: Identity
    token_digest: str
    csrf: str
    expires: float
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def csrf_ok(self, sent: str | None) -> bool:
        """Whether a form sent this session's CSRF token."""
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), str(sent).encode())

    def flash(self, level: str, text: str) -> None:
        """Queue a message for the next page."""
        self.flashes = [*self.flashes[-4:], (level, text)]

    def take_flashes(self) -> list[tuple[str, str]]:
        """Messages queued for this page (each shown once)."""
        out, self.flashes = self.flashes, []
        return out


class Sessions:
    """In-memory sessions by id, oldest evicted beyond MAX_SESSIONS."""

    def __init__(self, resolve: Callable[[Session], Identity | None] | None = None) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        # Who a session is now (None: it is over), asked on every `get`.
        self._resolve = resolve

    def open(self, identity: Identity, digest: str) -> tuple[str, Session]:
        """A new session; returns its id (for the cookie) and the session."""
        sid = secrets.token_urlsafe(32)
        expires = time.monotonic() + TTL_SECONDS
        session = Session(identity, digest, secrets.token_urlsafe(32), expires)
        self._by_id[sid] = session
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        """A live session by id."""
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        if session.expires < time.monotonic():
            del self._by_id[sid]
            return None
        if self._resolve is not None:
            current = self._resolve(session)
            if current is None:
                del self._by_id[sid]
                return None
            session.identity = current
        return session

    def close(self, sid: str | None) -> None:
        """Log out."""
        if sid:
            self._by_id.pop(sid, None)


CSRF_REFUSED = "missing or invalid CSRF token: reload the page and submit the form again"


async def session_form(
    request: Request, sessions: Sessions
) -> tuple[Session, dict[str, str]] | None:
    """The session and fields of a console form post; None when it has no session or its
    CSRF token is not this session's. The body is read only for a logged-in browser."""
    session = sessions.get(request.cookies.get(COOKIE))
    data = await form_body(request) if session is not None else {}
    if session is None or not session.csrf_ok(data.get("csrf")):
        return None
    return session, data
