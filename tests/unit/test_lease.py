"""Per-target action leases in the pure core: a second action on a busy host waits with a
deadline, goes once the first finishes, or is cancelled with the reason and escalated."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from test_actions_domain import LABELS, PLAN, T0, Story

from daemon.domain import Alert, ReceiveAlert, ResolveIncident, fingerprint
from daemon.domain.action_model import (
    ActionCancelled,
    ApproveAction,
    DecidePolicy,
    DispatchAction,
    RecordOutcome,
)
from daemon.domain.investigation_model import (
    ActionSpec,
    Budget,
    ProposeAction,
    StartInvestigation,
    investigation_id_for,
)
from daemon.domain.lease import LEASE_DEADLINE, ActionLeaseWaiting, action_target
from daemon.domain.policy import PolicyRules
from daemon.domain.situation_model import LinkIncidents
from daemon.domain.timer_model import FireDeadline

RULES = PolicyRules()
M = timedelta(minutes=1)


def two_approved() -> tuple[Story, UUID, UUID]:
    """One incident on web1 with two approved actions."""
    s = Story()
    inv = next(iter(s.world.investigations.active))
    v = s.world.investigations.active[inv].version
    [second, _] = s.do(
        ProposeAction(inv, v, "c2", "restart_service", {"unit": "php-fpm.service"}, "also", ())
    )
    b: UUID = second.proposal_id  # type: ignore[attr-defined]
    for aid in (s.id, b):
        s.do(DecidePolicy(aid, RULES, PLAN, labels=LABELS))
        s.do(ApproveAction(aid, "alice", "approver", "api"))
    return s, s.id, b


def dispatch(s: Story, aid: UUID, at: Any = T0) -> list[str]:
    return s.types(DispatchAction(aid, RULES, f"{aid}:dispatch"), at)


def test_the_target_is_the_host_of_the_incident() -> None:
    s, a, _ = two_approved()
    assert action_target(s.world.actions.active[a]) == "web1"


def test_second_action_waits_then_goes_when_the_first_finishes() -> None:
    s, a, b = two_approved()
    assert dispatch(s, a)[-1] == "ActionDispatched"
    assert dispatch(s, b, T0 + M) == ["ActionLeaseWaiting", "DeadlineSet"]
    waiting = s.events[-2]
    assert isinstance(waiting, ActionLeaseWaiting)
    assert waiting.target == "web1"
    assert waiting.held_by == a
    assert "systemctl restart nginx.service" in waiting.holder
    assert waiting.until == T0 + M + 10 * M
    assert s.world.actions.active[b].status == "approved"
    # Asked again while the host is busy: refused with the reason, nothing recorded.
    r = s.refused(DispatchAction(b, RULES, f"{b}:dispatch"), T0 + 2 * M)
    assert "waiting for web1" in r.reason
    s.do(RecordOutcome(a, "succeeded", "restarted"), T0 + 3 * M)
    assert dispatch(s, b, T0 + 4 * M)[-1] == "ActionDispatched"
    # The lease wait is in the log: a rebuilt world knows it.
    assert s.rebuilt().situations.waiting == s.world.situations.waiting


def test_second_action_is_cancelled_and_escalated_when_the_wait_runs_out() -> None:
    s, a, b = two_approved()
    dispatch(s, a)
    dispatch(s, b)
    deadline = s.world.deadlines.about(b, LEASE_DEADLINE)[0]
    assert s.types(FireDeadline(deadline.id), T0 + 10 * M) == ["DeadlineFired"]
    assert dispatch(s, b, T0 + 10 * M) == ["ActionCancelled", "ActionEscalated"]
    cancelled = next(e for e in s.events if isinstance(e, ActionCancelled))
    assert cancelled.reason.startswith("web1 still leased after waiting 10m")
    assert str(a) in cancelled.reason
    assert s.world.actions.active[b].status == "cancelled"
    assert "a person decides" in s.world.actions.active[b].escalated


def test_an_action_of_unknown_outcome_holds_its_host_while_the_incident_is_open() -> None:
    s, a, b = two_approved()
    dispatch(s, a)
    s.do(RecordOutcome(a, "unknown", "timed out"))
    assert dispatch(s, b) == ["ActionLeaseWaiting", "DeadlineSet"]
    s.do(ResolveIncident(s.incident, "alice"), T0 + M)
    # The incident is over: the lease is free, and the drift check cancels the action.
    assert dispatch(s, b, T0 + 2 * M) == ["DriftChecked", "ActionCancelled"]


def test_actions_on_other_hosts_do_not_wait() -> None:
    s, a, b = two_approved()
    dispatch(s, a)
    other = {**LABELS, "instance": "web2:9100"}
    s.world.actions.active[b] = s.world.actions.active[b].model_copy(update={"labels": other})
    assert dispatch(s, b)[-1] == "ActionDispatched"


def test_conflicting_proposals_in_one_situation_go_to_a_person_together() -> None:
    s = Story(risk="low")
    other = {**LABELS, "alertname": "NginxDown"}
    s.do(ReceiveAlert(Alert(fingerprint=fingerprint(other), labels=other, starts_at=T0)))
    second = next(i for i in s.world.incidents if i != s.incident)
    s.do(LinkIncidents((s.incident, second), "alice", reason="same host"))
    inv = investigation_id_for(second, "host-high-cpu", 1)
    spec = ActionSpec(id="reboot", kind="systemd", risk="low", params_schema={})
    s.do(
        StartInvestigation(
            inv, second, 1, "host-high-cpu", "3", "deterministic", "", "h", Budget(), (spec,)
        )
    )
    v = s.world.investigations.active[inv].version
    [proposed, _] = s.do(ProposeAction(inv, v, "c1", "reboot", {}, "reboot the host", ()))
    b: UUID = proposed.proposal_id  # type: ignore[attr-defined]
    auto = PolicyRules(mode="autonomous")
    # Alone, a low-risk action would run at once; here each waits for a person.
    for aid, rival in ((s.id, b), (b, s.id)):
        assert s.types(DecidePolicy(aid, auto, PLAN, labels=LABELS))[:2] == [
            "PolicyDecided",
            "ApprovalRequested",
        ]
        entry = s.world.actions.active[aid]
        assert entry.status == "pending_approval"
        assert f"action {rival}" in entry.reasons[-1]
        assert entry.reasons[-1].endswith("a person decides both together")


def test_a_lone_low_risk_action_still_runs_by_itself() -> None:
    s = Story(risk="low")
    assert s.types(DecidePolicy(s.id, PolicyRules(mode="autonomous"), PLAN, labels=LABELS)) == [
        "PolicyDecided"
    ]
    assert s.entry.status == "approved"
