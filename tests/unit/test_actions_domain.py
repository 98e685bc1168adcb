"""The action lifecycle in the pure core: approvals (two people, expiry, refusals), the kill
switch, the drift check, exactly-once dispatch, unknown outcomes, verification and rollback.
Time is passed in; the world is rebuilt from the events at the end of each story."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from daemon.domain import Alert, ReceiveAlert, Rejected, World, decide, evolve, fingerprint
from daemon.domain.action_model import (
    ActionPlan,
    ApproveAction,
    CancelAction,
    DecidePolicy,
    DispatchAction,
    DispatchRollback,
    ExpireApproval,
    MarkOutcomeUnknown,
    PauseExecution,
    RecordOutcome,
    RecordVerification,
    RejectAction,
    ResumeExecution,
    VerifySpec,
)
from daemon.domain.events import DomainEvent
from daemon.domain.investigation_model import (
    ActionSpec,
    Budget,
    EvidenceRef,
    ProposeAction,
    StartInvestigation,
    investigation_id_for,
)
from daemon.domain.policy import PolicyRules, RateLimit
from daemon.domain.timer_model import FireDeadline, deadline_id

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LABELS = {"alertname": "HostHighCpuLoad", "instance": "web1", "severity": "critical"}
PLAN = ActionPlan(
    kind="systemd",
    action_id="restart_service",
    summary="systemctl restart nginx.service",
    targets=("nginx.service",),
    spec={"argv": ["/usr/bin/systemctl", "restart", "--", "nginx.service"]},
    verb="restart",
)
ROLLBACK = PLAN.model_copy(update={"action_id": "start_service", "summary": "systemctl start x"})


class Story:
    """A world with one open incident and one proposed action; every event is kept."""

    def __init__(self, risk: str = "high", evidence_at: datetime = T0) -> None:
        self.world = World()
        self.events: list[DomainEvent] = []
        alert = Alert(
            fingerprint=fingerprint(LABELS),
            labels=LABELS,
            starts_at=T0,
            ends_at=T0 + timedelta(hours=2),
        )
        self.do(ReceiveAlert(alert))
        self.incident = next(iter(self.world.incidents))
        inv = investigation_id_for(self.incident, "host-high-cpu", 1)
        spec = ActionSpec(id="restart_service", kind="systemd", risk=risk, params_schema={})  # type: ignore[arg-type]
        self.do(
            StartInvestigation(
                inv,
                self.incident,
                1,
                "host-high-cpu",
                "3",
                "deterministic",
                "",
                "h",
                Budget(),
                (spec,),
            )
        )
        v = self.world.investigations.active[inv].version
        evidence = (
            EvidenceRef(
                call_id="d-cpu", tool="promql_instant", summary="97%", observed_at=evidence_at
            ),
        )
        [proposed, _] = self.do(
            ProposeAction(
                inv, v, "c1", "restart_service", {"unit": "nginx.service"}, "hot", evidence
            )
        )
        self.id: UUID = proposed.proposal_id  # type: ignore[attr-defined]

    def do(self, cmd: Any, at: datetime = T0) -> list[DomainEvent]:
        evs = decide(self.world, cmd, at)
        self.events += evs
        return evs

    def types(self, cmd: Any, at: datetime = T0) -> list[str]:
        return [type(e).__name__ for e in self.do(cmd, at)]

    def refused(self, cmd: Any, at: datetime = T0) -> Rejected:
        with pytest.raises(Rejected) as e:
            decide(self.world, cmd, at)
        return e.value

    @property
    def entry(self) -> Any:
        return self.world.actions.get(self.id)

    def rebuilt(self) -> World:
        w = World()
        for ev in self.events:
            evolve(ev, w)
        return w


def policy(s: Story, rules: PolicyRules | None = None, **kw: Any) -> list[str]:
    return s.types(DecidePolicy(s.id, rules or PolicyRules(), PLAN, labels=LABELS, **kw))


def test_two_different_people_must_approve_a_high_risk_action() -> None:
    s = Story()
    assert policy(s, PolicyRules(approvals_required={"high": 2})) == [
        "PolicyDecided",
        "ApprovalRequested",
        "DeadlineSet",
        "DeadlineSet",
    ]
    assert s.entry.expires_at == T0 + timedelta(minutes=30)
    assert s.types(ApproveAction(s.id, "alice", "approver", "api", "looks right")) == [
        "ActionApproved"
    ]
    assert s.entry.status == "pending_approval"
    again = s.refused(ApproveAction(s.id, "alice", "approver", "cli"))
    assert again.reason == (
        "alice already approved this action; it needs 2 approvals from different people"
    )
    assert s.types(ApproveAction(s.id, "bob", "admin", "console")) == [
        "ActionApproved",
        "DeadlineCancelled",
        "DeadlineCancelled",
    ]
    e = s.entry
    assert (e.status, e.decided_by) == ("approved", "alice, bob")
    assert [(a.by, a.channel, a.comment) for a in e.approvals] == [
        ("alice", "api", "looks right"),
        ("bob", "console", ""),
    ]
    assert not s.world.deadlines.about(s.id)
    double = s.refused(ApproveAction(s.id, "carol", "approver", "api"))
    assert double.reason == "already approved by alice, bob; it is waiting to run"
    assert s.rebuilt().actions == s.world.actions


def test_a_role_without_permission_is_refused_with_403() -> None:
    s = Story()
    policy(s)
    r = s.refused(ApproveAction(s.id, "rita", "responder", "api"))
    assert (r.status, r.reason) == (
        403,
        "rita has role responder; to approve actions needs role approver or higher",
    )
    r = s.refused(RejectAction(s.id, "vic", "viewer", "api", "no"))
    assert r.status == 403
    assert s.entry.status == "pending_approval"


def test_expiry_is_a_durable_deadline_and_means_denied_and_escalated() -> None:
    s = Story()
    policy(
        s,
        PolicyRules(approval_timeout=timedelta(minutes=30), reminder_before=timedelta(minutes=10)),
    )
    reminder = deadline_id("action-reminder", s.id)
    expiry = deadline_id("action-approval", s.id)
    assert s.world.deadlines.pending[reminder].due_at == T0 + timedelta(minutes=20)
    assert s.types(FireDeadline(expiry), T0 + timedelta(minutes=30)) == ["DeadlineFired"]
    late = T0 + timedelta(minutes=30, seconds=1)
    # The deadline fired but the reaction has not expired it yet: approving is still refused.
    r = s.refused(ApproveAction(s.id, "alice", "approver", "api"), late)
    assert r.reason == (
        "the approval window closed at 2026-03-01T12:30:00+00:00; "
        "the action is denied and cannot be approved"
    )
    assert s.types(ExpireApproval(s.id), late) == [
        "ApprovalExpired",
        "DeadlineCancelled",
        "ActionEscalated",
    ]
    assert s.entry.status == "expired"
    assert "nobody approved systemctl restart nginx.service" in s.entry.escalated
    assert s.entry.escalated.endswith("denied — the incident needs a person")
    r = s.refused(ApproveAction(s.id, "alice", "approver", "api"), late)
    assert (
        r.reason == "the approval window closed at 2026-03-01T12:30:00+00:00; the action was denied"
    )
    assert s.rebuilt().actions == s.world.actions


def test_rejection_needs_a_reason_and_is_final() -> None:
    s = Story()
    policy(s)
    assert s.refused(RejectAction(s.id, "alice", "approver", "api", " ")).status == 422
    assert s.types(RejectAction(s.id, "alice", "approver", "api", "not during the sale")) == [
        "ActionRejected",
        "DeadlineCancelled",
        "DeadlineCancelled",
    ]
    r = s.refused(ApproveAction(s.id, "bob", "approver", "api"))
    assert r.reason == "already rejected by alice: not during the sale"


def test_observe_mode_has_nothing_to_approve() -> None:
    s = Story()
    assert policy(s, PolicyRules(mode="observe")) == ["PolicyDecided"]
    assert s.entry.status == "observed"
    assert s.entry.plan == PLAN
    r = s.refused(ApproveAction(s.id, "alice", "approver", "api"))
    assert r.reason.startswith("mode observe: this action is only recorded")


def test_dispatch_happens_once_and_records_the_key_before_the_outcome() -> None:
    s = Story()
    policy(s)
    s.do(ApproveAction(s.id, "alice", "approver", "api"))
    now = T0 + timedelta(minutes=2)
    assert s.types(DispatchAction(s.id, PolicyRules(), "k-1"), now) == [
        "DriftChecked",
        "ActionDispatched",
    ]
    assert (s.entry.status, s.entry.idempotency_key) == ("dispatched", "k-1")
    assert s.entry.drift == (
        "✓ incident is open",
        "✓ 1 alert(s) still firing",
        "✓ evidence d-cpu (promql_instant) observed 2m ago (max 5m)",
    )
    r = s.refused(DispatchAction(s.id, PolicyRules(), "k-2"), now)
    assert r.reason.endswith("is dispatched; only an approved action is dispatched")
    assert len(s.world.actions.dispatches) == 1
    # A restart finds the dispatch without outcome: unknown, escalated, never run again.
    assert s.types(MarkOutcomeUnknown(s.id, "restarted"), now) == [
        "ActionOutcomeUnknown",
        "ActionEscalated",
    ]
    assert s.entry.status == "unknown"
    assert s.refused(RecordOutcome(s.id, "succeeded", "late"), now).reason.endswith(
        "is unknown, not dispatched; outcome not recorded"
    )
    assert s.rebuilt().actions == s.world.actions


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        ("resolved", "✗ incident is resolved"),
        ("stale", "✗ evidence d-cpu (promql_instant) is 6m old; the runbook allows 5m"),
        ("precondition", "✗ precondition no longer holds: cpu.value > 90 (got 12)"),
        ("rate", "✗ rate limit: 1 restart of nginx.service in the last 1h (at most 1)"),
    ],
)
def test_the_drift_check_cancels_with_the_reason(setup: str, problem: str) -> None:
    s = Story()
    policy(s)
    s.do(ApproveAction(s.id, "alice", "approver", "api"))
    now = T0 + timedelta(minutes=1)
    rules = PolicyRules()
    held: bool | None = None
    lines: tuple[str, ...] = ()
    if setup == "resolved":
        from daemon.domain import ResolveIncident

        s.do(ResolveIncident(s.incident, "bob", "fixed by hand"))
    elif setup == "stale":
        now = T0 + timedelta(minutes=6)
    elif setup == "precondition":
        held, lines = False, ("- cpu re-run now [ok]: 12%", "✗ cpu.value > 90 (got 12)")
    else:
        rules = PolicyRules(rate_limits=(RateLimit(max=1, per=timedelta(hours=1)),))
        from daemon.domain.policy import Dispatch

        s.world.actions.dispatches.append(
            Dispatch(action_id="restart_service", kind="systemd", target="nginx.service", at=T0)
        )
    evs = s.do(DispatchAction(s.id, rules, "k", held, lines), now)
    assert [type(e).__name__ for e in evs] == ["DriftChecked", "ActionCancelled"]
    assert problem in evs[0].checks  # type: ignore[attr-defined]
    assert s.entry.status == "cancelled"
    assert s.entry.reason == "drift check: " + problem.removeprefix("✗ ")


def test_the_kill_switch_holds_execution_and_only_admins_use_it() -> None:
    s = Story()
    policy(s)
    assert s.refused(PauseExecution("alice", "approver")).status == 403
    assert s.types(PauseExecution("root", "admin", "bad deploy")) == ["ExecutionPaused"]
    # Approvals still queue while paused.
    s.do(ApproveAction(s.id, "alice", "approver", "api"))
    assert s.entry.status == "approved"
    r = s.refused(DispatchAction(s.id, PolicyRules(), "k"))
    assert r.reason == "execution is paused by root; the action waits for resume"
    assert s.refused(PauseExecution("root", "admin")).reason.startswith(
        "execution is already paused"
    )
    assert s.types(ResumeExecution("root", "admin")) == ["ExecutionResumed"]
    assert s.types(DispatchAction(s.id, PolicyRules(), "k")) == ["DriftChecked", "ActionDispatched"]
    assert s.rebuilt().actions == s.world.actions


def test_verification_failure_rolls_back_and_escalates() -> None:
    s = Story()
    verify = VerifySpec(query="cpu", expect="value < 80", window_seconds=600)
    policy(s, rollback_plan=ROLLBACK, verify=verify)
    s.do(ApproveAction(s.id, "alice", "approver", "api"))
    s.do(DispatchAction(s.id, PolicyRules(), "k"))
    assert s.types(RecordOutcome(s.id, "succeeded", "exited 0")) == ["ActionSucceeded"]
    assert s.entry.status == "verifying"
    assert s.types(RecordVerification(s.id, False, "value < 80 did not hold (got 95)")) == [
        "VerificationFailed"
    ]
    assert s.entry.status == "verification_failed"
    assert s.types(DispatchRollback(s.id, "k:rollback")) == ["RollbackDispatched"]
    assert s.types(RecordOutcome(s.id, "succeeded", "exited 0", rollback=True)) == [
        "RolledBack",
        "ActionEscalated",
    ]
    assert s.entry.status == "rolled_back"
    assert s.entry.escalated == (
        "verification failed: value < 80 did not hold (got 95); rolled back: exited 0"
    )
    assert s.rebuilt().actions == s.world.actions


def test_verification_failure_without_a_rollback_escalates_with_the_note() -> None:
    s = Story()
    verify = VerifySpec(query="cpu", expect="value < 80", window_seconds=600)
    policy(s, verify=verify, rollback_note="A restart cannot be undone.")
    s.do(ApproveAction(s.id, "alice", "approver", "api"))
    s.do(DispatchAction(s.id, PolicyRules(), "k"))
    s.do(RecordOutcome(s.id, "succeeded", "exited 0"))
    assert s.types(RecordVerification(s.id, False, "no data")) == [
        "VerificationFailed",
        "ActionEscalated",
    ]
    assert s.entry.finished
    assert s.entry.escalated == (
        "verification failed: no data; roll back by hand: A restart cannot be undone."
    )


def test_failure_escalates_and_cancel_works_only_before_dispatch() -> None:
    s = Story()
    policy(s, PolicyRules(mode="autonomous", auto_risks=("high",)))
    assert s.entry.status == "approved"
    s.do(DispatchAction(s.id, PolicyRules(), "k"))
    assert s.refused(CancelAction(s.id, "incident resolved")).reason.endswith(
        "it can no longer be cancelled"
    )
    assert s.types(RecordOutcome(s.id, "failed", "exited 1: unit not found")) == [
        "ActionFailed",
        "ActionEscalated",
    ]
    assert s.entry.escalated == "systemctl restart nginx.service failed: exited 1: unit not found"


def test_a_plan_that_cannot_be_made_is_refused_by_policy() -> None:
    s = Story()
    assert s.types(
        DecidePolicy(s.id, PolicyRules(), None, plan_error="/bin/rm is not in actions.shell.allow")
    ) == ["PolicyDecided"]
    assert s.entry.status == "refused"
    assert s.entry.reasons == ("cannot run restart_service: /bin/rm is not in actions.shell.allow",)


def test_the_approval_request_says_which_host_and_the_target_is_kept() -> None:
    s = Story()
    on_web3 = PLAN.model_copy(update={"host": "web-3", "transport": "ssh"})
    evs = s.do(DecidePolicy(s.id, PolicyRules(), on_web3, labels=LABELS))
    asked = next(e for e in evs if type(e).__name__ == "ApprovalRequested")
    assert asked.summary == f"{PLAN.summary} on web-3 (ssh)"  # type: ignore[attr-defined]
    assert s.entry.plan.host == "web-3"
    assert s.rebuilt().actions == s.world.actions
