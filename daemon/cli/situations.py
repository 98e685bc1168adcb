"""CLI for situations: `watchkeeper situations list|show|link|unlink`, and inhibited alerts."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from daemon.cli.client import CursorOpt, LimitOpt, client, emit, next_hint, out, page_params

situations_app = typer.Typer(
    help="Incidents linked by one probable cause: list, show, link and unlink by hand.",
    no_args_is_help=True,
)


def _line(text: str) -> None:
    out.print(text, highlight=False, markup=False, soft_wrap=True)


def _print(s: dict[str, Any]) -> None:
    keys = ", ".join(f"{k}={v}" for k, v in s["keys"].items()) or "-"
    _line(f"situation {s['id']}  {s['state']}  opened {s['opened_at']}  keys: {keys}")
    if s.get("closed_reason"):
        _line(f"closed: {s['closed_reason']}")
    for m in s["members"]:
        lead = "lead  " if m["lead"] else "member"
        by = f" by {m['by']}" if m["by"] else ""
        _line(
            f"  {lead} {m['incident_id']}  {m['state']:<12} {m['title']}  "
            f"[{m['rule']}{by}: {m['reason']}]"
        )


@situations_app.command("list")
def list_situations(
    closed: Annotated[bool, typer.Option("--closed", help="Include closed situations.")] = False,
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
) -> None:
    """Open situations, newest first, with their lead incident and member count (a page)."""
    params = {"closed": closed, **page_params(limit, cursor)}
    data = client.request("GET", "/api/v1/situations", params=params)
    if emit(data):
        return
    title = f"{len(data['situations'])} situation(s){next_hint(data)}"
    table = Table("ID", "STATE", "OPENED", "KEYS", "MEMBERS", "LEAD", title=title)
    for s in data["situations"]:
        lead = next((m["title"] for m in s["members"] if m["lead"]), "")
        keys = ", ".join(f"{k}={v}" for k, v in s["keys"].items())
        table.add_row(s["id"][:8], s["state"], s["opened_at"], keys, str(len(s["members"])), lead)
    out.print(table)


@situations_app.command("show")
def show(situation_id: str) -> None:
    """One situation: every member and the rule (or person) that linked it."""
    data = client.request("GET", f"/api/v1/situations/{situation_id}")
    if not emit(data):
        _print(data)


@situations_app.command("link")
def link(
    incident_ids: Annotated[list[str], typer.Argument(help="Incident ids to link.")],
    into: Annotated[
        str | None, typer.Option("--into", help="An open situation to add them to.")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why they belong together.")] = "",
) -> None:
    """Link incidents into a new situation (two or more) or into an existing one (--into)."""
    body = {"incident_ids": incident_ids, "reason": reason}
    path = f"/api/v1/situations/{into}/link" if into else "/api/v1/situations"
    data = client.request("POST", path, json=body)
    if not emit(data):
        _print(data)


@situations_app.command("unlink")
def unlink(
    situation_id: str,
    incident_id: str,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why it does not belong.")] = "",
) -> None:
    """Take an incident out of a situation; correlation will not link it again."""
    body = {"incident_id": incident_id, "reason": reason}
    data = client.request("POST", f"/api/v1/situations/{situation_id}/unlink", json=body)
    if not emit(data):
        _print(data)


@situations_app.command("inhibited")
def inhibited(limit: LimitOpt = None, cursor: CursorOpt = None) -> None:
    """Firing alerts muted by inhibit rules, and the alert that mutes each (a page)."""
    data = client.request("GET", "/api/v1/inhibited", params=page_params(limit, cursor))
    if emit(data):
        return
    title = f"{len(data['inhibited'])} inhibited alert(s){next_hint(data)}"
    table = Table("ALERT", "LABELS", "INHIBITED BY", "RULE", title=title)
    for a in data["inhibited"]:
        labels = ", ".join(f"{k}={v}" for k, v in a["labels"].items() if k != "alertname")
        src = a["inhibited_by_labels"].get("alertname", a["inhibited_by"])
        table.add_row(a["labels"].get("alertname", ""), labels, src, a["rule"])
    out.print(table)
