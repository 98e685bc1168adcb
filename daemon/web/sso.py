"""Trusted reverse proxies: their X-Forwarded-For names the client, and their single-sign-on
headers (X-Forwarded-User, -Email, -Groups, as oauth2-proxy sets them) name the person.

Only a direct peer listed in `http.trusted_proxies` is believed; from anyone else the
headers change nothing. Groups map to roles (`auth.sso.roles`, highest wins). The identity
is set for the request being served (`SSO_IDENTITY`), so every route's usual
`Authenticator.identify` sees the person, and every event records their name.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from daemon.config.auth import SSO_IDENTITY, Identity
from daemon.config.settings import ROLE_RANK, Settings

log = logging.getLogger("watchkeeper.auth")
Scope = dict[str, Any]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted(peer: str | None, networks: list[Network]) -> bool:
    """Whether a direct peer is one of the trusted proxies."""
    if not peer or not networks:
        return False
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(addr in net for net in networks)


def client_behind(forwarded_for: str, networks: list[Network]) -> str | None:
    """The client a chain of trusted proxies forwarded for: the right-most untrusted hop."""
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not trusted(hop, networks):
            return hop
    return hops[0] if hops else None


def person(headers: dict[str, str], settings: Settings) -> Identity | str | None:
    """The identity the proxy's headers name; a refusal reason; None when they name nobody."""
    sso = settings.auth.sso
    user = headers.get(sso.user_header.lower(), "").strip()
    email = headers.get(sso.email_header.lower(), "").strip()
    name = user or email
    if not name:
        return None
    groups = [g.strip() for g in headers.get(sso.groups_header.lower(), "").split(",")]
    roles: list[str] = [sso.roles[g] for g in groups if g in sso.roles]
    role: str | None = max(roles, key=ROLE_RANK.__getitem__) if roles else sso.default_role
    if role is None:
        return (
            f"{name} signed in through the proxy but is in no group mapped to a role "
            "(auth.sso.roles); ask an admin"
        )
    return Identity(name, role)


class TrustedProxies:
    """ASGI middleware: believe forwarded headers from trusted proxies only."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.networks: list[Network] = [
            ipaddress.ip_network(n, strict=False) for n in settings.http.trusted_proxies
        ]
        # Without configured proxies, X-Forwarded-For is still believed from 127.0.0.1, as
        # uvicorn did by default, so a local proxy's remote clients are not loopback.
        self.forwarders = self.networks or [ipaddress.ip_network("127.0.0.1/32")]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        peer = (scope.get("client") or (None,))[0]
        if scope["type"] not in ("http", "websocket") or not trusted(peer, self.forwarders):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        forwarded = headers.get("x-forwarded-for")
        if forwarded:
            client = client_behind(forwarded, self.forwarders)
            if client:
                scope = {**scope, "client": (client, 0)}
        proto = headers.get("x-forwarded-proto", "").strip().lower()
        if proto in ("http", "https"):
            scope = {**scope, "scheme": proto}
        sso_on = self.settings.auth.sso.enabled and trusted(peer, self.networks)
        who = person(headers, self.settings) if sso_on else None
        token = SSO_IDENTITY.set(who)
        try:
            await self.app(scope, receive, send)
        finally:
            SSO_IDENTITY.reset(token)
