"""The `watchkeeper` CLI against a running daemon process (tokens configured, SQLite)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from realstack import Watchkeeper, free_port, watchkeeper_argv
from typer.testing import CliRunner, Result

from daemon.cli.main import app

ADMIN = "admin-token-for-cli-tests"
VIEWER = "viewer-token-for-cli-tests"
runner = CliRunner()


@pytest.fixture(scope="module")
def wk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watchkeeper]:
    workdir = tmp_path_factory.mktemp("cli")
    daemon = Watchkeeper(
        workdir,
        f"sqlite:///{workdir}/events.db",
        settings={
            "auth": {
                "tokens": [
                    # The admin token comes from the environment, as a deployment would do it.
                    {"name": "ops", "role": "admin", "token": "env:WK_CLI_TEST_ADMIN"},
                    {"name": "vera", "role": "viewer", "token": VIEWER},
                ]
            }
        },
    )
    assert daemon.child is not None
    assert daemon.child.env is not None
    daemon.child.env["WK_CLI_TEST_ADMIN"] = ADMIN
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def cli(wk: Watchkeeper, *args: str, token: str | None = ADMIN, as_json: bool = False) -> Result:
    argv = ["--url", wk.url]
    if token is not None:
        argv += ["--token", token]
    if as_json:
        argv.append("--json")
    return runner.invoke(app, [*argv, *args], env={"COLUMNS": "200", "WATCHKEEPER_TOKEN": ""})


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result.stdout


def post(wk: Watchkeeper, path: str, body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    if isinstance(body, bytes):
        return httpx.post(wk.url + path, content=body, headers=headers, timeout=30)
    return httpx.post(wk.url + path, json=body, headers=headers, timeout=30)


def all_events(wk: Watchkeeper) -> list[dict[str, Any]]:
    """The whole log through the API, page by page."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        r = httpx.get(
            f"{wk.url}/api/v1/events",
            params={"after": after, "limit": 1000},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=30,
        )
        r.raise_for_status()
        page = r.json()
        if not page["events"]:
            return out
        out += page["events"]
        after = page["next"]


def fire(wk: Watchkeeper, name: str, **labels: str) -> dict[str, Any]:
    r = post(wk, "/api/v2/alerts", [{"labels": {"alertname": name, **labels}}])
    assert r.status_code == 200, r.text
    [inc] = json.loads(
        ok(cli(wk, "incidents", "list", "--match", f"alertname={name}", as_json=True))
    )["incidents"]
    return dict(inc)


def test_status(wk: Watchkeeper) -> None:
    assert "healthy" in ok(cli(wk, "status"))
    data = json.loads(ok(cli(wk, "status", as_json=True)))
    assert data["healthy"] is True
    assert data["store"] == "sqlite"


def test_incidents_list_and_show_by_prefix(wk: Watchkeeper) -> None:
    inc = fire(wk, "CliDiskFull", severity="critical", instance="db1")
    table = ok(cli(wk, "incidents", "list"))
    assert "CliDiskFull" in table
    assert inc["id"][:8] in table
    # `incidents` alone lists too.
    assert "CliDiskFull" in ok(cli(wk, "incidents"))
    listed = json.loads(ok(cli(wk, "incidents", "list", "--state", "open", as_json=True)))
    assert inc["id"] in [i["id"] for i in listed["incidents"]]

    shown = ok(cli(wk, "incidents", "show", inc["id"][:8]))
    assert "CliDiskFull" in shown
    assert "IncidentOpened" in shown
    assert "AlertFired" in shown
    detail = json.loads(ok(cli(wk, "incidents", "show", inc["id"][:8], as_json=True)))
    assert detail["id"] == inc["id"]
    assert [e["type"] for e in detail["timeline"]] == ["IncidentOpened", "AlertFired"]
    assert detail["alerts"][0]["labels"]["instance"] == "db1"


def test_unknown_incident_prefix(wk: Watchkeeper) -> None:
    r = cli(wk, "incidents", "show", "zzzzzz")
    assert r.exit_code == 1
    assert "no incident id starts with 'zzzzzz'" in r.stderr


