"""The `watchkeeper` command: runs the daemon, and talks to a running one over HTTP."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from daemon import installed_version
from daemon.cli import contexts
from daemon.cli.actions import action_rows
from daemon.cli.actions import register as register_actions
from daemon.cli.agent import agent_rows, print_investigation, runbooks_app
from daemon.cli.argv import hoist_globals
from daemon.cli.client import (
    CursorOpt,
    LimitOpt,
    age,
    client,
    emit,
    err,
    every_page,
    fail,
    next_hint,
    out,
    page_params,
)
from daemon.cli.evaluate import register as register_eval
from daemon.cli.incidents import print_story, resolve_incident_id
from daemon.cli.incidents import register as register_incident_work
from daemon.cli.situations import situations_app
from daemon.cli.stats import register as register_stats
from daemon.config.settings import ConfigError, load_config

app = typer.Typer(
    help="watchkeeper: event-sourced alert intake, incidents and on-call workflow.",
    epilog=(
        "Global options may also follow the subcommand. Exit codes: 0 done, 1 refused "
        "(the daemon said no, or a check found problems), 2 usage or invalid configuration, "
        "3 daemon unreachable. Shell completion: watchkeeper --install-completion."
    ),
    no_args_is_help=True,
)
config_app = typer.Typer(help="Validate configuration.", no_args_is_help=True)
incidents_app = typer.Typer(help="List and inspect incidents.")
silence_app = typer.Typer(help="Mute alerts by label matchers.", no_args_is_help=True)
events_app = typer.Typer(help="Read the event log.", no_args_is_help=True)
store_app = typer.Typer(help="Manage the event store itself.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(incidents_app, name="incidents")
app.add_typer(silence_app, name="silence")
app.add_typer(events_app, name="events")
app.add_typer(store_app, name="store")
app.add_typer(runbooks_app, name="runbooks")
app.add_typer(situations_app, name="situations")
register_actions(app)  # actions list|show|approve|reject|dry-run, pause, resume
register_eval(app)  # eval: replay recorded incidents and score the agent
register_incident_work(app, incidents_app)  # note, assign, take, unack, snooze, reopen, ...
register_stats(app)  # stats
app.add_typer(contexts.context_app, name="context")

class Output(StrEnum):
    """`-o/--output`: how replies are printed."""

    table = "table"
    json = "json"
    yaml = "yaml"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"watchkeeper {installed_version()}")
        raise typer.Exit(0)


@app.command("version")
def version_command() -> None:
    """Print the installed version."""
    _print_version(True)


@app.callback()
def _global(  # noqa: PLR0917 - typer passes global options by position
    url: Annotated[
        str | None,
        typer.Option(
            envvar="WATCHKEEPER_URL",
            help="Daemon URL [default: the context's, else http://127.0.0.1:9797].",
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="WATCHKEEPER_TOKEN", help="Bearer token.")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(envvar="WATCHKEEPER_TOKEN_FILE", help="File holding the token.")
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            envvar="WATCHKEEPER_CONTEXT", help="A stored CLI context (`watchkeeper context`)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as -o json.")] = False,
    output: Annotated[
        Output, typer.Option("--output", "-o", help="Output format.")
    ] = Output.table,
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version."
        ),
    ] = False,
) -> None:
    # Flags and environment first, then the chosen (or current) context, then the default.
    stored = contexts.chosen(context) if context or not (url and (token or token_file)) else None
    stored = stored or {}
    client.url = (url or stored.get("url") or "http://127.0.0.1:9797").rstrip("/")
    client.json = as_json or output is Output.json
    client.output = "json" if as_json else output.value
    client.token = token or None
    if token_file and not token:
        try:
            client.token = token_file.read_text().strip()
        except OSError as e:
            fail(f"--token-file {token_file}: {e.strerror}")
    if client.token is None and not url:
        client.token = stored.get("token") or None


# --- daemon ----------------------------------------------------------------------------


@app.command()
def run(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="WATCHKEEPER_CONFIG", help="YAML config file."),
    ] = None,
) -> None:
    """Run the daemon in the foreground (as systemd does)."""
    from daemon.runtime.supervisor import run_daemon

    try:
        settings = load_config(config)
    except ConfigError as e:
        err.print(
            f"[red]invalid configuration[/red] in {escape(e.source)}:",
            highlight=False,
            soft_wrap=True,
        )
        for p in e.problems:
            err.print(f"  {p}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run_daemon(settings, config))


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="YAML config file.")],
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Runbook actions the allowlists would refuse are errors."),
    ] = False,
) -> None:
    """Validate a config file and print every problem with its path in the file.

    Also lists every runbook action that the `actions:` allowlists would refuse at dispatch,
    with the setting to add (a warning; an error with --strict).
    """
    try:
        s = load_config(file)
    except ConfigError as e:
        for p in e.problems:
            # One `file: path: problem` line each, unwrapped, so it can be grepped.
            err.print(f"{file}: {p}", highlight=False, markup=False, soft_wrap=True)
        err.print(f"{len(e.problems)} problem(s) found", highlight=False)
        raise typer.Exit(1) from None
    if s.agent.enabled:
        from daemon.actions.allowlists import refusals
        from daemon.runbooks.runbook import load_runbooks

        refused = refusals(load_runbooks(s.agent.runbooks_dir), s.actions)
        kind = "error" if strict else "warning"
        for r in refused:
            err.print(f"{file}: {kind}: {r.line()}", highlight=False, markup=False, soft_wrap=True)
        if refused and strict:
            err.print(f"{len(refused)} runbook action(s) would be refused", highlight=False)
            raise typer.Exit(1)
    out.print(
        f"{file}: OK (store {s.store.split('@')[-1]}, listening on {s.http.listen})",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


# --- incidents -------------------------------------------------------------------------


# Shared with the incident-work commands (daemon/cli/incidents.py), which page through.
_resolve_incident_id = resolve_incident_id


@store_app.command("init")
def store_init(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="WATCHKEEPER_CONFIG", help="YAML config file."),
    ] = None,
) -> None:
    """Create the event store's tables (safe to run again, and at once from several hosts).

    The daemon creates them too when it starts; running this first (say from a deployment
    job) lets replicas start on a ready store.
    """
    from daemon.engine.store import EventLog

    try:
        s = load_config(config)
    except ConfigError as e:
        err.print("invalid configuration:\n  " + "\n  ".join(e.problems))
        raise typer.Exit(2) from None
    try:
        log = EventLog(s.store)
    except Exception as e:
        err.print(f"cannot initialise the event store: {e}")
        raise typer.Exit(1) from None
    try:
        position = log.max_id()
    finally:
        log.close()
    where = s.store.rsplit("@", 1)[-1]
    out.print(f"event store ready: {escape(where)} (log position {position})")


@incidents_app.callback(invoke_without_command=True)
def incidents_default(ctx: typer.Context) -> None:
    """List incidents (same as `incidents list`)."""
    if ctx.invoked_subcommand is None:
        incidents_list(state=None, match=None, limit=None, cursor=None)


@incidents_app.command("list")
def incidents_list(
    state: Annotated[
        list[str] | None,
        typer.Option("--state", "-s", help="open, acknowledged, resolved, closed"),
    ] = None,
    match: Annotated[
        list[str] | None,
        typer.Option("--match", "-m", help='Label matcher, e.g. severity="critical"'),
    ] = None,
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
) -> None:
    """List incidents, newest first, one page at a time."""
    params: dict[str, Any] = {}
    if state:
        params["state"] = state
    if match:
        params["match"] = match
    if limit:
        params["limit"] = limit
    if cursor:
        params["cursor"] = cursor
    data = client.request("GET", "/api/v1/incidents", params=params)
    if emit(data):
        return
    more = f"; next page: --cursor '{data['next']}'" if data.get("next") else ""
    t = Table(title=f"{len(data['incidents'])} incident(s){more}")
    for col in ("id", "state", "severity", "title", "group", "firing", "age"):
        t.add_column(col)
    for i in data["incidents"]:
        t.add_row(
            i["id"][:8], i["state"], i["severity"], i["title"], i["group_key"],
            f"{i['firing']}/{i['alerts_total']}", age(i["opened_at"]),
        )
    out.print(t)


@incidents_app.command("show")
def incidents_show(
    incident_id: Annotated[str, typer.Argument(help="Incident id or unique prefix.")],
) -> None:
    """Show one incident with its alerts and full timeline."""
    iid = _resolve_incident_id(incident_id)
    data = client.request("GET", f"/api/v1/incidents/{iid}")
    if emit(data):
        return
    out.print(f"[bold]{data['title']}[/bold]  {data['id']}", highlight=False)
    out.print(
        f"state={data['state']} severity={data['severity']} group={data['group_key']} "
        f"opened={data['opened_at']} firing={data['firing']}/{data['alerts_total']}",
        highlight=False,
    )
    if data.get("acknowledged_by"):
        out.print(f"acknowledged by {data['acknowledged_by']}", highlight=False)
    shown = data.get("alerts", [])
    total = data.get("alerts_count", len(shown))
    title = f"alerts: {len(shown)} of {total}"
    if data.get("alerts_next"):
        title += f"; more: incidents alerts {data['id'][:8]} --cursor '{data['alerts_next']}'"
    print_alerts(title, shown)
    if data.get("alert_events_left_out"):
        out.print(
            f"{data['alert_events_left_out']} older alert events left out of the timeline",
            highlight=False,
        )
    tl = Table(title="timeline")
    for col in ("v", "at", "event", "detail"):
        tl.add_column(col)
    for e in data.get("timeline", []):
        d = e["data"]
        alertname = (d.get("alert") or {}).get("labels", {}).get("alertname", "")
        detail = d.get("reason") or d.get("by") or alertname
        if "alert" in d:
            detail = f"{d['alert']['fingerprint']} {detail}"
        tl.add_row(str(e["version"]), e["at"], e["type"], str(detail))
    out.print(tl)
    print_investigation(data.get("investigation"))
    print_story(data)


def print_alerts(title: str, alerts: list[dict[str, Any]]) -> None:
    table = Table(title=title)
    for col in ("fingerprint", "status", "labels", "since"):
        table.add_column(col)
    for a in alerts:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()))
        table.add_row(a["fingerprint"], a["status"], labels, age(a["starts_at"]))
    out.print(table)


@incidents_app.command("alerts")
def incidents_alerts(
    incident_id: Annotated[str, typer.Argument(help="Incident id or unique prefix.")],
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
) -> None:
    """List one incident's alerts, one page at a time (by fingerprint)."""
    iid = _resolve_incident_id(incident_id)
    params: dict[str, Any] = {}
    if limit:
        params["limit"] = limit
    if cursor:
        params["cursor"] = cursor
    data = client.request("GET", f"/api/v1/incidents/{iid}/alerts", params=params)
    if emit(data):
        return
    title = f"{len(data['alerts'])} of {data['total']} alerts"
    if data.get("next"):
        title += f"; next page: --cursor '{data['next']}'"
    print_alerts(title, data["alerts"])


