"""The review console in a real browser (Playwright driving Debian's Chromium) against a
watchkeeper process: log in with a token, see the pending approval with the exact argv,
the rationale and the raw alert (escaped), approve with a comment, watch the action run
and its outcome appear on the incident page. A form post without the CSRF token is refused.
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
APPROVER, VIEWER = "tok-alice-approver", "tok-vic-viewer"
XSS = '<script>alert("owned")</script><img src=x onerror=alert(2)>'

RUNBOOK = """---
id: app-errors
version: 1
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
    argv: ["{script}", "{{params.service}}", "--reason=errors seen"]
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
  rationale: The application reports errors; restart it.
evidence_max_age: 10m
---
# Application errors
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[realstack.Watchkeeper, Path, Path]]:
    ran = tmp_path / "ran.txt"
    script = tmp_path / "restart-app"
    script.write_text(f'#!/bin/sh\necho "restarted $1 ($2)" >> "{ran}"\necho "restarted $1"\n')
    script.chmod(0o755)
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "app-errors.md").write_text(RUNBOOK.format(script=script))
    wk = realstack.Watchkeeper(
        tmp_path / "wk",
        f"sqlite:///{tmp_path}/wk/events.db",
        settings={
            "auth": {
                "tokens": [
                    {"name": "alice", "role": "approver", "token": APPROVER},
                    {"name": "vic", "role": "viewer", "token": VIEWER},
                ]
            },
            "agent": {"runbooks_dir": str(runbooks), "default_runbook": None},
            "actions": {"shell": {"allow": [str(script)]}},
        },
    )
    wk.start()
    try:
        yield wk, script, ran
    finally:
        wk.stop()


def api(wk: realstack.Watchkeeper, path: str) -> Any:
    r = httpx.get(f"{wk.url}{path}", headers={"Authorization": f"Bearer {APPROVER}"}, timeout=10)
    r.raise_for_status()
    return r.json()


