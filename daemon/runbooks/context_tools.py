"""Tools that read watchkeeper's own state: the incident's alerts, and how past incidents ended."""

from __future__ import annotations

from itertools import islice
from typing import Any

from daemon.domain.state import World
from daemon.runbooks.outcomes import runbook_outcomes
from daemon.runbooks.tools import (
    AlertContextArgs,
    PastIncidentsArgs,
    ToolContext,
    ToolResult,
    error,
)

MAX_ALERTS = 50


def common_labels(world: World, incident_id: Any) -> dict[str, str]:
    """Labels shared by all of an incident's firing alerts (all of its alerts if none fire),
    plus its group labels."""
    inc = world.incidents.get(incident_id) or world.closed.get(incident_id)
    labels = dict(inc.group_labels) if inc else {}
    shared = world.shared_labels(incident_id, firing_only=True)
    if shared is None:
        shared = world.shared_labels(incident_id)
    return labels | (shared or {})


def incident_context(world: World, incident_id: Any) -> dict[str, Any]:
    """The incident and its alerts (labels and annotations verbatim: untrusted data)."""
    inc = world.incidents.get(incident_id) or world.closed.get(incident_id)
    if inc is None:
        return {}
    alerts = list(islice(world.member_alerts(incident_id), MAX_ALERTS))
    return {
        "incident": {
            "id": str(inc.id),
            "title": inc.title,
            "state": inc.state,
            "severity": inc.severity,
            "opened_at": inc.opened_at.isoformat(),
            "firing": inc.firing,
            "alerts_total": inc.alerts_total,
            "reopen_count": inc.reopen_count,
        },
        "labels": common_labels(world, incident_id),
        "alerts": [
            {
                "status": a.alert.status,
                "labels": a.alert.labels,
                "annotations": a.alert.annotations,
                "starts_at": a.alert.starts_at.isoformat(),
                "source": a.alert.source,
            }
            for a in alerts
        ],
        "alerts_not_shown": max(0, len(world.members.get(incident_id, ())) - MAX_ALERTS),
        **situation_context(world, incident_id),
    }


