"""What a notification says about an incident, built from the world; pure, no I/O.

The agent's conclusions and proposed actions are read from the world when they exist
(`world.investigations`), by shape rather than by import, so notifications work with or
without the investigation stage.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from daemon.domain.durations import format_duration
from daemon.domain.escalation import routing_labels
from daemon.domain.notification_model import HeldNotice
from daemon.domain.state import Incident, World
from daemon.notify.pipeline import (
    Button,
    HeldLine,
    Message,
    Proposal,
)

EVENT_TYPES = {
    "opened": "incident_opened",
    "reopened": "incident_opened",
    "escalated": "escalated",
    "acknowledged": "acknowledged",
    "unacknowledged": "unacknowledged",
    "resolved": "resolved",
    "action_proposed": "action_proposed",
    "approval_requested": "approval_requested",
    "action_executed": "action_executed",
    "action_failed": "action_failed",
    "approval_reminder": "approval_requested",
    "action_approved": "action_approved",
    "action_rejected": "action_rejected",
    "approval_expired": "approval_expired",
    "action_cancelled": "action_cancelled",
    "action_verified": "action_verified",
    "action_rolled_back": "action_rolled_back",
    "investigation_escalated": "investigation_escalated",
    "concluded": "investigation_concluded",
    "summary": "notifications_held",
    "situation": "situation_changed",
}
SEVERITY_COLORS = {
    "critical": "#E01E5A",
    "error": "#E01E5A",
    "warning": "#ECB22E",
    "info": "#36C5F0",
}
STATE_COLORS = {"acknowledged": "#ECB22E", "resolved": "#2EB67D", "closed": "#2EB67D"}
ALERTS_LISTED = 50


def truncate(text: str, limit: int, marker: str = "…") -> str:
    """`text` cut to at most `limit` characters, ending with `marker` when cut."""
    if len(text) <= limit:
        return text
    if limit <= len(marker):
        return text[:limit]
    return text[: limit - len(marker)] + marker


def digest(message: Message) -> str:
    """A hash of what a message shows (not why it was sent), to skip identical edits."""
    shown = message.model_dump(mode="json", exclude={"kind", "event_type", "note", "data"})
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:16]


def incident_url(console_url: str, incident_id: UUID) -> str:
    """Link to an incident in the console ("" when no console URL is configured)."""
    return f"{console_url.rstrip('/')}/incidents/{incident_id}" if console_url else ""


def _findings(world: object, incident_id: UUID) -> tuple[str, str, list[Proposal]]:
    """The latest investigation's summary, probable cause and proposals, if any exist."""
    invs: Any = getattr(world, "investigations", None)
    runs = list(invs.for_incident(incident_id)) if hasattr(invs, "for_incident") else []
    # The actions stage's state (world.actions), when present: status and exact command.
    book: Any = getattr(world, "actions", None)
    summary = cause = ""
    proposals: list[Proposal] = []
    for inv in runs:
        summary = str(getattr(inv, "summary", "") or summary)
        cause = str(getattr(inv, "probable_cause", "") or cause)
        for p in getattr(inv, "proposals", ()) or ():
            params = getattr(p, "params", {}) or {}
            kind = str(getattr(p, "kind", ""))
            runs_text = kind + "(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"
            entry = book.get(p.proposal_id) if hasattr(book, "get") else None
            plan = getattr(entry, "plan", None)
            host = str(getattr(plan, "host", "") or getattr(entry, "target", "") or "")
            if host:
                runs_text += f" on {host}"
            planned = str(getattr(plan, "summary", "") or "")
            if planned and host:
                planned += f" on {host}"
            proposals.append(
                Proposal(
                    action_id=str(getattr(p, "proposal_id", "") or getattr(p, "action_id", "")),
                    kind=str(getattr(p, "action_id", kind)),
                    runs=planned or runs_text,
                    risk=str(getattr(p, "risk", "")),
                    status=str(getattr(entry, "status", "") or getattr(p, "status", "proposed")),
                    rationale=str(getattr(p, "rationale", "")),
                )
            )
    return summary, cause, proposals


# Lifecycle kinds set the headline; a later stage's follow-up (an action, a conclusion)
# shows the incident's state instead, so the header never reads "Investigated" while the
# incident still fires with nobody on it.
_LIFECYCLE_LEADS = {
    "opened": "🔥 Firing",
    "reopened": "🔁 Reopened",
    "escalated": "⏫ Escalated",
    "acknowledged": "👀 Acknowledged",
    "resolved": "✅ Resolved",
}
_STATE_LEADS = {
    "open": "🔥 Firing",
    "acknowledged": "👀 Acknowledged",
    "resolved": "✅ Resolved",
    "closed": "✅ Resolved",
}
# Labels that say where an alert fires, in the order they are preferred for a headline.
WHERE_LABELS = ("instance", "host", "node", "pod", "service", "job")


def where(world: World, inc: Incident) -> str:
    """Where the incident's alerts fire (`web1`, `3 instances`), "" when no label says."""
    shared = world.shared_labels(inc.id) or {}
    for name in WHERE_LABELS:
        if shared.get(name):
            return shared[name]
    for name in WHERE_LABELS:
        values = {
            a.alert.labels[name] for a in world.member_alerts(inc.id) if name in a.alert.labels
        }
        if len(values) > 1:
            return f"{len(values)} {name}s"
    return ""


def _headline(kind: str, inc: Incident, place: str) -> str:
    sev = f"[{inc.severity.upper()}] " if inc.severity != "none" else ""
    lead = _LIFECYCLE_LEADS.get(kind) or _STATE_LEADS.get(inc.state, "📣 Update")
    if inc.state == "resolved" and kind in ("escalated", "acknowledged"):
        lead += " (resolved)"
    on = f" on {place}" if place else ""
    return f"{lead}: {sev}{inc.title or inc.group_key}{on}"


