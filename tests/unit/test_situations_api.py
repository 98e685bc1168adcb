"""Situations and inhibition over real HTTP (daemon in-process), and the CLI against it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from chatstubs import ChatStub
from test_api import Daemon, read_log, running
from typer.testing import CliRunner

from daemon.cli.main import app as cli

SETTINGS: dict[str, Any] = {
    "grouping": {"group_by": ["alertname", "instance"]},
    "situations": {"correlate": True, "window": "5m"},
    "inhibit_rules": [
        {
            "source_matchers": ['alertname="NodeDown"'],
            "target_matchers": ['alertname="NodeExporterDown"'],
            "equal": ["instance"],
        }
    ],
}


def alert(name: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, **labels}}


async def ids_by_title(d: Daemon) -> dict[str, str]:
    return {i["title"]: i["id"] for i in await d.incidents()}


async def situations(d: Daemon) -> list[dict[str, Any]]:
    r = await d.http.get("/api/v1/situations")
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["situations"]
    return found


async def test_storm_on_one_host_is_one_situation_and_inhibited_alerts_are_visible(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, SETTINGS) as d:
        r = await d.post_alerts(
            alert("NodeDown", instance="node1:9100"),
            alert("NodeExporterDown", instance="node1:9100"),
            alert("ApiDown", instance="node1:8080"),
            alert("DiskFull", instance="node1:9100"),
            alert("Other", instance="node2:9100"),
        )
        assert r.status_code == 200
        titles = await ids_by_title(d)
        assert set(titles) == {"NodeDown", "ApiDown", "DiskFull", "Other"}
        (s,) = await situations(d)
        assert s["lead_incident_id"] == titles["NodeDown"]
        members = {m["title"]: m for m in s["members"]}
        assert set(members) == {"NodeDown", "ApiDown", "DiskFull"}
        assert members["ApiDown"]["rule"] == "same host"
        # The console shows the situation on a member's page, with its lead.
        page = await d.http.get(f"/incidents/{titles['ApiDown']}")
        assert page.status_code == 200
        assert "its lead investigates and pages for all of them" in page.text
        assert "Situation opened (same host)" in page.text  # the situation's timeline
        assert f'href="/incidents/{titles["NodeDown"]}">NodeDown</a>' in page.text
        page = await d.http.get(f"/incidents/{titles['Other']}")
        assert 'id="situation"' not in page.text
        r = await d.http.get("/api/v1/inhibited")
        (inh,) = r.json()["inhibited"]
        assert inh["labels"]["alertname"] == "NodeExporterDown"
        assert inh["inhibited_by_labels"]["alertname"] == "NodeDown"
        # The source resolves: the inhibited alert opens its incident.
        ended = {"startsAt": "2026-11-28T23:00:00Z", "endsAt": "2026-11-28T23:27:00Z"}
        r = await d.post_alerts({**alert("NodeDown", instance="node1:9100"), **ended})
        assert r.status_code == 200, r.text
        assert "NodeExporterDown" in await ids_by_title(d)
        assert (await d.http.get("/api/v1/inhibited")).json()["inhibited"] == []
    names = [type(e).__name__ for e in await asyncio.to_thread(read_log, d.store)]
    assert names.count("AlertInhibited") == 1
    assert names.count("SituationOpened") == 1


async def test_link_and_unlink_by_hand_over_http_and_cli(tmp_path: Path) -> None:
    async with running(tmp_path, {"grouping": {"group_by": ["alertname"]}}) as d:
        await d.post_alerts(alert("A", instance="h1"), alert("B", instance="h2"))
        await d.post_alerts(alert("C", instance="h3"))
        ids = await ids_by_title(d)
        r = await d.http.post(
            "/api/v1/situations", json={"incident_ids": [ids["A"], ids["B"]], "reason": "rack 4"}
        )
        assert r.status_code == 200, r.text
        s = r.json()
        assert {m["title"]: m["reason"] for m in s["members"]} == {"A": "rack 4", "B": "rack 4"}
        assert all(m["by"] == "local" for m in s["members"])
        # Refusals say why.
        r = await d.http.post("/api/v1/situations", json={"incident_ids": [ids["A"], ids["C"]]})
        assert r.status_code == 409
        assert "already in situation" in r.json()["error"]
        r = await d.http.post("/api/v1/situations", json={"incident_ids": []})
        assert r.status_code == 422
        r = await d.http.post(
            f"/api/v1/situations/{s['id']}/unlink",
            json={"incident_id": "00000000-0000-0000-0000-000000000000"},
        )
        assert r.status_code == 404
        # The CLI links C in, then unlinks A (the lead passes to B).
        url = str(d.http.base_url)

        def run(*args: str) -> Any:
            res = CliRunner().invoke(cli, ["--url", url, "--json", *args])
            assert res.exit_code == 0, res.output
            return json.loads(res.output)

        got = await asyncio.to_thread(run, "situations", "link", ids["C"], "--into", s["id"])
        assert len(got["members"]) == 3
        got = await asyncio.to_thread(
            run, "situations", "unlink", s["id"], ids["A"], "-r", "own cause"
        )
        assert got["lead_incident_id"] == ids["B"]
        assert {m["title"] for m in got["members"]} == {"B", "C"}
        listed = await asyncio.to_thread(run, "situations", "list")
        assert [x["id"] for x in listed["situations"]] == [s["id"]]


async def test_one_page_per_situation_and_members_told_in_the_leads_thread(
    tmp_path: Path,
) -> None:
    with ChatStub() as stub:
        settings = {
            "grouping": {"group_by": ["alertname", "instance"]},
            "situations": {"correlate": True},
            "notifications": {
                "channels": {"pager": {"type": "webhook", "url": stub.url(stub.WEBHOOK)}},
                "policies": [{"name": "oncall", "levels": [{"channels": ["pager"]}]}],
            },
        }
        async with running(tmp_path, settings) as d:
            await d.post_alerts(alert("NodeDown", instance="node1:9100"))
            # The lead's page goes out before the members arrive.
            await asyncio.to_thread(stub.wait, stub.WEBHOOK, 1)
            await d.post_alerts(
                alert("ApiDown", instance="node1:8080"), alert("DiskFull", instance="node1:9100")
            )
            got = await asyncio.to_thread(stub.wait, stub.WEBHOOK, 3)
            await asyncio.sleep(0.5)  # anything more would arrive now
            bodies = [r.body for r in stub.at(stub.WEBHOOK)]
            assert stub.problems() == []
            events = [b["event"] for b in bodies]
            assert events.count("incident_opened") == 1
            # Members joining are told in the lead's thread; an update that would show
            # nothing new (both joined in one batch) is skipped as an identical edit.
            assert events.count("situation_changed") >= 1
            titles = {b["incident"]["title"] for b in bodies}
            assert titles == {"NodeDown"}  # every message is about the lead
            told = next(b for b in bodies if b["event"] == "situation_changed")
            assert "joined this situation (same host: host=node1" in told["note"]
            assert len(told["situation"]["members"]) == 3
            assert "ApiDown" in told["situation"]["text"]
            assert "DiskFull" in told["situation"]["text"]
            assert len(got) >= 3
            # Unlinked by hand, a member pages on its own; the lead's thread hears it left.
            (sit,) = await situations(d)
            api = next(m for m in sit["members"] if m["title"] == "ApiDown")
            r = await d.http.post(
                f"/api/v1/situations/{sit['id']}/unlink",
                json={"incident_id": api["incident_id"], "reason": "its own cause"},
            )
            assert r.status_code == 200, r.text

            def opened() -> list[str]:
                return [
                    b["incident"]["title"]
                    for b in (r.body for r in stub.at(stub.WEBHOOK))
                    if b["event"] == "incident_opened"
                ]

            for _ in range(100):
                if "ApiDown" in opened():
                    break
                await asyncio.sleep(0.05)
            assert sorted(opened()) == ["ApiDown", "NodeDown"]
            left = [
                b["note"] for b in (r.body for r in stub.at(stub.WEBHOOK)) if "left" in b["note"]
            ]
            assert left == ["ApiDown left this situation (its own cause)"]
            assert stub.problems() == []


def situation_fact(message: dict[str, Any]) -> str:
    """The "Situation" field of a Slack message as it stands ("" when it has none)."""
    for block in message["blocks"]:
        for field in block.get("fields", []):
            if field["text"].startswith("*Situation*"):
                return str(field["text"])
    return ""


async def test_one_slack_message_per_situation_edited_as_members_join_and_leave(
    tmp_path: Path,
) -> None:
    """On a channel that can edit, the situation is one message: members joining and
    leaving edit it in place, and each member's news is a reply in its thread."""
    with ChatStub() as stub:
        settings = {
            "grouping": {"group_by": ["alertname", "instance"]},
            "situations": {"correlate": True},
            "notifications": {
                "channels": {
                    "oncall": {
                        "type": "slack",
                        "token": stub.slack_token,
                        "channel": "C0ONCALL",
                        "api_url": stub.url(stub.SLACK_API),
                    }
                },
                "policies": [{"name": "oncall", "levels": [{"channels": ["oncall"]}]}],
            },
        }

        def calls() -> list[tuple[str, dict[str, Any]]]:
            return [(r.path.rsplit("/", 1)[1], r.body) for r in stub.at(stub.SLACK_API)]

        async def until(what: str, probe: Any) -> None:
            for _ in range(200):
                if probe():
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"{what}: {calls()}")

        async with running(tmp_path, settings) as d:
            await d.post_alerts(alert("NodeDown", instance="node1:9100"))
            await until("the lead's page", calls)
            method, first = calls()[0]
            assert method == "chat.postMessage"
            assert "thread_ts" not in first
            await d.post_alerts(alert("ApiDown", instance="node1:8080"))

            def replies() -> list[str]:
                return [
                    b["text"] for m, b in calls() if m == "chat.postMessage" and "thread_ts" in b
                ]

            await until("a reply about the member", lambda: any("joined" in t for t in replies()))
            [lead_ts] = list(stub.slack_messages)[:1]  # the stub keeps messages by ts
            edits = [b for m, b in calls() if m == "chat.update"]
            assert edits
            assert all(e["ts"] == lead_ts for e in edits)
            assert "ApiDown" in situation_fact(stub.slack_messages[lead_ts])
            joined = "ApiDown joined this situation (same host: host=node1, opened within 5m"
            assert any(t.startswith(joined) for t in replies())
            tops = [b for m, b in calls() if m == "chat.postMessage" and "thread_ts" not in b]
            assert len(tops) == 1  # the member pages nobody: one message for the situation
            # While a member, every reply about it is in the lead's thread.
            assert all(b["thread_ts"] == lead_ts for _, b in calls() if "thread_ts" in b)
            # Unlinked: the lead's message is edited again and its thread hears it left (once
            # on its own, the former member may start a thread of its own).
            (sit,) = await situations(d)
            api = next(m for m in sit["members"] if m["title"] == "ApiDown")
            r = await d.http.post(
                f"/api/v1/situations/{sit['id']}/unlink",
                json={"incident_id": api["incident_id"], "reason": "its own cause"},
            )
            assert r.status_code == 200, r.text
            await until("a reply that it left", lambda: any("left" in t for t in replies()))
            note = "ApiDown left this situation (its own cause)"
            left = [b for m, b in calls() if m == "chat.postMessage" and b.get("text") == note]
            assert [b["thread_ts"] for b in left] == [lead_ts]
            assert "ApiDown" not in situation_fact(stub.slack_messages[lead_ts])
            assert stub.problems() == []
