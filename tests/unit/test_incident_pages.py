"""One incident's pages are bounded (issue 17, High #3): an incident may hold
`limits.max_alerts_per_incident` alerts (10,000 by default), and its detail, story, export
and console page once held every alert and every alert event (211 MB and a peak past
MemoryMax, bench/restart_memory.py --one-incident). Each now shows `page_size` alerts with
their count and a cursor to the rest, and the newest `page_size` alert events."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from test_api import Daemon, running

from daemon.engine.store import EventLog

PAGE = 10
MANY = 35


async def one_big_incident(d: Daemon) -> str:
    r = await d.post_alerts(
        *({"labels": {"alertname": "Flood", "n": f"{i:03d}"}} for i in range(MANY))
    )
    assert r.status_code == 200, r.text
    [inc] = await d.incidents()
    return str(inc["id"])


def alert_events(rows: list[dict[str, Any]], key: str) -> int:
    return sum(1 for r in rows if r[key] in ("AlertFired", "AlertUpdated", "AlertResolved"))


async def test_the_detail_holds_a_page_of_alerts_and_pages_through_every_one(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, {"limits": {"page_size": PAGE}}) as d:
        iid = await one_big_incident(d)
        r = await d.http.get(f"/api/v1/incidents/{iid}")
        assert r.status_code == 200, r.text
        view = r.json()
        assert len(view["alerts"]) == PAGE
        assert view["alerts_count"] == MANY
        assert view["alerts_next"]
        assert view["alerts_total"] == MANY  # the incident's own figure is kept
        # The timeline keeps every incident event but only the newest alert events.
        assert alert_events(view["timeline"], "type") == PAGE
        assert next(e["type"] for e in view["timeline"]) == "IncidentOpened"
        assert view["alert_events_left_out"] == MANY - PAGE
        assert alert_events(view["story"], "kind") <= PAGE

        seen: list[str] = []
        cursor = ""
        for _ in range(MANY):
            r = await d.http.get(
                f"/api/v1/incidents/{iid}/alerts", params={"limit": 8, "cursor": cursor}
            )
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["alerts"]) <= 8
            assert page["total"] == MANY
            seen += [a["labels"]["n"] for a in page["alerts"]]
            cursor = page["next"]
            if not cursor:
                break
        assert sorted(seen) == [f"{i:03d}" for i in range(MANY)]  # each once
        # The detail's first page is the first page of /alerts.
        first = (await d.http.get(f"/api/v1/incidents/{iid}/alerts")).json()
        assert [a["fingerprint"] for a in first["alerts"]] == [
            a["fingerprint"] for a in view["alerts"]
        ]
        assert first["next"] == view["alerts_next"]
        for bad in (0, 1001):  # a page of 1000 alerts of 8 KiB at most
            r = await d.http.get(f"/api/v1/incidents/{iid}/alerts", params={"limit": bad})
            assert r.status_code == 422


async def test_story_and_export_are_bounded_and_say_what_they_left_out(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, {"limits": {"page_size": PAGE}}) as d:
        iid = await one_big_incident(d)
        r = await d.http.post(f"/api/v1/incidents/{iid}/ack", json={"comment": "mine"})
        assert r.status_code == 200, r.text
        assert len(r.json()["alerts"]) == PAGE
        story = (await d.http.get(f"/api/v1/incidents/{iid}/story")).json()
        assert len(story["alerts"]) == PAGE
        assert story["alerts_count"] == MANY
        assert story["alert_events_left_out"] == MANY - PAGE
        assert alert_events(story["story"], "kind") == PAGE
        # The figures still come from the whole stream's incident events.
        assert story["figures"]["opened_at"] is not None
        assert story["figures"]["time_to_acknowledge"] is not None
        md = (await d.http.get(f"/api/v1/incidents/{iid}/export")).text
        assert f"{PAGE} of {MANY} alerts listed" in md
        assert f"{MANY - PAGE} older alert events left out" in md


async def test_the_console_page_shows_a_page_of_alerts_with_a_next_link(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, {"limits": {"page_size": PAGE}}) as d:
        iid = await one_big_incident(d)
        seen: list[str] = []
        url: str | None = f"/incidents/{iid}"
        pages = 0
        while url and pages < MANY:
            html = (await d.http.get(url)).text
            pages += 1
            found = re.findall(r"&#34;n&#34;: &#34;(\d+)&#34;|\"n\": \"(\d+)\"", html)
            seen += [a or b for a, b in found]
            if pages == 1:
                assert f"{PAGE} of {MANY} alerts" in html
                assert f"{MANY - PAGE} older alert events left out" in html
            nxt = re.search(r'href="(/incidents/[^"?]+\?after=[^"]+)" rel="next"', html)
            url = nxt[1] if nxt else None
        assert pages == 4
        assert sorted(seen) == [f"{i:03d}" for i in range(MANY)]


async def test_an_incident_no_longer_held_is_rebuilt_from_its_stream_in_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path, {"limits": {"page_size": PAGE}}) as d:
        iid = await one_big_incident(d)
        r = await d.http.post(f"/api/v1/incidents/{iid}/resolve", json={"comment": "done"})
        assert r.status_code == 200, r.text
        d.clock.advance(timedelta(days=2))
        await d.tick()
        ing = d.supervisor.ingestor
        assert ing is not None
        assert UUID(iid) in ing.world.closed
        del ing.world.closed[UUID(iid)]  # as when more than closed_kept have closed since
        pages: list[int] = []
        real = EventLog.stream_pages

        def counted(self: EventLog, originator_id: UUID, page: int = 256) -> Any:
            for events in real(self, originator_id, page=4):
                pages.append(len(events))
                yield events

        monkeypatch.setattr(EventLog, "stream_pages", counted)
        view = (await d.http.get(f"/api/v1/incidents/{iid}")).json()
        assert view["state"] == "closed"
        assert view["alerts_total"] == MANY
        assert max(pages) <= 4  # folded a page at a time
        assert sum(pages) > MANY
        assert alert_events(view["timeline"], "type") == PAGE
        r = await d.http.get(f"/api/v1/incidents/{uuid4()}")
        assert r.status_code == 404
