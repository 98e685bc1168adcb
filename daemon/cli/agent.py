"""CLI for runbooks (`watchkeeper runbooks validate|list|show`, read locally) and agent views."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from daemon.runbooks.runbook import SHIPPED, RunbookLibrary, load_runbooks

runbooks_app = typer.Typer(help="Validate, list and show runbooks.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

DirArg = Annotated[
    Path | None,
    typer.Argument(help="Runbook directory (default: the shipped runbooks/)."),
]
DirOpt = Annotated[
    Path | None,
    typer.Option("--dir", "-d", help="Runbook directory (default: the shipped runbooks/)."),
]


def _load(directory: Path | None) -> RunbookLibrary:
    return load_runbooks(directory or SHIPPED)


@runbooks_app.command("validate")
def validate(directory: DirArg = None) -> None:
    """Check every runbook; print each problem as `file: field: reason`; exit 1 if any."""
    lib = _load(directory)
    for p in lib.problems:
        typer.echo(p, err=True)  # one unwrapped line per problem, for grep and CI logs
    where = directory or SHIPPED
    if lib.problems:
        err.print(
            f"{len(lib.problems)} problem(s); {len(lib.runbooks)} valid runbook(s) in {where}",
            highlight=False,
        )
        raise typer.Exit(1)
    if not lib.runbooks:
        err.print(f"no runbooks (*.md) found in {where}", highlight=False)
        raise typer.Exit(1)
    out.print(f"{len(lib.runbooks)} runbook(s) valid in {where}", highlight=False)


@runbooks_app.command("list")
def list_runbooks(
    directory: DirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List runbooks with what they match and the actions they may propose."""
    lib = _load(directory)
    rows: list[dict[str, Any]] = [
        {
            "id": rb.id,
            "version": rb.version,
            "title": rb.title,
            "match": [str(m) for m in rb.match],
            "actions": [f"{a.id} ({a.risk})" for a in rb.actions],
            "default_action": rb.default_action.action if rb.default_action else None,
        }
        for rb in lib.runbooks.values()
    ]
    if as_json:
        out.print_json(json.dumps({"runbooks": rows, "problems": lib.problems}))
    else:
        _table(rows)
    for p in lib.problems:
        typer.echo(f"skipped: {p}", err=True)
    if not rows:
        # An installed daemon with no runbooks investigates nothing: not a success.
        err.print(f"no runbooks (*.md) found in {directory or SHIPPED}", highlight=False)
        raise typer.Exit(1)


def _table(rows: list[dict[str, Any]]) -> None:
    t = Table(title=f"{len(rows)} runbook(s)")
    for col in ("id", "version", "title", "match", "actions", "default"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            str(r["id"]),
            str(r["version"]),
            str(r["title"]),
            " ".join(r["match"]) or "(default route)",
            ", ".join(r["actions"]),
            str(r["default_action"] or "-"),
        )
    out.print(t)


