"""CLI for actions: `watchkeeper actions list|show|approve|reject|dry-run`, `pause`, `resume`.

All but `dry-run` talk to the running daemon. `dry-run` works offline: it renders exactly
what a runbook action would run (argv, URL, unit) with the executors' allowlists from the
config file, and what policy would say, without running anything.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from daemon.cli.client import (
    CursorOpt,
    LimitOpt,
    age,
    client,
    emit,
    every_page,
    fail,
    next_hint,
    out,
    page_params,
    resolve_id,
)

actions_app = typer.Typer(
    help="Review, approve and reject proposed actions; dry-run a runbook action.",
    no_args_is_help=True,
)



def _resolve(prefix: str) -> str:
    def ids() -> list[str]:
        return [a["id"] for a in every_page("/api/v1/actions", "actions")]

    return resolve_id(prefix, ids, "action", "actions list")


def _print_action(a: dict[str, Any]) -> None:
    def line(text: str) -> None:
        out.print(text, highlight=False, markup=False, soft_wrap=True)

    line(f"{a['action_id']} ({a['kind']}, {a['risk']} risk)  {a['id']}")
    line(f"status: {a['status']}   incident: {a['incident_id']}   runbook: {a['runbook_id']}")
    if a.get("plan"):
        line(f"runs: {a['plan']['summary']}")
        if a["plan"]["spec"].get("argv"):
            line("argv: " + json.dumps(a["plan"]["spec"]["argv"]))
        line("targets: " + ", ".join(a["plan"]["targets"]))
        if a["plan"].get("host"):
            via = a["plan"].get("transport") or "url"
            addr = f" {a['plan']['address']}" if a["plan"].get("address") else ""
            line(f"host: {a['plan']['host']} via {via}{addr}")
    if a.get("target") or a.get("target_source"):
        line(f"target: {a.get('target') or '(this host)'} ({a.get('target_source', '')})")
    for r in a.get("reasons", []):
        line(f"policy: {r}")
    if a.get("expires_at") and a["status"] == "pending_approval":
        line(
            f"approvals: {len(a['approvals'])} of {a['approvals_required']}, "
            f"expires {a['expires_at']}"
        )
    for ap in a.get("approvals", []):
        line(f"approved by {ap['by']} via {ap['channel']} at {ap['at']}: {ap['comment']}")
    for c in a.get("drift", []):
        line(f"drift: {c}")
    for key in ("reason", "detail", "verification", "rollback", "escalated"):
        if a.get(key):
            line(f"{key}: {a[key]}")
    if a.get("rationale"):
        line("rationale: " + a["rationale"])


@actions_app.command("list")
def list_actions(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", "-s", help="e.g. pending_approval, approved, succeeded"),
    ] = None,
    limit: LimitOpt = None,
    cursor: CursorOpt = None,
) -> None:
    """List actions, newest first, with exactly what each runs, one page at a time."""
    params: dict[str, Any] = {"status": status} if status else {}
    params.update(page_params(limit, cursor))
    data = client.request("GET", "/api/v1/actions", params=params)
    if emit(data):
        return
    if data["execution"]["paused"]:
        out.print(
            f"[bold red]execution paused[/bold red] by {escape(data['execution']['paused_by'])}",
            highlight=False,
        )
    t = Table(title=f"{len(data['actions'])} action(s){next_hint(data)}")
    for col in ("id", "action", "risk", "status", "runs", "host", "incident", "age"):
        t.add_column(col)
    for a in data["actions"]:
        t.add_row(
            a["id"][:8],
            escape(a["action_id"]),
            a["risk"],
            a["status"],
            escape(a["runs"]),
            escape(a.get("host", "")),
            a["incident_id"][:8],
            age(a["proposed_at"]),
        )
    out.print(t)


@actions_app.command("show")
def show(action_id: Annotated[str, typer.Argument(help="Action id or unique prefix.")]) -> None:
    """Show one action: plan, policy, approvals, drift check, outcome."""
    data = client.request("GET", f"/api/v1/actions/{_resolve(action_id)}")
    if not emit(data):
        _print_action(data)


@actions_app.command("approve")
def approve(
    action_id: Annotated[str, typer.Argument(help="Action id or unique prefix.")],
    comment: Annotated[str, typer.Option("--comment", "-c")] = "",
) -> None:
    """Approve an action (role approver)."""
    aid = _resolve(action_id)
    data = client.request(
        "POST", f"/api/v1/actions/{aid}/approve", json={"comment": comment, "via": "cli"}
    )
    if emit(data):
        return
    if data["status"] == "pending_approval":
        msg = f"approval recorded ({len(data['approvals'])} of {data['approvals_required']})"
    else:
        msg = "approved; it runs after a final check of the world"
    out.print(f"{msg}: {data['runs']}", highlight=False, markup=False, soft_wrap=True)


@actions_app.command("reject")
def reject(
    action_id: Annotated[str, typer.Argument(help="Action id or unique prefix.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (required).")],
) -> None:
    """Reject an action (role approver)."""
    aid = _resolve(action_id)
    data = client.request(
        "POST", f"/api/v1/actions/{aid}/reject", json={"reason": reason, "via": "cli"}
    )
    if not emit(data):
        out.print(f"rejected: {data['runs']}", highlight=False, markup=False, soft_wrap=True)


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{text!r}: expected key=value")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


@actions_app.command("dry-run")
def dry_run(
    runbook: Annotated[str, typer.Argument(help="Runbook id.")],
    action: Annotated[str, typer.Argument(help="Action id within the runbook.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="key=value (JSON values allowed)")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="WATCHKEEPER_CONFIG", help="YAML config file."),
    ] = None,
    target: Annotated[
        str, typer.Option("--target", "-t", help="Target host (default: this host).")
    ] = "",
) -> None:
    """Show exactly what an action would run (argv, URL, unit), where, and what policy says."""
    from daemon.actions.executor import PlanError
    from daemon.actions.planning import plan_action
    from daemon.config.settings import ConfigError, load_config
    from daemon.domain.investigation_decide import params_problems
    from daemon.domain.policy import Proposal, evaluate
    from daemon.runbooks.runbook import load_runbooks
    from daemon.runtime.wiring import build_executors, build_hosts
    try:
        settings = load_config(config)
    except ConfigError as e:
        fail(f"{e.source}: " + "; ".join(e.problems))
    lib = load_runbooks(settings.agent.runbooks_dir)
    rb = lib.get(runbook)
    if rb is None:
        fail(f"no runbook {runbook!r} (known: {', '.join(sorted(lib.runbooks)) or 'none'})")
    spec = rb.action(action)
    if spec is None:
        fail(f"runbook {runbook} has no action {action!r}")
    params = dict(_param(p) for p in param or [])
    problems = params_problems(spec.params, params)
    if problems:
        fail(f"params for {action} are invalid: " + "; ".join(problems))
    try:
        hosts = build_hosts(settings)
        plan = plan_action(
            rb, action, params, build_executors(settings, hosts=hosts),
            hosts=hosts, target=target, target_source="--target",
        )
    except PlanError as e:
        fail(f"{runbook}/{action} would be refused: {e}")
    rules = settings.actions.rules()
    verdict = evaluate(
        Proposal(
            action_id=action,
            kind=plan.kind,
            risk=spec.risk,
            runbook_id=runbook,
            targets=plan.targets,
            verb=plan.verb,
            host=plan.host,
        ),
        rules,
        [],
        datetime.now(UTC),
    )
    data = {"plan": plan.model_dump(mode="json"), "policy": verdict.model_dump(mode="json")}
    if emit(data):
        return
    out.print(f"dry run: {plan.summary}", highlight=False, markup=False, soft_wrap=True)
    for key, value in plan.spec.items():
        out.print(f"  {key}: {json.dumps(value)}", highlight=False, markup=False, soft_wrap=True)
    out.print(f"  targets: {', '.join(plan.targets)}", highlight=False, markup=False)
    if plan.host:
        how = f" via {plan.transport} {plan.address}".rstrip() if plan.transport else ""
        out.print(f"  host: {plan.host}{how}", highlight=False, markup=False)
    out.print(f"policy: {verdict.outcome}", highlight=False, markup=False)
    for r in verdict.reasons:
        out.print(f"  {r}", highlight=False, markup=False, soft_wrap=True)


def pause(reason: Annotated[str, typer.Option("--reason", "-r")] = "") -> None:
    """Kill switch: stop all execution (approvals still queue). Role admin."""
    data = client.request("POST", "/api/v1/pause", json={"reason": reason, "via": "cli"})
    if not emit(data):
        out.print(f"execution paused by {data['paused_by']}", highlight=False, markup=False)


def resume() -> None:
    """Release the kill switch: approved actions run again. Role admin."""
    data = client.request("POST", "/api/v1/resume", json={"via": "cli"})
    if not emit(data):
        out.print("execution resumed", highlight=False, markup=False)


def action_rows(status: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for `watchkeeper status`."""
    a = status.get("reactions", {}).get("actions")
    if not a:
        return []
    by = ", ".join(f"{k}={v}" for k, v in sorted(a["by_status"].items())) or "none"
    switch = f"PAUSED by {a['paused_by']}" if a["paused"] else "running"
    return [
        ("actions", f"mode {a['mode']}, execution {switch}, {a['pending_approvals']} pending"),
        ("actions by status", by),
    ]


def register(app: typer.Typer) -> None:
    """Add the actions commands to the main CLI."""
    app.add_typer(actions_app, name="actions")
    app.command("pause")(pause)
    app.command("resume")(resume)
