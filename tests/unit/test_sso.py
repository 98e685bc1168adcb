"""Single sign-on by a trusted reverse proxy (oauth2-proxy style headers): believed only from
`http.trusted_proxies`, groups mapped to roles, and the person's name in every event."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from daemon.config.auth import Authenticator
from daemon.config.settings import Settings
from daemon.domain import Alert, GroupingPolicy, ReceiveAlert, fingerprint
from daemon.engine.ingest import Ingestor
from daemon.engine.metrics import Metrics
from daemon.engine.store import EventLog
from daemon.web.app import ApiContext, create_app
from daemon.web.sso import client_behind, trusted

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PROXY, STRANGER = "10.0.0.5", "192.168.1.9"


def signed_in(user: str, groups: str = "", email: str = "") -> dict[str, str]:
    headers = {"X-Forwarded-User": user, "X-Forwarded-Groups": groups}
    if email:
        headers["X-Forwarded-Email"] = email
    return headers


class Rig:
    def __init__(self, ing: Ingestor, ctx: ApiContext) -> None:
        self.ing, self.app = ing, create_app(ctx)

    def client(self, peer: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(peer, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://wk")

    async def incident(self) -> UUID:
        labels = {"alertname": "DiskFull"}
        await self.ing.submit(
            [ReceiveAlert(Alert(fingerprint=fingerprint(labels), labels=labels, starts_at=T0))]
        )
        return next(iter(self.ing.world.incidents))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'e.db'}",
        http={"trusted_proxies": ["10.0.0.0/24"]},
        auth={
            "tokens": [{"name": "robot", "role": "admin", "token": "tok-robot"}],
            "sso": {"enabled": True, "roles": {"sre": "responder", "leads": "approver"}},
        },
    )
    log = EventLog(settings.store)
    ing = Ingestor(log, GroupingPolicy(), lambda: T0)
    await ing.start()
    yield Rig(ing, ApiContext(settings, ing, lambda: T0, Metrics(), Authenticator(settings), dict))
    await ing.close()
    log.close()


async def test_a_person_named_by_the_trusted_proxy_acts_under_their_name(rig: Rig) -> None:
    inc = await rig.incident()
    async with rig.client(PROXY) as c:
        r = await c.post(
            f"/api/v1/incidents/{inc}/note",
            json={"text": "looking"},
            headers=signed_in("alice", "staff, sre"),
        )
        assert r.status_code == 200, r.text
        # The highest role of the person's groups; not enough to approve.
        r = await c.post("/api/v1/pause", headers=signed_in("alice", "sre,leads"))
        assert (r.status_code, r.json()["error"]) == (
            403,
            "alice has role approver; pausing execution needs role admin",
        )
        # Signed in, but in no mapped group: refused with the reason.
        r = await c.get("/api/v1/incidents", headers=signed_in("mallory", "interns"))
        assert r.status_code == 403
        assert "in no group mapped to a role (auth.sso.roles)" in r.json()["error"]
        # The email names the person when the proxy sends no user.
        r = await c.post(
            f"/api/v1/incidents/{inc}/take", headers=signed_in("", "sre", "bo@example.com")
        )
        assert r.json()["assignee"] == "bo@example.com"
    [noted] = [e for e in rig.ing.log.read(0, 100) if type(e.event).__name__ == "IncidentNoted"]
    assert (noted.event.by, noted.event.channel) == ("alice", "api")  # type: ignore[attr-defined]


async def test_the_headers_mean_nothing_from_anyone_else(rig: Rig) -> None:
    inc = await rig.incident()
    async with rig.client(STRANGER) as c:
        r = await c.post(
            f"/api/v1/incidents/{inc}/note",
            json={"text": "forged"},
            headers=signed_in("admin", "leads"),
        )
        assert r.status_code == 401
        assert "bearer token" in r.json()["error"]
        # A token still works, as that token's identity.
        r = await c.post(
            f"/api/v1/incidents/{inc}/take",
            headers={**signed_in("admin", "leads"), "Authorization": "Bearer tok-robot"},
        )
        assert r.json()["assignee"] == "robot"
        # Nor does a stranger's X-Forwarded-For make it loopback.
        r = await c.get("/api/v1/incidents", headers={"X-Forwarded-For": "127.0.0.1"})
        assert r.status_code == 401


async def test_the_console_shows_the_signed_in_person(rig: Rig) -> None:
    inc = await rig.incident()
    async with rig.client(PROXY) as c:
        who = signed_in("alice", "sre")
        page = await c.get(f"/incidents/{inc}", headers=who)
        assert page.status_code == 200
        assert 'alice <span class="role">responder</span>' in page.text
        csrf = re.findall(r'name="csrf" value="([^"]+)"', page.text)[0]
        r = await c.post(f"/incidents/{inc}/do/ack", data={"csrf": csrf}, headers=who)
        assert r.status_code == 303
        assert rig.ing.world.incidents[inc].acknowledged_by == "alice"
        # The session lasts only while the proxy names the same person.
        r = await c.get(f"/incidents/{inc}", headers=signed_in("bob", "sre"))
        assert 'bob <span class="role">responder</span>' in r.text
        r = await c.get(f"/incidents/{inc}")
        assert r.status_code == 303
        assert r.headers["location"].startswith("/login")


@pytest.mark.parametrize(
    ("chain", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7, 10.0.0.9", "203.0.113.7"),  # through a second trusted proxy
        ("198.51.100.1, 203.0.113.7", "203.0.113.7"),  # the left-most hop is the client's word
    ],
)
def test_forwarded_for_names_the_right_most_untrusted_hop(chain: str, client: str) -> None:
    import ipaddress

    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
        ipaddress.ip_network("10.0.0.0/24")
    ]
    assert client_behind(chain, nets) == client
    assert trusted("10.0.0.200", nets)
    assert not trusted("10.0.1.1", nets)
    assert not trusted("not-an-ip", nets)


async def test_without_configured_proxies_a_local_proxys_clients_are_not_loopback(
    tmp_path: Path,
) -> None:
    # No tokens: only loopback callers are served. A local proxy forwarding a remote
    # client must not make that client loopback (as uvicorn's own default did).
    settings = Settings(store=f"sqlite:///{tmp_path / 'e.db'}")
    log = EventLog(settings.store)
    ing = Ingestor(log, GroupingPolicy(), lambda: T0)
    await ing.start()
    try:
        ctx = ApiContext(settings, ing, lambda: T0, Metrics(), Authenticator(settings), dict)
        transport = httpx.ASGITransport(app=create_app(ctx), client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://wk") as c:
            assert (await c.get("/api/v1/incidents")).status_code == 200
            r = await c.get("/api/v1/incidents", headers={"X-Forwarded-For": "203.0.113.7"})
            assert r.status_code == 401
            # And no sign-on either: sso is not enabled, and no proxy is configured.
            r = await c.get(
                "/api/v1/incidents",
                headers={"X-Forwarded-For": "203.0.113.7", **signed_in("admin", "leads")},
            )
            assert r.status_code == 401
    finally:
        await ing.close()
        log.close()
