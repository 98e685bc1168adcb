"""Bearer tokens with roles. Refusals say what was wrong and what is needed."""

from __future__ import annotations

import hmac
import ipaddress
from contextvars import ContextVar
from dataclasses import dataclass

from daemon.config.secrets import resolve_secret
from daemon.config.settings import ROLE_RANK, Settings


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, with which role, through which channel."""

    name: str
    role: str
    channel: str = "api"

    def can(self, role: str) -> bool:
        """Whether this identity's role is at least `role`."""
        return ROLE_RANK.get(self.role, 0) >= ROLE_RANK[role]


# Who a trusted proxy says is calling, for the request being served (set by
# daemon/web/sso.py): an Identity, or the reason a signed-in person is refused.
SSO_IDENTITY: ContextVar[Identity | str | None] = ContextVar("sso_identity", default=None)


class AuthError(Exception):
    """Authentication (401) or authorization (403) failed; the message says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def is_loopback(host: str | None) -> bool:
    """Whether a peer address is on the loopback network."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Authenticator:
    """Maps bearer tokens to identities (resolved once, at load or reload)."""

    def __init__(self, settings: Settings) -> None:
        self.tokens = {
            resolve_secret(t.token): Identity(t.name, t.role) for t in settings.auth.tokens
        }
        self.ingest_token = (
            resolve_secret(settings.auth.ingest_token) if settings.auth.ingest_token else None
        )
        self.ingest_mode = settings.http.ingest_auth

    def _lookup(self, token: str) -> Identity | None:
        for known, ident in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return ident
        return None

    def identify(self, authorization: str | None, peer: str | None, needs: str) -> Identity:
        """Return the caller's identity if it may act with role `needs`; raise AuthError."""
        sso = SSO_IDENTITY.get()
        if sso is not None:
            return _allowed(AuthError(403, sso) if isinstance(sso, str) else sso, needs)
        if not self.tokens:
            # No tokens configured: a local, single-user setup. Only loopback callers.
            if is_loopback(peer):
                return Identity("local", "admin")
            raise AuthError(
                401, "no API tokens are configured, so only loopback clients are allowed"
            )
        token = _bearer(authorization)
        ident = self._lookup(token)
        if ident is None:
            raise AuthError(401, "unknown bearer token")
        if not ident.can(needs):
            raise AuthError(
                403, f"{ident.name} has role {ident.role}; this needs role {needs} or higher"
            )
        return ident

    def check_ingest(self, authorization: str | None, peer: str | None) -> str:
        """Allow ingestion per `http.ingest_auth`; return the submitter's name."""
        if self.ingest_mode == "open" or (self.ingest_mode == "loopback" and is_loopback(peer)):
            return "ingest"
        if authorization is None:
            raise AuthError(
                401,
                "ingestion needs a bearer token (http.ingest_auth is "
                f"{self.ingest_mode!r} and the client is not on loopback)",
            )
        token = _bearer(authorization)
        if self.ingest_token and hmac.compare_digest(self.ingest_token.encode(), token.encode()):
            return "ingest"
        ident = self._lookup(token)
        if ident is None:
            raise AuthError(401, "unknown bearer token")
        if not ident.can("responder"):
            raise AuthError(403, f"{ident.name} has role {ident.role}; ingestion needs responder")
        return ident.name


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "malformed Authorization header: expected 'Bearer <token>'")
    return token.strip()


def _allowed(ident: Identity | AuthError, needs: str) -> Identity:
    if isinstance(ident, AuthError):
        raise ident
    if not ident.can(needs):
        raise AuthError(
            403, f"{ident.name} has role {ident.role}; this needs role {needs} or higher"
        )
    return ident
