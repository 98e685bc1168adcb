"""Every list is paged (issue 17, High #3): silences, actions, situations and inhibited
alerts page as `GET /api/v1/incidents` does (`limit`, default `limits.page_size`, and
`cursor`, the previous page's `next`), in the API and the CLI."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_api import Daemon, running
from typer.testing import CliRunner

from daemon.cli.main import app as cli
from daemon.domain import Rejected
from daemon.web.paging import page_of

PAGE = 3


async def every(d: Daemon, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged list, asserting each page is at most its size."""
    found: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(100):
        r = await d.http.get(path, params={**params, "cursor": cursor})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page[key]) <= params.get("limit", PAGE)
        found += page[key]
        cursor = page["next"]
        if not cursor:
            return found
    raise AssertionError("no last page")


def run_cli(d: Daemon, *args: str, as_json: bool = True) -> Any:
    res = CliRunner().invoke(
        cli, ["--url", str(d.http.base_url), *(["--json"] if as_json else []), *args]
    )
    assert res.exit_code == 0, res.output
    return json.loads(res.output) if as_json else " ".join(res.output.split())


def test_page_of_pages_newest_first_each_item_once_and_refuses_a_bad_cursor() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    items = [(t + timedelta(minutes=i % 3), f"id{i}") for i in range(10)]  # ties on time
    seen: list[tuple[datetime, str]] = []
    cursor = ""
    while True:
        page, nxt = page_of(items, lambda x: x, cursor, 4)
        assert len(page) <= 4
        seen += page
        if nxt is None:
            break
        cursor = nxt
    assert seen == sorted(items, reverse=True)
    for bad in ("nonsense", "2026-01-01T00:00:00|", "|id3"):
        with pytest.raises(Rejected) as e:
            page_of(items, lambda x: x, bad, 4)
        assert e.value.status == 400


async def test_silences_page_in_the_api_and_the_cli(tmp_path: Path) -> None:
    async with running(tmp_path, {"limits": {"page_size": PAGE}}) as d:
        made = []
        for i in range(7):
            d.clock.advance(timedelta(seconds=1))
            r = await d.http.post(
                "/api/v1/silences", json={"matchers": [f'alertname="S{i}"'], "duration": "1h"}
            )
            assert r.status_code == 200, r.text
            made.append(r.json()["silenceID"])
        first = (await d.http.get("/api/v1/silences")).json()
        assert len(first["silences"]) == PAGE
        assert first["next"]
        listed = await every(d, "/api/v1/silences", "silences")
        assert [s["id"] for s in listed] == made[::-1]  # newest first, each once
        listed = await every(d, "/api/v1/silences", "silences", limit=5)
        assert len(listed) == 7
        r = await d.http.get("/api/v1/silences", params={"cursor": "not a cursor"})
        assert r.status_code == 400
        args = ("silence", "list", "--limit", "2")
        table = await asyncio.to_thread(run_cli, d, *args, as_json=False)
        assert "2 silence(s); next page: --cursor" in table
        page = await asyncio.to_thread(run_cli, d, "silence", "list", "--limit", "2")
        assert len(page["silences"]) == 2
        # A prefix is found past the first page.
        out = await asyncio.to_thread(run_cli, d, "silence", "expire", made[0][:8], as_json=False)
        assert f"silence {made[0]} expired" in out


async def test_situations_and_inhibited_alerts_page(tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "limits": {"page_size": PAGE},
        "grouping": {"group_by": ["alertname", "instance"]},
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="NodeDown"'],
                "target_matchers": ['alertname="ExporterDown"'],
                "equal": ["instance"],
            }
        ],
    }
    async with running(tmp_path, settings) as d:
        hosts = [f"n{i}" for i in range(5)]
        r = await d.post_alerts(
            *({"labels": {"alertname": "NodeDown", "instance": h}} for h in hosts)
        )
        assert r.status_code == 200, r.text
        r = await d.post_alerts(
            *({"labels": {"alertname": "ExporterDown", "instance": h}} for h in hosts)
        )
        assert r.status_code == 200, r.text
        inhibited = await every(d, "/api/v1/inhibited", "inhibited")
        assert sorted(a["labels"]["instance"] for a in inhibited) == hosts
        table = await asyncio.to_thread(run_cli, d, "situations", "inhibited", as_json=False)
        assert f"{PAGE} inhibited alert(s); next page: --cursor" in table

        for i in range(4):
            r = await d.post_alerts(*({"labels": {"alertname": f"L{i}{x}"}} for x in "ab"))
            assert r.status_code == 200, r.text
        ids = {i["title"]: i["id"] for i in await every(d, "/api/v1/incidents", "incidents")}
        made = []
        for i in range(4):
            d.clock.advance(timedelta(seconds=1))
            r = await d.http.post(
                "/api/v1/situations", json={"incident_ids": [ids[f"L{i}a"], ids[f"L{i}b"]]}
            )
            assert r.status_code == 200, r.text
            made.append(r.json()["id"])
        listed = await every(d, "/api/v1/situations", "situations")
        assert [s["id"] for s in listed] == made[::-1]
        page = await asyncio.to_thread(run_cli, d, "situations", "list", "--limit", "3")
        assert len(page["situations"]) == 3
        nxt = await asyncio.to_thread(
            run_cli, d, "situations", "list", "--limit", "3", "--cursor", page["next"]
        )
        assert [s["id"] for s in nxt["situations"]] == [made[0]]
        assert nxt["next"] is None


async def test_actions_list_pages(tmp_path: Path) -> None:
    async with running(tmp_path, {"limits": {"page_size": PAGE}}) as d:
        r = await d.http.get("/api/v1/actions")
        assert r.status_code == 200, r.text
        assert r.json()["actions"] == []
        assert r.json()["next"] is None
        r = await d.http.get("/api/v1/actions", params={"limit": 0})
        assert r.status_code == 422
        r = await d.http.get("/api/v1/actions", params={"cursor": "x"})
        assert r.status_code == 400
        args = ("actions", "list", "--limit", "2")
        table = await asyncio.to_thread(run_cli, d, *args, as_json=False)
        assert "0 action(s)" in table