def test_approve_in_the_browser_and_see_the_action_run(
    daemon: tuple[realstack.Watchkeeper, Path, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    wk, script, ran = daemon
    alert = [
        {
            "labels": {"alertname": "AppBroken", "service": "web", "severity": "critical"},
            "annotations": {"summary": XSS},
        }
    ]
    assert httpx.post(f"{wk.url}/api/v2/alerts", json=alert, timeout=10).status_code == 200

    def pending() -> dict[str, Any] | None:
        acts = api(wk, "/api/v1/actions?status=pending_approval")["actions"]
        return acts[0] if acts else None

    action = realstack.wait_for(pending, timeout=60, what="a pending approval")
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                *ARGS,
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            context = browser.new_context()
            page = context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.set_default_timeout(30_000)

            page.goto(f"{wk.url}/approvals")
            assert "/login" in page.url  # no session: the console asks for a token
            page.fill("input[name=token]", "wrong")
            page.click("button[type=submit]")
            expect(page.locator(".flash.error")).to_contain_text("unknown bearer token")
            page.fill("input[name=token]", APPROVER)
            page.click("button[type=submit]")
            page.wait_for_url(f"{wk.url}/approvals")

            card = page.locator(f"#action-{action['id']}")
            expect(card.locator("ol.argv li code")).to_have_text(
                [str(script), "web", "--reason=errors seen"]
            )
            expect(card.locator("pre.rationale")).to_contain_text("restart it.")
            expect(card.locator("pre.rationale")).to_contain_text("✓ ctx.firing > 0 (got 1)")
            expect(card.locator(".evidence")).to_contain_text("alert_context observed")
            # The raw alert is shown as text: the markup in it is not markup here.
            expect(card.locator("pre.raw")).to_contain_text('<script>alert(\\"owned\\")</script>')
            # No script but the console's own live-update file.
            assert page.locator("script:not([src='/console.js'])").count() == 0
            assert not ran.exists()

            page.screenshot(path=str(tmp_path / "approvals.png"), full_page=True)
            card.locator("form.approve textarea[name=comment]").fill("errors confirmed; go")
            card.locator("form.approve button[type=submit]").click()
            expect(page.locator(".flash.ok")).to_contain_text(f"approved: {script} web")

            page.goto(f"{wk.url}/incidents/{action['incident_id']}")
            outcome = page.locator(f"#action-{action['id']} .outcome")
            for _ in range(60):
                if outcome.count():
                    break
                page.wait_for_timeout(500)
                page.reload()
            expect(outcome).to_have_text("Outcome: exited 0: restarted web")
            section = page.locator(f"#action-{action['id']}")
            expect(section.locator(".status")).to_have_text("succeeded")
            expect(section).to_contain_text("Approved by alice via console")
            expect(section).to_contain_text("errors confirmed; go")
            timeline = page.locator("table.timeline")
            for text in (
                "Alert AppBroken fired",
                "Tool alert_context [ok]",
                "(observed at",
                "Proposed restart_app",
                "Policy (review): needs approval",
                "Approved by alice (approver) via console [1/1]",
                "Drift check passed",
                "Dispatched (key",
                "Action succeeded: exited 0: restarted web",
            ):
                expect(timeline).to_contain_text(text)
            page.screenshot(path=str(tmp_path / "incident.png"), full_page=True)

            # The same session, but a form post that did not come from the console's form.
            cookies = {c["name"]: c["value"] for c in context.cookies()}
            forged = httpx.post(
                f"{wk.url}/actions/{action['id']}/reject",
                data={"reason": "forged"},
                cookies=cookies,
                timeout=10,
            )
            assert forged.status_code == 403
            assert "CSRF" in forged.text
            # A viewer sees the page but gets no forms, and the server would refuse anyway.
            viewer = login(browser, wk.url, VIEWER)
            expect(viewer.locator("table.incidents")).to_contain_text("AppBroken")
        finally:
            browser.close()
    assert dialogs == []
    assert ran.read_text().splitlines() == ["restarted web (--reason=errors seen)"]
    after = api(wk, f"/api/v1/actions/{action['id']}")
    assert after["status"] == "succeeded"
    assert after["approvals"][0]["channel"] == "console"


def test_work_an_incident_and_see_the_outcome_arrive_without_reloading(
    daemon: tuple[realstack.Watchkeeper, Path, Path], tmp_path: Path
) -> None:
    """Open an incident, acknowledge it, add a note, approve its action, and watch the
    outcome appear on the same page (live updates), with no reload."""
    import time

    from playwright.sync_api import expect, sync_playwright

    wk, _script, ran = daemon
    alert = [{"labels": {"alertname": "AppBroken", "service": "web", "severity": "critical"}}]
    assert httpx.post(f"{wk.url}/api/v2/alerts", json=alert, timeout=10).status_code == 200

    def pending() -> dict[str, Any] | None:
        acts = api(wk, "/api/v1/actions?status=pending_approval")["actions"]
        return acts[0] if acts else None

    action = realstack.wait_for(pending, timeout=60, what="a pending approval")
    inc = action["incident_id"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = login(browser, wk.url, APPROVER)
            # The list shows a new incident within 2 s, without a reload.
            expect(page.locator("body")).to_have_attribute("data-live", "connected")
            page.evaluate("window.stillTheSamePage = true")
            other = [{"labels": {"alertname": "QueueBacklog", "severity": "warning"}}]
            httpx.post(f"{wk.url}/api/v2/alerts", json=other, timeout=10)
            expect(page.locator("#incident-list")).to_contain_text("QueueBacklog", timeout=2_000)
            assert page.evaluate("window.stillTheSamePage") is True

            page.click(f"a[href='/incidents/{inc}']")
            page.wait_for_url(f"{wk.url}/incidents/{inc}")
            page.click("form.work-ack button[type=submit]")
            expect(page.locator(".flash.ok")).to_contain_text("acknowledged")
            expect(page.locator("#incident-state")).to_have_text("acknowledged")

            page.click("#more-work summary")
            page.fill("form.work-note textarea[name=text]", "restarting web; errors since deploy")
            page.click("form.work-note button[type=submit]")
            expect(page.locator(".flash.ok")).to_contain_text("note recorded")
            timeline = page.locator("table.timeline")
            expect(timeline).to_contain_text("Note by alice via console")
            expect(timeline).to_contain_text("restarting web; errors since deploy")

            section = page.locator(f"#action-{action['id']}")
            section.locator("form.approve textarea[name=comment]").fill("go")
            section.locator("form.approve button[type=submit]").click()
            expect(page.locator(".flash.ok")).to_contain_text("approved")
            # From here on: no navigation. The outcome must arrive by itself.
            page.evaluate("window.stillTheSamePage = true")
            done = None
            for _ in range(120):
                done = api(wk, f"/api/v1/actions/{action['id']}")
                if done["status"] in ("succeeded", "verified", "failed"):
                    break
                time.sleep(0.25)
            assert done is not None
            assert done["status"] == "succeeded", done
            outcome = page.locator(f"#action-{action['id']} .outcome")
            expect(outcome).to_have_text("Outcome: exited 0: restarted web", timeout=2_000)
            expect(page.locator(f"#action-{action['id']} .status")).to_have_text("succeeded")
            assert page.evaluate("window.stillTheSamePage") is True
            page.screenshot(path=str(tmp_path / "worked.png"), full_page=True)
        finally:
            browser.close()
    assert ran.read_text().splitlines() == ["restarted web (--reason=errors seen)"]
    story = api(wk, f"/api/v1/incidents/{inc}")
    kinds = [row["kind"] for row in story["story"]]
    assert {"IncidentAcknowledged", "IncidentNoted", "ActionApproved", "ActionSucceeded"} <= set(
        kinds
    )
    [act] = story["actions"]
    assert (act["status"], act["approvals"][0]["via"]) == ("succeeded", "console")