def test_ack_and_resolve(wk: Watchkeeper) -> None:
    inc = fire(wk, "CliLatency")
    prefix = inc["id"][:8]
    assert f"acknowledged {inc['id']} (CliLatency)" in ok(cli(wk, "ack", prefix, "-c", "on it"))
    again = cli(wk, "ack", prefix)
    assert again.exit_code == 1
    assert "409: incident already acknowledged by ops" in again.stderr
    resolved = json.loads(ok(cli(wk, "resolve", prefix, "--comment", "fixed", as_json=True)))
    assert (resolved["state"], resolved["resolved_by"]) == ("resolved", "ops")
    assert "incident is already resolved" in cli(wk, "resolve", prefix).stderr


def test_silence_add_list_expire(wk: Watchkeeper) -> None:
    created = ok(
        cli(
            wk,
            "silence",
            "add",
            "alertname=CliNoisy",
            'instance=~"web.*"',
            "-d",
            "30m",
            "-c",
            "deploy",
        )
    )
    assert "created for 30m" in created
    sid = created.split()[1]
    assert len(sid) == 36
    assert sid[:8] in ok(cli(wk, "silence", "list"))
    silences = json.loads(ok(cli(wk, "silence", "list", as_json=True)))["silences"]
    mine = next(s for s in silences if s["id"] == sid)
    assert (mine["state"], mine["matchers"], mine["comment"]) == (
        "active",
        ['alertname="CliNoisy"', 'instance=~"web.*"'],
        "deploy",
    )
    # The silence works: the alert opens nothing.
    assert (
        post(
            wk, "/api/v2/alerts", [{"labels": {"alertname": "CliNoisy", "instance": "web1"}}]
        ).status_code
        == 200
    )
    listed = json.loads(
        ok(cli(wk, "incidents", "list", "--match", "alertname=CliNoisy", as_json=True))
    )
    assert listed["incidents"] == []
    assert f"silence {sid} expired" in ok(cli(wk, "silence", "expire", sid[:8]))
    silences = json.loads(ok(cli(wk, "silence", "list", as_json=True)))["silences"]
    assert next(s for s in silences if s["id"] == sid)["state"] == "expired"


def test_bad_matcher_is_reported_not_crashed_on(wk: Watchkeeper) -> None:
    # Brackets in a server message must not be read as console markup.
    r = cli(wk, "silence", "add", "[/tmp]")
    assert r.exit_code == 1
    assert "422: invalid silence: bad matcher '[/tmp]'" in r.stderr


def test_events_tail_and_export(wk: Watchkeeper, tmp_path: Path) -> None:
    fire(wk, "CliEvents")
    everything = all_events(wk)
    tail = ok(cli(wk, "events", "tail", "--after", "0", as_json=True))
    lines = [json.loads(line) for line in tail.splitlines()]
    assert [e["position"] for e in lines][: len(everything)] == [e["position"] for e in everything]
    human = ok(cli(wk, "events", "tail"))
    assert "IncidentOpened" in human or "AlertFired" in human

    out = tmp_path / "events.jsonl"
    result = cli(wk, "events", "export", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(exported) >= len(everything)
    assert exported[: len(everything)] == everything
    assert f"exported {len(exported)} events" in result.stderr
    # To stdout when no file is given.
    to_stdout = [json.loads(line) for line in ok(cli(wk, "events", "export")).splitlines()]
    assert len(to_stdout) >= len(everything)


def test_dead_letters(wk: Watchkeeper) -> None:
    r = post(wk, "/api/v2/alerts", b'[{"labels": {"job": "cli"}}]')
    assert r.status_code == 400
    assert "an alertname label is required" in ok(cli(wk, "dead-letters"))
    letters = json.loads(ok(cli(wk, "dead-letters", "--limit", "5", as_json=True)))["dead_letters"]
    assert letters[0]["reason"] == "alerts[0].labels: an alertname label is required"
    assert letters[0]["payload"] == '[{"labels": {"job": "cli"}}]'
    # Whatever was refused is shown as text, even when it looks like console markup.
    assert post(wk, "/api/v1/webhook/alertmanager", b"[/tmp]").status_code == 400
    assert "[/tmp]" in ok(cli(wk, "dead-letters", "--limit", "1"))


def test_unreachable_daemon(wk: Watchkeeper) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    r = runner.invoke(app, ["--url", nowhere, "status"])
    assert r.exit_code == 3  # unreachable, distinct from 1 (refused) and 2 (usage)
    assert f"cannot reach watchkeeper at {nowhere}" in r.stderr
    assert "Is the daemon running?" in r.stderr


def test_wrong_or_weak_token(wk: Watchkeeper, tmp_path: Path) -> None:
    r = cli(wk, "incidents", token="wrong")
    assert r.exit_code == 1
    assert "401: unknown bearer token (set WATCHKEEPER_TOKEN or --token / --token-file)" in r.stderr
    r = cli(wk, "status", token=None)
    assert r.exit_code == 1
    assert "401: missing bearer token" in r.stderr
    inc = fire(wk, "CliViewer")
    r = cli(wk, "ack", inc["id"][:8], token=VIEWER)
    assert r.exit_code == 1
    assert "403: vera has role viewer; this needs role responder or higher" in r.stderr
    # A token from a file, the way a unit's credential would hold it.
    token_file = tmp_path / "token"
    token_file.write_text(VIEWER + "\n")
    r = runner.invoke(app, ["--url", wk.url, "--token-file", str(token_file), "--json", "status"])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["--url", wk.url, "--token-file", str(tmp_path / "absent"), "status"])
    assert r.exit_code == 1
    assert "No such file or directory" in r.stderr


