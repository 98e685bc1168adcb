"""An incident's whole story for the API, the CLI and postmortems: alerts, the agent's steps,
every proposed action with its status, approvals, drift check, outcome and verification,
the notifications sent, who took part, and the figures (time to acknowledge, resolve...).

`gather` reads the streams; everything after is pure over the events it returns.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from daemon.domain.durations import format_duration
from daemon.domain.events import DomainEvent
from daemon.domain.evolve import evolve
from daemon.domain.state import AlertState, Incident, World
from daemon.engine.ingest import Ingestor
from daemon.web.timeline import timeline

Streams = list[tuple[str, list[DomainEvent]]]


# An incident's alert events: a sender can make thousands (limits.max_alerts_per_incident),
# so a page shows the newest `page_size` of them and says how many it left out.
ALERT_EVENTS = frozenset({"AlertFired", "AlertUpdated", "AlertResolved"})


async def incident_events(
    ing: Ingestor, incident_id: UUID, keep: int
) -> tuple[list[DomainEvent], int]:
    """The incident's stream, oldest first, with only its newest `keep` alert events (every
    other event kept); and how many alert events were left out."""
    return await asyncio.to_thread(ing.log.stream_window, incident_id, keep, ALERT_EVENTS)


def rebuilt(ing: Ingestor, incident_id: UUID) -> Incident | None:
    """An incident no longer held (closed long ago), folded from its stream a page at a time
    (blocking: call in a thread)."""
    scratch = World(policy=ing.world.policy)
    for events in ing.log.stream_pages(incident_id):
        for ev in events:
            evolve(ev, scratch)
    return scratch.incidents.get(incident_id) or scratch.closed.get(incident_id)


def alert_page(
    world: World, incident_id: UUID, cursor: str, limit: int
) -> tuple[list[AlertState], int, str | None]:
    """One page of the incident's alerts by fingerprint: (page, how many in all, the next
    page's cursor or None)."""
    alerts = sorted(world.incident_alerts(incident_id), key=lambda a: a.alert.fingerprint)
    total = len(alerts)
    if cursor:
        alerts = [a for a in alerts if a.alert.fingerprint > cursor]
    page = alerts[:limit]
    nxt = page[-1].alert.fingerprint if len(alerts) > limit and page else None
    return page, total, nxt


async def gather(ing: Ingestor, incident_id: UUID, keep: int) -> tuple[Streams, int]:
    """The incident's stream (its newest `keep` alert events), its investigations' and its
    actions', each oldest first; and how many alert events were left out."""
    world = ing.world
    events, left_out = await incident_events(ing, incident_id, keep)
    streams: Streams = [("incident", events)]
    for inv in world.investigations.for_incident(incident_id):
        events = await asyncio.to_thread(ing.log.stream, inv.id)
        streams.append((f"investigation {inv.runbook_id} #{inv.run}", events))
    for a in world.actions.for_incident(incident_id):
        streams.append((f"action {a.action_id}", await asyncio.to_thread(ing.log.stream, a.id)))
    return streams, left_out