@runbooks_app.command("show")
def show(
    runbook_id: Annotated[str, typer.Argument(help="Runbook id.")],
    directory: DirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show one runbook: front matter summary and its Markdown body."""
    lib = _load(directory)
    rb = lib.get(runbook_id)
    if rb is None:
        known = ", ".join(sorted(lib.runbooks)) or "none"
        err.print(f"error: no runbook {runbook_id!r} (known: {known})", highlight=False)
        raise typer.Exit(1)
    if as_json:
        out.print_json(rb.model_dump_json())
        return
    out.print(f"[bold]{rb.title}[/bold]  {rb.id} v{rb.version}  ({rb.path})", highlight=False)
    out.print(
        f"match: {' '.join(str(m) for m in rb.match) or '(default route only)'}", highlight=False
    )
    out.print(f"tools: {', '.join(rb.tools)}", highlight=False)
    out.print(
        f"budgets: {rb.budgets.steps} steps, {rb.budgets.tokens} tokens, {rb.budgets.wall_time}; "
        f"evidence_max_age {rb.evidence_max_age}",
        highlight=False,
    )
    t = Table(title="diagnostics (deterministic path, in order)")
    for col in ("id", "tool", "args"):
        t.add_column(col)
    for d in rb.diagnostics:
        t.add_row(d.id, d.tool, json.dumps(d.args))
    out.print(t)
    a = Table(title="actions")
    for col in ("id", "kind", "risk", "params", "rollback"):
        a.add_column(col)
    for act in rb.actions:
        a.add_row(
            act.id,
            act.kind,
            act.risk,
            json.dumps(act.params.get("properties", {})),
            act.rollback.describe() if act.rollback else "-",
        )
    out.print(a)
    if rb.default_action:
        da = rb.default_action
        checks = [*da.when.all, *(f"any: {c}" for c in da.when.any)]
        out.print(
            f"default action: {da.action} {json.dumps(da.params)} when {'; '.join(checks)}",
            highlight=False,
        )
    if rb.verify:
        v = rb.verify
        out.print(
            f"verify: {v.query or v.probe} expect {v.expect} within {v.window}", highlight=False
        )
    out.print(Markdown(rb.body))


def print_investigation(inv: dict[str, Any] | None) -> None:
    """The conclusion block of `incidents show`: summary, cause, evidence, proposals, cost."""
    if not inv:
        out.print(
            "investigation: none (no runbook routed, or the agent is disabled)", highlight=False
        )
        return
    out.print(
        f"[bold]investigation[/bold] {escape(inv['status'])}"
        f"{' — ESCALATED: ' + escape(inv['escalated']) if inv.get('escalated') else ''}"
        f"  tokens={inv['tokens']} cost={inv['cost']}",
        highlight=False,
    )
    for run in inv["runs"]:
        out.print(
            f"  run {run['run']} {escape(run['runbook'])}@{escape(run['runbook_version'])} "
            f"[{escape(run['mode'])}{' ' + escape(run['model']) if run['model'] else ''}] "
            f"{escape(run['status'])}: {run['llm_calls']} model calls, "
            f"{run['tool_calls']} tool calls, "
            f"{run['tokens']['total']} tokens, cost {run['cost']}"
            f"{'; budget: ' + escape(run['budget_exhausted']) if run['budget_exhausted'] else ''}",
            highlight=False,
        )
    if inv.get("summary"):
        out.print("[bold]summary[/bold]", highlight=False)
        out.print(escape(inv["summary"]), highlight=False)
    if inv.get("probable_cause"):
        out.print(f"[bold]probable cause[/bold] {escape(inv['probable_cause'])}", highlight=False)
    latest = inv["runs"][-1]
    if latest["evidence"]:
        ev = Table(title="evidence")
        for col in ("id", "tool", "observed", "summary"):
            ev.add_column(col)
        for e in latest["evidence"]:
            ev.add_row(
                e["call_id"], e["tool"], str(e.get("observed_at") or ""), escape(e["summary"][:200])
            )
        out.print(ev)
    if inv["proposals"]:
        pt = Table(title="proposed actions")
        for col in ("proposal", "action", "kind", "risk", "params", "rationale"):
            pt.add_column(col)
        for p in inv["proposals"]:
            pt.add_row(
                p["proposal_id"][:8],
                p["action_id"],
                p["kind"],
                p["risk"],
                escape(json.dumps(p["params"])),
                escape(p["rationale"][:200]),
            )
        out.print(pt)


def agent_rows(status: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for `watchkeeper status`: the model, the queue and running investigations."""
    a = status.get("reactions", {}).get("agent")
    if not a:
        return []
    q = a["queue"]
    by_sev = ", ".join(f"{k}={v}" for k, v in q["by_severity"].items()) or "empty"
    problem = [("agent PROBLEM", str(a["problem"]))] if a.get("problem") else []
    return [
        *problem,
        ("agent model", str(a["model"])),
        (
            "agent queue",
            f"{a['running']} running / {a['concurrency']} max, {a['queued']} queued ({by_sev}), "
            f"oldest waiting {q['oldest_wait_seconds']}s",
        ),
        (
            "investigations",
            f"{a['investigations']['unfinished']} unfinished, {a['investigations']['concluded']} "
            f"concluded, {a['investigations']['escalated']} escalated; {a['tokens']} tokens, "
            f"cost {a['cost']}",
        ),
    ]


@runbooks_app.command("suggest")
def suggest_change(
    runbook_id: Annotated[str, typer.Argument(help="Runbook id.")],
    directory: DirOpt = None,
    actions_file: Annotated[
        Path | None,
        typer.Option(
            "--from", help="Read actions from this JSON file (GET /api/v1/actions) instead."
        ),
    ] = None,
) -> None:
    """Draft a change to a runbook from how its actions ended, as a diff (never applied)."""
    from pydantic import ValidationError

    from daemon.cli.client import every_page, fail
    from daemon.domain.action_model import ActionEntry
    from daemon.runbooks.suggest import suggest

    lib = _load(directory)
    rb = lib.get(runbook_id)
    if rb is None:
        fail(f"no runbook {runbook_id!r} in {directory or SHIPPED}")
    if actions_file is not None:
        try:
            data = json.loads(actions_file.read_text())
        except (OSError, ValueError) as e:
            fail(f"{actions_file}: cannot read actions: {e}")
    else:
        data = {"actions": every_page("/api/v1/actions", "actions")}
    try:
        entries = [ActionEntry.model_validate(a) for a in data.get("actions", [])]
    except ValidationError as e:
        fail(f"the actions are not in the shape GET /api/v1/actions returns: {e}")
    s = suggest(rb, Path(rb.path).read_text(), entries)
    for reason in s.reasons:
        err.print(f"- {reason}", highlight=False, soft_wrap=True)
    if s.diff:
        typer.echo(s.diff, nl=False)
        err.print(
            "A suggestion only: review it, then edit the runbook yourself "
            "(or run it in shadow first).",
            highlight=False,
        )


@runbooks_app.command("shadow")
def shadow_runs() -> None:
    """Shadow runs next to the active ones: what the candidate version would have proposed."""
    from daemon.cli.client import client, emit

    data = client.request("GET", "/api/v1/runbooks/shadow")
    if emit(data):
        return
    t = Table(title=f"{len(data['runs'])} shadow run(s)")
    for col in (
        "incident",
        "runbook",
        "shadow v",
        "active v",
        "shadow proposed",
        "approved",
        "agrees",
    ):
        t.add_column(col)
    for r in data["runs"]:
        approved = [f"{o['action']} ({o['status']})" for o in r["outcomes"] if o["approved"]]
        t.add_row(
            r["incident_id"][:8],
            r["runbook"],
            r["shadow_version"],
            r["active_version"],
            escape(", ".join(r["shadow_proposals"]) or "-"),
            escape(", ".join(approved) or "-"),
            "yes" if r["agrees_with_people"] else "NO",
        )
    out.print(t)


@runbooks_app.command("promote")
def promote(
    runbook_id: Annotated[str, typer.Argument(help="Runbook id.")],
    version: Annotated[str, typer.Option("--version", help="The shadow version to promote.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded with the event).")],
    previous: Annotated[str, typer.Option("--previous", help="The version it replaces.")] = "",
) -> None:
    """Record a person's promotion of a shadow runbook version (a RunbookPromoted event).

    The event records the decision; installing the file as the active runbook is still done
    by hand (copy it into the runbooks directory and restart)."""
    from daemon.cli.client import client

    data = client.request(
        "POST",
        f"/api/v1/runbooks/{runbook_id}/promote",
        json={"version": version, "reason": reason, "previous_version": previous},
    )
    out.print(f"promoted {data['runbook']} v{data['promoted']} (by {data['by']})", highlight=False)
