"""Situations and shadow runbooks in the console, in a real browser (Playwright driving
Debian's Chromium) against a watchkeeper process.

A responder links three incidents into one situation from an incident's page and unlinks
one; a viewer sees the situation but no forms, and a form post without the CSRF token or
from a viewer changes nothing. An approver opens the shadow runbooks page, sees the
candidate's proposal next to what people approved and what ran, and promotes it: a
RunbookPromoted event with their name and reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import realstack
from browserkit import ARGS, CHROMIUM, login, needs_chromium

pytestmark = [pytest.mark.integration, needs_chromium]
APPROVER, RESPONDER, VIEWER = "tok-alice-approver", "tok-rita-responder", "tok-vic-viewer"

RUNBOOK = """---
id: app-errors
version: {version}
title: Application errors
match:
  - alertname="AppBroken"
tools: [alert_context]
diagnostics:
  - id: ctx
    tool: alert_context
actions:
  - id: restart_app
    kind: shell
    title: Restart the application
    argv: ["{script}", "{{params.service}}"]
    risk: medium
    params:
      type: object
      properties:
        service: {{type: string, pattern: '^[a-z]+$'}}
      required: [service]
      additionalProperties: false
default_action:
  action: restart_app
  params:
    service: "{{labels.service}}"
  when:
    all: ["ctx.firing > 0"]
  rationale: {rationale}
evidence_max_age: 10m
---
# Application errors
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[realstack.Watchkeeper]:
    script = tmp_path / "restart-app"
    script.write_text('#!/bin/sh\necho "restarted $1"\n')
    script.chmod(0o755)
    active, shadow = tmp_path / "runbooks", tmp_path / "shadow"
    for d, version, why in ((active, 1, "errors; restart it."), (shadow, 2, "v2 restarts too.")):
        d.mkdir()
        text = RUNBOOK.format(version=version, script=script, rationale=why)
        (d / "app-errors.md").write_text(text)
    wk = realstack.Watchkeeper(
        tmp_path / "wk",
        f"sqlite:///{tmp_path}/wk/events.db",
        settings={
            "auth": {
                "tokens": [
                    {"name": "alice", "role": "approver", "token": APPROVER},
                    {"name": "rita", "role": "responder", "token": RESPONDER},
                    {"name": "vic", "role": "viewer", "token": VIEWER},
                ]
            },
            "agent": {
                "runbooks_dir": str(active),
                "shadow_runbooks_dir": str(shadow),
                "default_runbook": None,
            },
            "actions": {"shell": {"allow": [str(script)]}},
        },
    )
    wk.start()
    try:
        yield wk
    finally:
        wk.stop()