def situation_context(world: World, incident_id: Any) -> dict[str, Any]:
    """For the lead of a situation: every member incident, why it was linked, its alerts
    and what its own investigation found. Empty for any other incident."""
    s = world.situations.of_incident(incident_id)
    if s is None or s.lead != incident_id:
        return {}
    members = []
    for iid, link in s.members.items():
        if iid == incident_id:
            continue
        inc = world.incidents.get(iid) or world.closed.get(iid)
        findings = [
            {"runbook": r.runbook_id, "status": r.status, "probable_cause": r.probable_cause,
             "summary": r.summary}
            for r in world.investigations.for_incident(iid)
            if r.probable_cause or r.summary
        ]
        members.append(
            {
                "incident": inc.title if inc else str(iid),
                "state": inc.state if inc else "unknown",
                "linked_by": link.rule,
                "why": link.reason,
                "alerts": [
                    a.alert.labels for a in islice(world.member_alerts(iid), MAX_ALERTS // 10)
                ],
                "findings": findings,
            }
        )
    return {
        "situation": {
            "id": str(s.id),
            "keys": s.keys,
            "note": "these incidents were linked to this one; name their probable common cause",
            "members": members[:MAX_ALERTS],
            "members_not_shown": max(0, len(members) - MAX_ALERTS),
        }
    }


class AlertContext:
    """`alert_context`: the incident and its alerts as they are now."""

    name = "alert_context"
    args = AlertContextArgs

    async def run(self, args: AlertContextArgs, ctx: ToolContext) -> ToolResult:
        """Read the incident from the world."""
        data = incident_context(ctx.world, ctx.incident_id)
        if not data:
            return error(ctx.now, "the incident is no longer in the hot set", status="no_data")
        inc = data["incident"]
        names = sorted({a["labels"].get("alertname", "") for a in data["alerts"]})
        return ToolResult(
            status="ok",
            observed_at=ctx.now,
            summary=(
                f"incident {inc['title']} is {inc['state']} (severity {inc['severity']}), "
                f"{inc['firing']} of {inc['alerts_total']} alerts firing: {', '.join(names)}"
            ),
            facts={
                "firing": inc["firing"],
                "alerts_total": inc["alerts_total"],
                "state": inc["state"],
            },
            data=data,
        )


class PastIncidents:
    """`past_incidents`: earlier runs of the same runbook or incidents with the same labels."""

    name = "past_incidents"
    args = PastIncidentsArgs

    async def run(self, args: PastIncidentsArgs, ctx: ToolContext) -> ToolResult:
        """Match by runbook, or by alertname and instance, newest first."""
        world = ctx.world
        me = world.incidents.get(ctx.incident_id) or world.closed.get(ctx.incident_id)
        key = {k: ctx.labels.get(k) for k in ("alertname", "instance") if ctx.labels.get(k)}
        found: dict[Any, dict[str, Any]] = {}
        book = world.investigations
        for inv in sorted(
            (*book.past.values(), *book.active.values()), key=lambda i: i.started_at, reverse=True
        ):
            if inv.incident_id == ctx.incident_id or inv.runbook_id != ctx.runbook_id:
                continue
            if not inv.finished or inv.incident_id in found:
                continue
            found[inv.incident_id] = {
                "incident_id": str(inv.incident_id),
                "runbook": f"{inv.runbook_id}@{inv.runbook_version}",
                "investigated_at": inv.started_at.isoformat(),
                "summary": inv.summary[:400],
                "probable_cause": inv.probable_cause[:300],
                "proposed": [f"{p.action_id} {p.params}" for p in inv.proposals],
                "escalated": inv.escalated,
            }
        for inc in (*world.closed.values(), *world.incidents.values()):
            if me is not None and inc.id == me.id:
                continue
            same = bool(key) and all(
                inc.group_labels.get(k) == v for k, v in key.items() if k in inc.group_labels
            )
            if inc.id in found or (same and any(k in inc.group_labels for k in key)):
                entry = found.setdefault(inc.id, {"incident_id": str(inc.id)})
                entry |= {
                    "title": inc.title,
                    "opened_at": inc.opened_at.isoformat(),
                    "state": inc.state,
                    "resolved_by": inc.resolved_by
                    or ("alerts resolved" if inc.resolved_at else ""),
                    "minutes_open": round(
                        ((inc.resolved_at or inc.updated_at) - inc.opened_at).total_seconds() / 60,
                        1,
                    ),
                    "reopened": inc.reopen_count,
                }
        outcomes = runbook_outcomes(
            world, ctx.runbook_id, labels=ctx.labels, exclude_incident=ctx.incident_id
        )
        for inc_id, outs in outcomes.items():
            entry = found.setdefault(inc_id, {"incident_id": str(inc_id)})
            entry["actions"] = [
                {
                    "action": o.action_id,
                    "params": o.params,
                    "status": o.status,
                    "approved": o.approved,
                    "decided_by": o.decided_by,
                    "reason": o.reason[:200],
                    "ran": o.ran,
                    "verified": o.verified,
                    "came_back_within_a_day": o.came_back,
                    "runbook_version": o.runbook_version,
                }
                for o in outs
            ]
            entry["outcome"] = " | ".join(o.line() for o in outs)
            entry.setdefault("investigated_at", outs[0].proposed_at.isoformat())
        rows = sorted(
            found.values(),
            key=lambda r: str(r.get("opened_at") or r.get("investigated_at") or ""),
            reverse=True,
        )[: args.limit]
        if not rows:
            return ToolResult(
                status="no_data",
                observed_at=ctx.now,
                summary="no earlier incidents with this runbook or these labels in the hot set",
                facts={"count": 0},
            )
        lines = [
            f"{r.get('opened_at', r.get('investigated_at', '?'))[:16]} {r.get('title', '')} "
            f"{r.get('state', '')}: {r.get('probable_cause') or r.get('summary', '')[:120]}"
            + (f" [actions: {r['outcome']}]" if r.get("outcome") else "")
            for r in rows
        ]
        acted = [a for r in rows for a in r.get("actions", [])]
        return ToolResult(
            status="ok",
            observed_at=ctx.now,
            summary=f"{len(rows)} earlier incident(s): " + " | ".join(lines),
            facts={
                "count": len(rows),
                "actions": len(acted),
                "verified": sum(1 for a in acted if a["verified"] is True),
                "came_back": sum(1 for a in acted if a["came_back_within_a_day"] is True),
            },
            data=rows,
        )