@app.command()
def ack(
    incident_id: Annotated[str, typer.Argument(help="Incident id or unique prefix.")],
    comment: Annotated[str, typer.Option("--comment", "-c")] = "",
) -> None:
    """Acknowledge an incident."""
    _change_incident(incident_id, "ack", comment, "acknowledged")


@app.command()
def resolve(
    incident_id: Annotated[str, typer.Argument(help="Incident id or unique prefix.")],
    comment: Annotated[str, typer.Option("--comment", "-c")] = "",
) -> None:
    """Resolve an incident by hand."""
    _change_incident(incident_id, "resolve", comment, "resolved")


def _change_incident(incident_id: str, verb: str, comment: str, done: str) -> None:
    iid = _resolve_incident_id(incident_id)
    data = client.request("POST", f"/api/v1/incidents/{iid}/{verb}", json={"comment": comment})
    if not emit(data):
        out.print(f"{done} {iid} ({data['title']})", highlight=False)


# --- silences --------------------------------------------------------------------------


@silence_app.command("add")
def silence_add(
    matchers: Annotated[
        list[str], typer.Argument(help='Matchers: alertname=Foo instance=~"web.*"')
    ],
    duration: Annotated[str, typer.Option("--duration", "-d", help="How long, e.g. 2h")] = "1h",
    comment: Annotated[str, typer.Option("--comment", "-c")] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Allow a silence that matches every alert (admin)")
    ] = False,
) -> None:
    """Create a silence."""
    data = client.request(
        "POST",
        "/api/v1/silences",
        json={"matchers": matchers, "duration": duration, "comment": comment, "force": force},
    )
    if not emit(data):
        out.print(f"silence {data['silenceID']} created for {duration}", highlight=False)