def test_console_script(wk: Watchkeeper) -> None:
    argv = watchkeeper_argv(Path("unused"))[:-3]  # the entry point without `run --config X`
    env = {**os.environ, "WATCHKEEPER_URL": wk.url, "WATCHKEEPER_TOKEN": ADMIN}
    done = subprocess.run(
        [*argv, "--json", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["healthy"] is True


def test_working_an_incident_from_the_cli_and_exporting_it(wk: Watchkeeper) -> None:
    inc = fire(wk, "CliWorked")
    prefix = inc["id"][:8]
    assert f"noted on {inc['id']}" in ok(cli(wk, "note", prefix, "cleaning /var/log"))
    assert f"took {inc['id']}" in ok(cli(wk, "take", prefix))
    assert "snoozed" in ok(cli(wk, "snooze", prefix, "--for", "20m", "-r", "deploy"))
    assert "critical:" in ok(cli(wk, "severity", prefix, "critical"))
    refused = cli(wk, "unack", prefix)
    assert refused.exit_code == 1
    assert "only an acknowledged one can be unacknowledged" in refused.stderr
    shown = ok(cli(wk, "incidents", "show", prefix))
    assert "owner ops" in shown
    assert "escalation snoozed until" in shown
    md = ok(cli(wk, "incidents", "export", prefix, "--format", "markdown"))
    assert md.startswith("# CliWorked (open)")
    assert "Note by ops via cli" in md
    assert "- People: ops" in md
    data = json.loads(ok(cli(wk, "incidents", "export", prefix, "--format", "json")))
    kinds = [row["kind"] for row in data["story"]]
    assert kinds[-4:] == [
        "IncidentNoted",
        "IncidentAssigned",
        "IncidentSnoozed",
        "IncidentSeverityChanged",
    ]
    assert all(
        row["text"].endswith("via cli") for row in data["story"][-4:] if "via" in row["text"]
    )
    assert cli(wk, "incidents", "export", prefix, "--format", "pdf").exit_code == 1


def test_stats_from_the_cli(wk: Watchkeeper) -> None:
    inc = fire(wk, "CliStats")
    ok(cli(wk, "ack", inc["id"][:8]))
    table = ok(cli(wk, "stats", "--by", "severity", "--since", "1d"))
    assert "outcomes by severity" in table
    data = json.loads(ok(cli(wk, "stats", "--by", "all", as_json=True)))
    assert data["groups"]["all"]["time_to_acknowledge"]["count"] >= 1
    bad = cli(wk, "stats", "--by", "planet")
    assert bad.exit_code == 1


def test_per_person_tokens_in_cli_contexts(
    wk: Watchkeeper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "conf" / "cli.yaml"
    monkeypatch.setenv("WATCHKEEPER_CLI_CONFIG", str(store))
    env = {"COLUMNS": "200", "WATCHKEEPER_TOKEN": "", "WATCHKEEPER_URL": ""}

    def run(*args: str, stdin: str | None = None) -> Result:
        return runner.invoke(app, list(args), env=env, input=stdin)

    # Each person stores their own token; nothing needs --url or --token afterwards.
    (tmp_path / "tok").write_text(ADMIN + "\n")
    ok(run("context", "set", "prod", "--url", wk.url, "--token-file", str(tmp_path / "tok")))
    ok(
        run(
            "context", "set", "readonly", "--url", wk.url, "--token-stdin", "--no-use", stdin=VIEWER
        )
    )
    assert oct(store.stat().st_mode & 0o777) == "0o600"
    listed = json.loads(ok(run("--json", "context", "list")))
    assert [(c["name"], c["current"], c["token"]) for c in listed["contexts"]] == [
        ("prod", True, True),
        ("readonly", False, True),
    ]
    assert ADMIN not in ok(run("context", "list"))
    inc = fire(wk, "CliContexts")
    assert "noted on" in ok(run("note", inc["id"], "as ops, from my context"))
    # The viewer's context is refused as the viewer, by name.
    refused = run("--context", "readonly", "note", inc["id"], "nope")
    assert refused.exit_code == 1
    assert "vera has role viewer" in refused.stderr
    ok(run("context", "use", "readonly"))
    assert run("take", inc["id"]).exit_code == 1
    missing = run("--context", "staging", "incidents", "list")
    assert missing.exit_code == 1
    assert "no CLI context 'staging'" in missing.stderr
    story = json.loads(ok(run("--context", "prod", "incidents", "export", inc["id"], "-f", "json")))
    assert [r["text"] for r in story["story"] if r["kind"] == "IncidentNoted"] == [
        "Note by ops via cli"
    ]


def test_incidents_list_pages_with_limit_and_cursor(wk: Watchkeeper) -> None:
    # Issue 17: every list is paginated, the CLI's too; a prefix is found on any page.
    names = [f"CliPage{i}" for i in range(5)]
    r = post(wk, "/api/v2/alerts", [{"labels": {"alertname": n}} for n in names])
    assert r.status_code == 200, r.text
    seen: list[str] = []
    args = ["incidents", "list", "--match", 'alertname=~"CliPage.*"', "--limit", "2"]
    cursor: str | None = None
    for _ in range(5):
        page = json.loads(ok(cli(wk, *args, *(["--cursor", cursor] if cursor else []),
                                 as_json=True)))
        assert len(page["incidents"]) <= 2
        seen += [i["title"] for i in page["incidents"]]
        cursor = page.get("next")
        if not cursor:
            break
    assert sorted(seen) == names
    table = ok(cli(wk, *args))
    assert "2 incident(s); next page: --cursor" in " ".join(table.split())
    oldest = json.loads(ok(cli(wk, *args[:4], as_json=True)))["incidents"][-1]
    shown = json.loads(ok(cli(wk, "incidents", "show", oldest["id"][:8], as_json=True)))
    assert shown["id"] == oldest["id"]


def test_incidents_show_says_how_many_alerts_and_alerts_pages_the_rest(
    wk: Watchkeeper,
) -> None:
    # Issue 17: an incident may hold 10,000 alerts; `show` prints a page of them, says
    # "N of M" and how to see the rest, which `incidents alerts` pages through.
    many = 105  # more than limits.page_size (100)
    r = post(wk, "/api/v2/alerts", [
        {"labels": {"alertname": "CliMany", "n": f"{i:03d}"}} for i in range(many)
    ])
    assert r.status_code == 200, r.text
    listed = json.loads(ok(cli(wk, "incidents", "list", "--match", 'alertname="CliMany"',
                                as_json=True)))
    [inc] = listed["incidents"]
    shown = json.loads(ok(cli(wk, "incidents", "show", inc["id"][:8], as_json=True)))
    assert len(shown["alerts"]) == 100
    assert shown["alerts_count"] == many
    table = " ".join(ok(cli(wk, "incidents", "show", inc["id"][:8])).split())
    assert f"alerts: 100 of {many}; more: incidents alerts {inc['id'][:8]} --cursor" in table
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(many):
        args = ["incidents", "alerts", inc["id"][:8], "--limit", "40"]
        page = json.loads(ok(cli(wk, *args, *(["--cursor", cursor] if cursor else []),
                                 as_json=True)))
        assert len(page["alerts"]) <= 40
        assert page["total"] == many
        seen += [a["labels"]["n"] for a in page["alerts"]]
        cursor = page.get("next")
        if not cursor:
            break
    assert sorted(seen) == [f"{i:03d}" for i in range(many)]
    first = " ".join(ok(cli(wk, "incidents", "alerts", inc["id"][:8], "--limit", "40")).split())
    assert f"40 of {many} alerts; next page: --cursor" in first