def api(wk: realstack.Watchkeeper, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(
        method, f"{wk.url}{path}", headers={"Authorization": f"Bearer {APPROVER}"}, timeout=10, **kw
    )
    r.raise_for_status()
    return r.json()


def test_link_and_unlink_incidents_by_hand_in_the_browser(
    daemon: realstack.Watchkeeper, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    wk = daemon
    names = ("SwitchDown", "ApiSlow", "DbTimeouts")
    alerts = [{"labels": {"alertname": n, "severity": "warning"}} for n in names]
    assert httpx.post(f"{wk.url}/api/v2/alerts", json=alerts, timeout=10).status_code == 200

    def incidents() -> dict[str, str] | None:
        items = api(wk, "GET", "/api/v1/incidents")["incidents"]
        got = {i["title"]: i["id"] for i in items}
        return got if set(names) <= set(got) else None

    ids = realstack.wait_for(incidents, timeout=30, what="three incidents")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = login(browser, wk.url, RESPONDER)
            page.goto(f"{wk.url}/incidents/{ids['SwitchDown']}")
            assert page.locator("#situation").count() == 0
            # Name the others by id and by a pasted console URL.
            page.click("#link-incidents summary")
            form = page.locator("form.situation-link")
            form.locator("textarea[name=incident_ids]").fill(
                f"{ids['ApiSlow']}\n{wk.url}/incidents/{ids['DbTimeouts']}"
            )
            form.locator("input[name=reason]").fill("all behind switch sw1")
            form.locator("button[type=submit]").click()
            expect(page.locator(".flash.ok")).to_contain_text("linked 3 incident(s) by hand")
            expect(page.locator("#situation")).to_contain_text("3 incidents linked")
            members = page.locator("#situation-members")
            for n in names:
                expect(members).to_contain_text(n)
            expect(members).to_contain_text("by hand by rita: all behind switch sw1")
            [sit] = api(wk, "GET", "/api/v1/situations")["situations"]
            lead = sit["lead_incident_id"]
            expect(members.locator(f"#member-{lead} strong")).to_have_text("lead")
            # The oldest incident leads; unlink one that does not, so the situation stays.
            gone = next(i for n, i in ids.items() if i != lead and n != "SwitchDown")
            stays = next(i for i in ids.values() if i not in (lead, gone))

            # A bad id is refused with the reason, and nothing changes.
            page.click("#link-incidents summary")
            page.locator("form.situation-link textarea[name=incident_ids]").fill("not-an-id")
            page.locator("form.situation-link button[type=submit]").click()
            refused = page.locator(".flash.error")
            expect(refused).to_contain_text("'not-an-id' is not an incident id")

            member = page.locator(f"#member-{gone}")
            member.locator("input[name=reason]").fill("its own cause: a slow query")
            member.locator("button[type=submit]").click()
            expect(page.locator(".flash.ok")).to_contain_text("unlinked from the situation")
            expect(page.locator("#situation")).to_contain_text("2 incidents linked")
            assert page.locator(f"#member-{gone}").count() == 0
            timeline = page.locator("table.timeline")
            expect(timeline).to_contain_text(f"Incident {gone} unlinked by rita")
            expect(timeline).to_contain_text("its own cause: a slow query")
            page.screenshot(path=str(tmp_path / "situation.png"), full_page=True)

            # The same session, but a form that did not come from the console: refused.
            cookies = {c["name"]: c["value"] for c in page.context.cookies()}
            forged = httpx.post(
                f"{wk.url}/situations/{sit['id']}/unlink",
                data={"incident_id": stays},
                cookies=cookies,
                timeout=10,
            )
            assert forged.status_code == 403
            assert "CSRF" in forged.text

            # A viewer sees the situation but gets no forms; a post with its own CSRF token
            # is refused by role.
            viewer = login(browser, wk.url, VIEWER)
            viewer.goto(f"{wk.url}/incidents/{lead}")
            expect(viewer.locator("#situation")).to_contain_text("this incident leads")
            assert viewer.locator("form.situation-unlink, form.situation-link").count() == 0
            csrf = viewer.locator("input[name=csrf]").first.get_attribute("value")
            vcookies = {c["name"]: c["value"] for c in viewer.context.cookies()}
            r = httpx.post(
                f"{wk.url}/situations/{sit['id']}/unlink",
                data={"csrf": csrf, "incident_id": stays, "next": "/"},
                cookies=vcookies,
                timeout=10,
            )
            assert r.status_code == 303
            viewer.goto(f"{wk.url}/")
            expect(viewer.locator(".flash.error")).to_contain_text(
                "vic has role viewer; this needs responder or higher"
            )
        finally:
            browser.close()
    after = api(wk, "GET", f"/api/v1/situations/{sit['id']}")
    assert {m["incident_id"] for m in after["members"]} == {lead, stays}
    assert all(m["by"] == "rita" for m in after["members"])


def test_compare_a_shadow_runbook_and_promote_it_in_the_browser(
    daemon: realstack.Watchkeeper, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    wk = daemon
    alert = [{"labels": {"alertname": "AppBroken", "service": "web", "severity": "critical"}}]
    assert httpx.post(f"{wk.url}/api/v2/alerts", json=alert, timeout=10).status_code == 200

    def pending() -> dict[str, Any] | None:
        acts = api(wk, "GET", "/api/v1/actions?status=pending_approval")["actions"]
        return acts[0] if acts else None

    action = realstack.wait_for(pending, timeout=60, what="a pending approval")

    def shadow_done() -> list[Any] | None:
        runs = api(wk, "GET", "/api/v1/runbooks/shadow")["runs"]
        return runs if runs and runs[0]["shadow_status"] == "concluded" else None

    realstack.wait_for(shadow_done, timeout=60, what="the shadow run to conclude")
    api(wk, "POST", f"/api/v1/actions/{action['id']}/approve", json={"comment": "go"})

    def ran() -> dict[str, Any] | None:
        a = api(wk, "GET", f"/api/v1/actions/{action['id']}")
        return a if a["status"] in ("succeeded", "verified", "failed") else None

    assert realstack.wait_for(ran, timeout=60, what="the action to run")["status"] == "succeeded"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = login(browser, wk.url, APPROVER)
            page.click("header nav a[href='/runbooks']")
            page.wait_for_url(f"{wk.url}/runbooks")
            card = page.locator("#runbook-app-errors")
            expect(card.locator("h2")).to_have_text("app-errors: shadow v2 next to active v1")
            expect(card.locator(".tally")).to_contain_text(
                "agreed with what people approved in 1 of 1"
            )
            row = page.locator("table.shadow tbody tr")
            expect(row.locator(".shadow-proposals")).to_have_text("restart_app {'service': 'web'}")
            expect(row.locator(".active-proposals")).to_have_text("restart_app {'service': 'web'}")
            expect(row.locator(".outcomes")).to_have_text("restart_app: succeeded, approved")
            expect(row.locator(".agree-yes")).to_have_text("yes")

            # A reason is required: the browser will not send the form without one.
            form = card.locator("form.promote")
            form.locator("button[type=submit]").click()
            assert page.locator(".flash").count() == 0
            form.locator("input[name=reason]").fill("agreed with people; same restart")
            form.locator("button[type=submit]").click()
            expect(page.locator(".flash.ok")).to_contain_text(
                "promoted app-errors v2: recorded as your decision"
            )
            expect(card.locator(".promoted")).to_have_text("Promoted: v2")
            expect(card.locator("ul.promotions")).to_contain_text(
                "v2 (was v1) promoted by alice: agreed with people; same restart"
            )
            assert card.locator("form.promote").count() == 0  # nothing left to promote
            page.screenshot(path=str(tmp_path / "runbooks.png"), full_page=True)

            # A viewer sees the comparison but cannot promote.
            viewer = login(browser, wk.url, VIEWER)
            viewer.goto(f"{wk.url}/runbooks")
            expect(viewer.locator("#runbook-app-errors")).to_contain_text("cannot promote")
            assert viewer.locator("form.promote").count() == 0
        finally:
            browser.close()
    shadow = api(wk, "GET", "/api/v1/runbooks/shadow")
    assert shadow["promoted"] == {"app-errors": "2"}
    events = api(wk, "GET", "/api/v1/events", params={"limit": 1000})
    [promoted] = [e["data"] for e in events["events"] if e["type"] == "RunbookPromoted"]
    decided = (promoted["by"], promoted["version"], promoted["previous_version"])
    assert decided == ("alice", "2", "1")
    assert promoted["reason"] == "agreed with people; same restart"