@silence_app.command("list")
def silence_list(limit: LimitOpt = None, cursor: CursorOpt = None) -> None:
    """List silences, newest first, one page at a time."""
    data = client.request("GET", "/api/v1/silences", params=page_params(limit, cursor))
    if emit(data):
        return
    t = Table(title=f"{len(data['silences'])} silence(s){next_hint(data)}")
    for col in ("id", "state", "matchers", "ends", "by", "comment"):
        t.add_column(col)
    for s in data["silences"]:
        t.add_row(
            s["id"][:8],
            s["state"],
            " ".join(s["matchers"]),
            s["ends_at"],
            s["created_by"],
            s["comment"],
        )
    out.print(t)


@silence_app.command("expire")
def silence_expire(
    silence_id: Annotated[str, typer.Argument(help="Silence id or unique prefix.")],
) -> None:
    """End a silence now."""
    sid = silence_id
    if len(sid) != 36:
        silences = every_page("/api/v1/silences", "silences")
        hits = [s["id"] for s in silences if s["id"].startswith(sid)]
        if len(hits) != 1:
            fail(f"{sid!r} matches {len(hits)} silences; give the full id")
        sid = hits[0]
    client.request("DELETE", f"/api/v1/silences/{sid}")
    out.print(f"silence {sid} expired", highlight=False)