def incident_message(
    world: World,
    inc: Incident,
    kind: str,
    now: datetime,
    *,
    console_url: str = "",
    note: str = "",
    escalation: dict[str, Any] | None = None,
    interactive: bool = True,
) -> Message:
    """The message for `kind` (opened, escalated, acknowledged, resolved…) about `inc`.

    `interactive` is whether a Slack app answers buttons; without one none are shown.
    """
    alerts = sorted(world.incident_alerts(inc.id), key=lambda a: a.alert.starts_at)
    firing_since = min((a.alert.starts_at for a in alerts if a.firing), default=inc.opened_at)
    ends = inc.resolved_at if inc.state in ("resolved", "closed") and inc.resolved_at else now
    lasted = format_duration(ends - firing_since)
    first = alerts[0].alert if alerts else None
    summary = ""
    if first is not None:
        ann = first.annotations
        summary = ann.get("summary") or ann.get("description") or ann.get("message") or ""
        if ann.get("summary") and ann.get("description"):
            summary += "\n" + ann["description"]
    agent_summary, cause, proposals = _findings(world, inc.id)
    url = incident_url(console_url, inc.id)
    facts: list[tuple[str, str]] = [
        ("Severity", inc.severity),
        ("State", inc.state + (f" by {inc.acknowledged_by}" if inc.acknowledged_by else "")),
        ("Firing for" if inc.state not in ("resolved", "closed") else "Lasted", lasted),
        ("Alerts", f"{inc.firing} firing of {inc.alerts_total}"),
        ("Group", inc.group_key),
    ]
    situation = situation_data(world, inc.id)
    if situation:
        facts.append(("Situation", situation["text"]))
    if escalation:
        facts.append(("Escalation", f"{escalation['policy']} level {int(escalation['level']) + 1}"))
    buttons: list[Button] = []
    if interactive and inc.state == "open":
        buttons.append(
            Button(action="ack", label="Acknowledge", value=str(inc.id), style="primary")
        )
    for p in proposals if interactive else ():
        if p.status == "pending_approval":
            value = json.dumps({"incident": str(inc.id), "proposal": p.action_id})
            buttons.append(
                Button(action="approve", label=f"Approve {p.kind}", value=value, style="primary")
            )
            buttons.append(
                Button(action="reject", label=f"Reject {p.kind}", value=value, style="danger")
            )
    data: dict[str, Any] = {
        "incident": {
            **inc.model_dump(mode="json"),
            "url": url,
            "labels": routing_labels(world, inc),
            "alerts": [
                {
                    "fingerprint": a.alert.fingerprint,
                    "status": a.alert.status,
                    "labels": a.alert.labels,
                    "annotations": a.alert.annotations,
                    "starts_at": a.alert.starts_at.isoformat(),
                    "generator_url": a.alert.generator_url,
                }
                for a in alerts[:ALERTS_LISTED]
            ],
        },
        "escalation": escalation,
        "situation": situation or None,
        "investigation": {"summary": agent_summary, "probable_cause": cause}
        if agent_summary or cause
        else None,
        "actions": [p.model_dump() for p in proposals],
    }
    return Message(
        kind=kind,
        event_type=EVENT_TYPES.get(kind, kind),
        incident_id=inc.id,
        headline=_headline(kind, inc, where(world, inc)),
        title=inc.title or inc.group_key,
        severity=inc.severity,
        state=inc.state,
        color=STATE_COLORS.get(inc.state) or SEVERITY_COLORS.get(inc.severity, "#808080"),
        summary=summary,
        note=note,
        facts=tuple(facts),
        labels=routing_labels(world, inc),
        probable_cause=cause,
        agent_summary=agent_summary,
        proposals=tuple(proposals),
        buttons=tuple(buttons),
        url=url,
        data=data,
    )


def situation_data(world: World, incident_id: UUID) -> dict[str, Any]:
    """The situation an incident is in, for its messages: members, lead, why linked."""
    s = world.situations.of_incident(incident_id)
    if s is None:
        return {}
    titles = []
    for iid in s.members:
        inc = world.incidents.get(iid) or world.closed.get(iid)
        titles.append((inc.title if inc else str(iid)) + (" (lead)" if iid == s.lead else ""))
    keys = ", ".join(f"{k}={v}" for k, v in s.keys.items())
    return {
        "id": str(s.id),
        "lead_incident_id": str(s.lead),
        "keys": s.keys,
        "members": [str(i) for i in s.members],
        "text": f"{len(s.members)} incidents" + (f" on {keys}" if keys else "")
        + ": " + ", ".join(titles[:20]) + (" …" if len(titles) > 20 else ""),
    }


def summary_message(
    channel: str, held: Iterable[HeldNotice], total: int, window: str, console_url: str = ""
) -> Message:
    """The storm summary: how many messages a channel did not get, and which."""
    lines = tuple(
        HeldLine(
            title=h.title,
            kind=h.kind,
            url=incident_url(console_url, h.incident_id) if h.incident_id else "",
        )
        for h in held
    )
    return Message(
        kind="summary",
        event_type=EVENT_TYPES["summary"],
        headline=f"🌪 Storm control: {total} notification(s) held back",
        title="Held-back notifications",
        summary=(
            f"{total} message(s) for #{channel} were held back to keep it readable "
            f"(at most the configured number per {window}). The console has the full list."
        ),
        held=lines,
        held_total=total,
        url=console_url,
        color="#808080",
        data={
            "channel": channel,
            "held_total": total,
            "held": [h.model_dump(mode="json") for h in lines],
        },
    )
