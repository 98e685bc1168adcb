"""CLI for working an incident: `note`, `assign`, `take`, `unack`, `snooze`, `reopen`,
`severity`, and `incidents export ID --format markdown|json`; and the story part of
`incidents show` (agent steps, actions, notifications, people, figures)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from daemon.cli.client import client, emit, fail, out, resolve_id


def resolve_incident_id(prefix: str) -> str:
    """The full id of the one incident whose id starts with `prefix` (every page looked at)."""

    def ids() -> list[str]:
        params: dict[str, Any] = {"state": ["open", "acknowledged", "resolved", "closed"]}
        found: list[str] = []
        while True:  # every page: the list is paginated
            data = client.request("GET", "/api/v1/incidents", params={**params, "limit": 1000})
            found += [i["id"] for i in data["incidents"]]
            if not data.get("next"):
                return found
            params["cursor"] = data["next"]

    return resolve_id(prefix, ids, "incident", "incidents list")


IncidentArg = Annotated[str, typer.Argument(help="Incident id or unique prefix.")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the event).")]


def _post(incident: str, verb: str, body: dict[str, Any], said: str) -> None:
    iid = resolve_incident_id(incident)
    data = client.request("POST", f"/api/v1/incidents/{iid}/{verb}", json={**body, "via": "cli"})
    if not emit(data):
        out.print(f"{said} {iid} ({data['title']})", highlight=False)


def register(app: typer.Typer, incidents_app: typer.Typer) -> None:
    """Add the incident-work commands to the top-level app and `incidents`."""

    @app.command()
    def note(incident_id: IncidentArg, text: Annotated[str, typer.Argument()]) -> None:
        """Add a note to an incident's timeline."""
        _post(incident_id, "note", {"text": text}, "noted on")

    @app.command()
    def assign(incident_id: IncidentArg, assignee: Annotated[str, typer.Argument()]) -> None:
        """Give an incident an owner ("" unassigns)."""
        _post(incident_id, "assign", {"assignee": assignee}, f"assigned to {assignee or 'nobody'}:")

    @app.command()
    def take(incident_id: IncidentArg) -> None:
        """Take an incident: you own it."""
        _post(incident_id, "take", {}, "took")

    @app.command()
    def unack(incident_id: IncidentArg, reason: ReasonOpt = "") -> None:
        """Undo an acknowledgement: the incident is open again and escalation may page."""
        _post(incident_id, "unack", {"reason": reason}, "unacknowledged")

    @app.command()
    def snooze(
        incident_id: IncidentArg,
        duration: Annotated[
            str | None, typer.Option("--for", help="How long, e.g. 30m or 2h.")
        ] = None,
        until: Annotated[
            str | None, typer.Option("--until", help="Until a time, e.g. 2026-03-01T14:00:00Z.")
        ] = None,
        reason: ReasonOpt = "",
    ) -> None:
        """Pause an incident's escalation until a time."""
        body: dict[str, Any] = {"reason": reason}
        if duration is not None:
            body["for"] = duration
        if until is not None:
            body["until"] = until
        _post(incident_id, "snooze", body, "snoozed")

    @app.command()
    def reopen(incident_id: IncidentArg, reason: ReasonOpt = "") -> None:
        """Reopen a resolved incident."""
        _post(incident_id, "reopen", {"reason": reason}, "reopened")

    @app.command()
    def severity(
        incident_id: IncidentArg,
        level: Annotated[str, typer.Argument(help="critical, error, warning, info or none")],
        reason: ReasonOpt = "",
    ) -> None:
        """Change an incident's severity."""
        _post(incident_id, "severity", {"severity": level, "reason": reason}, f"{level}:")

    @app.command()
    def link(
        incident_id: IncidentArg,
        other: Annotated[str, typer.Argument(help="The incident to link to (id or prefix).")],
        reason: ReasonOpt = "",
    ) -> None:
        """Link an incident to another (same cause, duplicate, follow-up)."""
        target = resolve_incident_id(other)
        _post(incident_id, "link", {"other": target, "reason": reason}, f"linked to {target}:")

    @incidents_app.command("export")
    def export(
        incident_id: IncidentArg,
        fmt: Annotated[str, typer.Option("--format", "-f", help="markdown or json")] = "markdown",
    ) -> None:
        """A postmortem draft: timeline, people, actions, figures."""
        if fmt not in ("markdown", "json"):
            fail(f"--format must be markdown or json, not {fmt!r}")
        iid = resolve_incident_id(incident_id)
        path = f"/api/v1/incidents/{iid}/export"
        sys.stdout.write(client.request_text("GET", path, params={"format": fmt}))


def print_story(data: dict[str, Any]) -> None:
    """The parts of an incident's story beyond its own timeline."""
    if data.get("assignee"):
        out.print(f"owner {data['assignee']}", highlight=False)
    if data.get("snoozed_until"):
        out.print(f"escalation snoozed until {data['snoozed_until']}", highlight=False)
    for run in data.get("agent", []):
        t = Table(title=f"{run['run']}: {run['conclusion'] or 'no conclusion yet'}")
        for col in ("tool", "status", "result", "age"):
            t.add_column(col)
        for s in run["steps"]:
            t.add_row(
                s.get("tool", ""),
                s.get("status", ""),
                s.get("summary", ""),
                s.get("age_when_recorded", ""),
            )
        out.print(t)
    if data.get("actions"):
        t = Table(title="actions")
        for col in ("action", "runs", "status", "who", "outcome", "verification"):
            t.add_column(col)
        for a in data["actions"]:
            who = ", ".join(f"{p['by']} via {p['via']}" for p in a["approvals"])
            t.add_row(
                a["action"],
                a["runs"],
                a["status"],
                who or a["decided_by"],
                a["outcome"] or a["reason"],
                a["verification"],
            )
        out.print(t)
    for n in data.get("notifications", []):
        out.print(
            f"notified {n['channel']} ({n['platform']}): {', '.join(n['sent'])}", highlight=False
        )
    fig = data.get("figures") or {}
    shown = {k: v for k, v in fig.items() if k.startswith("time_to") and v is not None}
    if shown:
        out.print(
            "figures: " + " ".join(f"{k}={int(v)}s" for k, v in shown.items()), highlight=False
        )