# --- events, dead letters, status ------------------------------------------------------


@events_app.command("tail")
def events_tail(
    after: Annotated[
        int, typer.Option(help="Start after this position (default: the last 20).")
    ] = -1,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
) -> None:
    """Print events from the log."""
    if after < 0:
        status = client.request("GET", "/api/v1/status")
        after = max(0, int(status["position"]) - 20)
    while True:
        data = client.request("GET", "/api/v1/events", params={"after": after, "limit": 500})
        for e in data["events"]:
            if client.json:
                sys.stdout.write(json.dumps(e) + "\n")
            else:
                brief = json.dumps(e["data"])[:160]
                out.print(
                    f"{e['position']:>8} {e['type']:<22} {e['stream']} v{e['version']} {brief}",
                    highlight=False,
                    markup=False,
                )
        after = data["next"]
        if not follow:
            return
        if not data["events"]:
            time.sleep(1)


@events_app.command("export")
def events_export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default: stdout).")
    ] = None,
) -> None:
    """Export the whole log as JSON Lines (audit, backup)."""
    fh = output.open("w") if output else sys.stdout
    after, n = 0, 0
    try:
        while True:
            data = client.request("GET", "/api/v1/events", params={"after": after, "limit": 1000})
            for e in data["events"]:
                fh.write(json.dumps(e) + "\n")
                n += 1
            if not data["events"]:
                break
            after = data["next"]
    finally:
        if output:
            fh.close()
    err.print(f"exported {n} events", highlight=False)


@app.command("dead-letters")
def dead_letters(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50) -> None:
    """Show inputs that were refused, with the reason."""
    data = client.request("GET", "/api/v1/dead-letters", params={"limit": limit})
    if emit(data):
        return
    t = Table(title=f"{len(data['dead_letters'])} dead letter(s)")
    for col in ("at", "source", "reason", "size", "payload"):
        t.add_column(col)
    for d in data["dead_letters"]:
        # Refused input is arbitrary text: escaped, so "[/x]" is shown, not read as markup.
        reason, payload = escape(d["reason"]), escape(d["payload"][:60])
        t.add_row(d["at"], d["source"], reason, str(d["size"]), payload)
    out.print(t)