def _ts(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def figures(streams: Streams) -> dict[str, Any]:
    """Times an on-call review asks for, from the events (seconds; None when not reached)."""
    incident = next((evs for name, evs in streams if name == "incident"), [])
    kinds = [(type(e).__name__, e) for e in incident]
    opened = next((e.timestamp for k, e in kinds if k == "IncidentOpened"), None)
    acked = next((e.timestamp for k, e in kinds if k == "IncidentAcknowledged"), None)
    resolved = next((e.timestamp for k, e in kinds if k == "IncidentResolved"), None)
    out: dict[str, Any] = {
        "opened_at": _ts(opened),
        "time_to_acknowledge": _seconds(opened, acked),
        "time_to_resolve": _seconds(opened, resolved),
        "reopened": sum(1 for k, _ in kinds if k == "IncidentReopened"),
    }
    waits = []
    for name, evs in streams:
        if not name.startswith("action "):
            continue
        asked = next((e.timestamp for e in evs if type(e).__name__ == "ApprovalRequested"), None)
        decided = next(
            (e.timestamp for e in evs if type(e).__name__ in ("ActionApproved", "ActionRejected")),
            None,
        )
        if asked and decided:
            waits.append((decided - asked).total_seconds())
    out["time_to_approve"] = min(waits) if waits else None
    return out


def agent_steps(streams: Streams) -> list[dict[str, Any]]:
    """Each investigation's tool calls with their results and age, and how it ended."""
    runs = []
    for name, evs in streams:
        if not name.startswith("investigation "):
            continue
        calls: dict[str, dict[str, Any]] = {}
        ended = ""
        for e in evs:
            kind = type(e).__name__
            if kind == "ToolCalled":
                calls[e.call_id] = {  # type: ignore[attr-defined]
                    "tool": e.tool,  # type: ignore[attr-defined]
                    "arguments": e.arguments,  # type: ignore[attr-defined]
                    "called_at": e.timestamp.isoformat(),
                    "status": "running",
                }
            elif kind == "ToolResulted":
                step = calls.setdefault(e.call_id, {"tool": e.tool})  # type: ignore[attr-defined]
                step.update(
                    status=e.status,  # type: ignore[attr-defined]
                    summary=e.summary,  # type: ignore[attr-defined]
                    observed_at=e.observed_at.isoformat(),  # type: ignore[attr-defined]
                    age_when_recorded=format_duration(e.timestamp - e.observed_at),  # type: ignore[attr-defined]
                )
            elif kind == "InvestigationConcluded":
                ended = "concluded: " + (e.probable_cause or e.summary)  # type: ignore[attr-defined]
            elif kind in ("InvestigationEscalated", "InvestigationAbandoned"):
                ended = kind.removeprefix("Investigation").lower() + ": " + e.reason  # type: ignore[attr-defined]
            elif kind == "BudgetExhausted" and not ended:
                ended = f"budget exhausted: {e.limit}"  # type: ignore[attr-defined]
        runs.append({"run": name, "steps": list(calls.values()), "conclusion": ended})
    return runs


def actions(world: World, incident_id: UUID) -> list[dict[str, Any]]:
    """Every action proposed for the incident, with what became of it."""
    return [
        {
            "id": str(a.id),
            "action": a.action_id,
            "kind": a.kind,
            "runs": a.plan.summary if a.plan else "",
            "risk": a.risk,
            "status": a.status,
            "policy": list(a.reasons),
            "approvals": [
                {"by": p.by, "role": p.role, "via": p.channel, "at": p.at.isoformat()}
                for p in a.approvals
            ],
            "decided_by": a.decided_by,
            "reason": a.reason,
            "drift_check": list(a.drift),
            "outcome": a.detail,
            "verification": a.verification,
            "rollback": a.rollback,
            "escalated": a.escalated,
            "proposed_at": a.proposed_at.isoformat(),
            "finished_at": _ts(a.finished_at),
        }
        for a in world.actions.for_incident(incident_id)
    ]


def notifications(world: World, incident_id: UUID) -> list[dict[str, Any]]:
    """Which channels show the incident, what was sent there, first and last."""
    return [
        {
            "channel": t.channel,
            "platform": t.platform,
            "sent": list(t.keys),
            "first_sent_at": t.first_sent_at.isoformat(),
            "last_sent_at": t.last_sent_at.isoformat(),
        }
        for t in world.notifications.threads_of(incident_id)
    ]


def people(streams: Streams) -> list[str]:
    """Everyone who did something, in the order they first did it."""
    seen: dict[str, None] = {}
    for _, evs in streams:
        for e in evs:
            by = getattr(e, "by", "") or getattr(e, "created_by", "")
            if isinstance(by, str) and by:
                seen.setdefault(by, None)
    return list(seen)


def story(world: World, incident_id: UUID, streams: Streams) -> dict[str, Any]:
    """The whole story as one JSON-able document."""
    return {
        "story": [
            {
                "at": r.at.isoformat(),
                "stream": r.stream,
                "kind": r.kind,
                "text": r.text,
                "detail": r.detail,
            }
            for r in timeline(streams)
        ],
        "agent": agent_steps(streams),
        "actions": actions(world, incident_id),
        "notifications": notifications(world, incident_id),
        "people": people(streams),
        "figures": figures(streams),
    }


def markdown(view: dict[str, Any]) -> str:
    """A postmortem draft: summary, figures, people, actions, agent steps and the timeline."""
    fig = view.get("figures", {})

    def dur(key: str) -> str:
        s = fig.get(key)
        return "-" if s is None else format_duration_s(s)

    lines = [
        f"# {view['title']} ({view['state']})",
        "",
        f"- Incident: `{view['id']}`",
        f"- Group: `{view['group_key']}`",
        f"- Severity: {view['severity']}",
        f"- Opened: {view['opened_at']}",
        f"- Resolved: {view.get('resolved_at') or '-'}",
        f"- Time to acknowledge: {dur('time_to_acknowledge')}",
        f"- Time to resolve: {dur('time_to_resolve')}",
        f"- Time to approve: {dur('time_to_approve')}",
        f"- Reopened: {fig.get('reopened', 0)} time(s)",
        f"- People: {', '.join(view.get('people', [])) or '-'}",
        "",
        "## Actions",
        "",
    ]
    for a in view.get("actions", []):
        who = ", ".join(f"{p['by']} via {p['via']}" for p in a["approvals"]) or a["decided_by"]
        lines.append(
            f"- **{a['action']}** `{a['runs'] or a['kind']}`: {a['status']}"
            + (f" (by {who})" if who else "")
            + (f"; outcome: {a['outcome']}" if a["outcome"] else "")
            + (f"; verification: {a['verification']}" if a["verification"] else "")
        )
    if not view.get("actions"):
        lines.append("None proposed.")
    lines += ["", "## Agent", ""]
    for run in view.get("agent", []):
        lines.append(f"- {run['run']}: {run['conclusion'] or 'no conclusion'}")
        for s in run["steps"]:
            lines.append(f"  - {s['tool']} [{s.get('status', '?')}]: {s.get('summary', '')}")
    if not view.get("agent"):
        lines.append("No investigation.")
    lines += ["", "## Timeline", ""]
    count, shown = view.get("alerts_count"), len(view.get("alerts", []))
    if count is not None and count > shown:
        lines += [
            f"{shown} of {count} alerts listed"
            f" (the rest: `/api/v1/incidents/{view['id']}/alerts`).",
            "",
        ]
    if view.get("alert_events_left_out"):
        lines += [f"{view['alert_events_left_out']} older alert events left out.", ""]
    lines += ["| at | what | detail |", "| --- | --- | --- |"]
    for r in view.get("story", []):
        detail = _cell(r["detail"])[:200]
        lines.append(f"| {r['at']} | {_cell(r['text'])} | {detail} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|")


def format_duration_s(seconds: float) -> str:
    """`format_duration` for seconds."""
    return format_duration(timedelta(seconds=seconds))
