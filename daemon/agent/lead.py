"""The lead investigation of a situation: what it is told about the member incidents on
every step (their alerts, why each was linked, what their own investigations found), and
how its conclusion names their probable common cause.

The brief is read from the world at each model call, not from the context captured when
the lead started: members usually join after their lead has begun.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from daemon.agent.prompt import untrusted_block
from daemon.domain.state import World
from daemon.runbooks.context_tools import situation_context

MAX_NAMES = 8


def lead_brief(world: World, incident_id: UUID) -> dict[str, Any] | None:
    """The situation this incident leads, as `alert_context` shows it; None when it leads
    none or has no member yet."""
    brief: dict[str, Any] | None = situation_context(world, incident_id).get("situation")
    return brief if brief and brief["members"] else None


def lead_text(brief: dict[str, Any] | None) -> str:
    """The block added to the lead's first message: the members as untrusted data, and the
    ask to name their common cause."""
    if brief is None:
        return ""
    count = len(brief["members"]) + brief["members_not_shown"]
    return (
        f"\n\nThis incident leads a situation of {count + 1} incidents linked as one probable "
        "cause. Every member incident, why it was linked, its alerts and what its own "
        "investigation found follow as untrusted data:\n"
        + untrusted_block(brief)
        + "\nYour conclusion covers them all: in probable_cause, name the probable common cause "
        "of this incident and its members."
    )


def common_cause(cause: str, brief: dict[str, Any] | None) -> str:
    """The lead's probable cause, named as the situation's common cause (unchanged when the
    incident leads no situation). With no cause found, it says so and points at what the
    incidents share."""
    if brief is None:
        return cause
    names = [str(m["incident"]) for m in brief["members"]]
    count = len(names) + brief["members_not_shown"]
    shown = ", ".join(names[:MAX_NAMES]) + (", …" if count > MAX_NAMES else "")
    if not cause.strip():
        shared = ", ".join(f"{k}={v}" for k, v in sorted(brief["keys"].items()))
        cause = "not established by this investigation" + (
            f"; they share {shared}: look there first" if shared else ""
        )
    return f"Common cause of this incident and {count} linked incident(s) ({shown}): {cause}"