@app.command()
def demo(
    state_dir: Annotated[
        Path, typer.Option(help="Where the demo keeps its (fresh) event log.")
    ] = Path("./var/demo"),
    port: Annotated[int, typer.Option(help="API and console port.")] = 9797,
    sim_port: Annotated[int, typer.Option(help="Port of the simulated estate.")] = 9798,
) -> None:
    """Run the daemon against a simulated estate: alerts, investigation, approval, action."""
    import asyncio

    from daemon.demo.run import run_demo
    from daemon.runtime.logs import setup_logging

    setup_logging("keyvalue", "warning")
    try:
        asyncio.run(run_demo(state_dir, port, sim_port))
    except RuntimeError as e:
        fail(str(e))


@app.command()
def status() -> None:
    """Show daemon health, state counts and sources."""
    data = client.request("GET", "/api/v1/status")
    if emit(data):
        return
    t = Table(title="watchkeeper", show_header=False)
    t.add_row("healthy", str(data["healthy"]))
    t.add_row("writer", data["writer"])
    t.add_row("store", escape(store_line(data)))
    t.add_row("log position", str(data["position"]))
    rep = data.get("replica") or {}
    if rep.get("replicated"):
        t.add_row("replica", escape(replica_line(rep)))
    t.add_row("incidents", ", ".join(f"{k}={v}" for k, v in data["incidents"].items()) or "none")
    t.add_row("alerts firing", str(data["alerts_firing"]))
    t.add_row("silences active", str(data["silences_active"]))
    t.add_row("dead letters", str(data["dead_letters"]))
    for channel, n in data.get("notifications", {}).items():
        line = f"{n['sent']} sent, {n['failed']} failed, {n['held']} held back"
        if n.get("last_error"):
            line += f"; last failure: {n['last_error']}"
        t.add_row(f"notify {channel}", escape(line))
    for name, value in agent_rows(data) + action_rows(data):
        t.add_row(name, escape(value))
    t.add_row("uptime", f"{data['uptime_seconds']}s")
    out.print(t)
    if data.get("sources"):
        out.print(sources_table(data["sources"]))


def replica_line(rep: dict[str, Any]) -> str:
    """`leader, epoch 4` or `follower of http://10.0.0.2:9797 (epoch 4), 0.2s behind`."""
    if rep.get("role") == "leader":
        return f"leader, epoch {rep.get('epoch')}"
    lead = rep.get("leader") or {}
    where = lead.get("address") or "no leader known"
    lag = rep.get("lag_seconds", 0)
    return f"follower of {where} (epoch {rep.get('epoch')}), {lag:.1f}s behind"


def store_line(data: dict[str, Any]) -> str:
    """`postgresql: ok, last commit 3s ago` or the reason the store is unavailable."""
    sh = data.get("store_health") or {}
    since = sh.get("seconds_since_commit")
    last = f"last commit {since:.0f}s ago" if since is not None else ""
    if sh.get("ok", True):
        return f"{data['store']}: ok" + (f", {last}" if last else "")
    return f"{data['store']}: UNAVAILABLE, {sh.get('problem')}; {last}; intake refused (503)"


def sources_table(sources: dict[str, Any]) -> Table:
    """Stream sources: connected, last message, messages, errors, lag, last error."""
    t = Table(title="sources")
    for col in ("source", "kind", "connected", "last message"):
        t.add_column(col)
    for col in ("messages", "errors", "lag", "last error"):
        t.add_column(col)
    for name, h in sources.items():
        last = h.get("last_message_at")
        seen = age(datetime.fromtimestamp(last, UTC).isoformat()) + " ago" if last else "never"
        lag = h.get("lag")
        t.add_row(
            escape(name), h["kind"], "yes" if h["connected"] else "[red]no[/red]", seen,
            str(h["messages"]), str(h["errors"]), "-" if lag is None else str(lag),
            escape(h.get("last_error", ""))[:80],
        )
    return t


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("COLUMNS", "160")
    args = hoist_globals(typer.main.get_command(app), sys.argv[1:])
    app(args=args, prog_name="watchkeeper")
