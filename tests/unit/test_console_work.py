"""The console's incident forms (CSRF-protected, roles enforced, each an event saying
`console`), and the incident list's filters and pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from routekit import in_process

from daemon.config.settings import Settings
from daemon.domain import Alert, ReceiveAlert, World, decide, fingerprint
from daemon.engine.ingest import Ingestor
from daemon.web.console_work import PAGE_SIZE, select_rows

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _alert(name: str, **labels: str) -> Alert:
    lbl = {"alertname": name, **labels}
    return Alert(fingerprint=fingerprint(lbl), labels=lbl, starts_at=T0)


class Console:
    def __init__(self, ing: Ingestor, http: httpx.AsyncClient) -> None:
        self.ing, self.http = ing, http

    async def csrf(self, path: str) -> str:
        page = (await self.http.get(path)).text
        return re.findall(r'name="csrf" value="([^"]+)"', page)[0]

    async def do(self, inc: UUID, verb: str, **form: str) -> httpx.Response:
        csrf = await self.csrf(f"/incidents/{inc}")
        return await self.http.post(f"/incidents/{inc}/do/{verb}", data={"csrf": csrf, **form})


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    settings = Settings(store=f"sqlite:///{tmp_path / 'e.db'}")
    async with in_process(settings, T0, health=dict) as (app, ing):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://wk") as http:
            yield Console(ing, http)


async def test_an_incident_is_worked_from_its_page(console: Console) -> None:
    await console.ing.submit([ReceiveAlert(_alert("DiskFull", instance="db1"))])
    inc = next(iter(console.ing.world.incidents))
    page = (await console.http.get(f"/incidents/{inc}")).text
    for verb in ("ack", "resolve", "take", "note", "assign", "snooze", "silence", "severity"):
        assert f'action="/incidents/{inc}/do/{verb}"' in page, verb
    assert '<script src="/console.js" defer></script>' in page
    for verb, form in (
        ("ack", {}),
        ("note", {"text": "cleaning up"}),
        ("assign", {"assignee": "bob"}),
        ("snooze", {"for": "45m"}),
        ("severity", {"severity": "critical"}),
        ("silence", {"for": "2h", "comment": "known"}),
    ):
        r = await console.do(inc, verb, **form)
        assert (r.status_code, r.headers["location"]) == (303, f"/incidents/{inc}"), verb
    state = console.ing.world.incidents[inc]
    assert (state.state, state.acknowledged_by, state.assignee, state.notes) == (
        "acknowledged",
        "local",
        "bob",
        1,
    )
    assert state.snoozed_until == T0 + timedelta(minutes=45)
    assert state.severity == "critical"
    [silence] = console.ing.world.silences.values()
    assert [str(m) for m in silence.matchers] == ['alertname="DiskFull"']
    assert silence.ends_at - silence.starts_at == timedelta(hours=2)
    page = (await console.http.get(f"/incidents/{inc}")).text
    assert "Note by local via console" in page
    assert "cleaning up" in page
    assert 'owner <span id="incident-owner">bob</span>' in page
    # A refusal comes back as a flash on the page, not an error page.
    r = await console.do(inc, "ack")
    assert r.status_code == 303
    page = (await console.http.get(f"/incidents/{inc}")).text
    assert "incident already acknowledged by local" in page


async def test_forms_without_the_csrf_token_are_refused(console: Console) -> None:
    await console.ing.submit([ReceiveAlert(_alert("DiskFull"))])
    inc = next(iter(console.ing.world.incidents))
    await console.http.get("/")  # a local session
    r = await console.http.post(f"/incidents/{inc}/do/ack", data={"csrf": "guess"})
    assert r.status_code == 403
    assert console.ing.world.incidents[inc].state == "open"


def _rows(world: World) -> list[dict[str, Any]]:
    return [{"inc": i} for i in sorted(world.incidents.values(), key=lambda i: i.title)]


@pytest.mark.parametrize(
    ("params", "titles", "problem"),
    [
        ({}, ["A", "B", "C"], ""),
        ({"severity": "critical"}, ["A"], ""),
        ({"match": 'instance=~"web.*"'}, ["A", "B"], ""),
        ({"match": 'instance=~"web.*", severity="warning"'}, ["B"], ""),
        ({"q": "c"}, ["C"], ""),
        ({"state": "acknowledged"}, [], ""),
        ({"match": "instance=~("}, ["A", "B", "C"], "label matcher"),
    ],
)
def test_filters(params: dict[str, str], titles: list[str], problem: str) -> None:
    w = World()
    decide(w, ReceiveAlert(_alert("A", instance="web1", severity="critical")), T0)
    decide(w, ReceiveAlert(_alert("B", instance="web2", severity="warning")), T0)
    decide(w, ReceiveAlert(_alert("C", instance="db1", severity="warning")), T0)
    listing = select_rows(_rows(w), w, params)
    assert [r["inc"].title for r in listing.rows] == titles
    assert problem in listing.problem


def test_pages_keep_the_filters() -> None:
    w = World()
    for n in range(PAGE_SIZE + 3):
        decide(w, ReceiveAlert(_alert(f"X{n:03d}", severity="warning")), T0)
    listing = select_rows(_rows(w), w, {"severity": "warning", "page": "1"})
    assert (listing.total, listing.page, listing.pages, len(listing.rows), listing.more) == (
        PAGE_SIZE + 3,
        1,
        2,
        3,
        False,
    )
    assert listing.link(0) == "/?severity=warning&page=0"
    assert select_rows(_rows(w), w, {"page": "nonsense"}).page == 0
    assert select_rows(_rows(w), w, {"page": "99"}).page == 1
    assert select_rows(_rows(w), w, {}, size=10).pages == 3


async def test_the_outcomes_page_plots_from_the_log(console: Console) -> None:
    from daemon.domain import Acknowledge

    await console.ing.submit([ReceiveAlert(_alert("DiskFull", service="<b>db</b>"))])
    inc = next(iter(console.ing.world.incidents))
    await console.ing.submit([Acknowledge(inc, "alice")])
    page = (await console.http.get("/stats?by=service&since=1d")).text
    assert page.count("<svg") == 3
    assert "Time to acknowledge (p50 dark, p90 light)" in page
    # Label values are data: escaped in the table and in the plot.
    assert "<b>db</b>" not in page
    assert "&lt;b&gt;db&lt;/b&gt;" in page
    assert '<rect class="p50"' in page
    bad = (await console.http.get("/stats?since=soon")).text
    assert "neither a duration" in bad


def test_the_timeline_groups_runs_of_agent_steps_and_actions() -> None:
    from daemon.web.console_work import group_rows
    from daemon.web.timeline import Row

    def r(stream: str, text: str) -> Row:
        return Row(at=T0, stream=stream, kind="X", text=text)

    rows = [
        r("incident", "Incident opened"),
        r("investigation disk #1", "Tool a [ok]"),
        r("investigation disk #1", "Investigation concluded"),
        r("action rotate", "Policy (review): needs approval"),
        r("incident", "Acknowledged by alice"),
        r("action rotate", "Action succeeded"),
    ]
    groups = group_rows(rows)
    assert [(g.stream, len(g.rows), g.collapsible, g.open) for g in groups] == [
        ("incident", 1, False, False),
        ("investigation disk #1", 2, True, False),
        ("action rotate", 1, True, True),
        ("incident", 1, False, False),
        ("action rotate", 1, True, True),
    ]
    assert groups[1].summary == (
        "investigation disk #1: 2 step(s), Tool a [ok] … Investigation concluded"
    )


async def test_a_console_silence_is_capped_at_limits_max_silence(console: Console) -> None:
    # The API refused a 400-day silence; the console's form gave one (issue 17, #8).
    await console.ing.submit([ReceiveAlert(_alert("DiskFull", instance="db1"))])
    inc = next(iter(console.ing.world.incidents))
    r = await console.do(inc, "silence", **{"for": "400d"})
    assert r.status_code == 303
    assert console.ing.world.silences == {}
    page = (await console.http.get(f"/incidents/{inc}")).text
    assert "longer than limits.max_silence (30d)" in page
    r = await console.do(inc, "silence", **{"for": "30d"})
    [silence] = console.ing.world.silences.values()
    assert silence.ends_at - silence.starts_at == timedelta(days=30)
