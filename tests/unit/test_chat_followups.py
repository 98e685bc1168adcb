"""What chat follow-ups say: each names the action, its target, who did what, the outcome and
the verification result. The world is built through the real pure core; time is passed in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from daemon.domain import Alert, ReceiveAlert, ResolveIncident, World, decide, fingerprint
from daemon.domain.action_model import (
    ActionPlan,
    ApproveAction,
    DecidePolicy,
    DispatchAction,
    DispatchRollback,
    ExpireApproval,
    RecordOutcome,
    RecordVerification,
    RejectAction,
    RemindApproval,
    VerifySpec,
)
from daemon.domain.events import DomainEvent
from daemon.domain.investigation_model import (
    ActionSpec,
    Budget,
    ConcludeInvestigation,
    ProposeAction,
    StartInvestigation,
    investigation_id_for,
)
from daemon.domain.policy import PolicyRules
from daemon.domain.timer_model import FireDeadline, deadline_id
from daemon.notify.content import incident_message
from daemon.notify.followups import FOLLOW_UPS, follow_up_note, incident_of

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)
LABELS = {"alertname": "HostHighCpuLoad", "instance": "web1", "severity": "critical"}
PLAN = ActionPlan(
    kind="systemd",
    action_id="restart_service",
    summary="systemctl restart nginx.service",
    targets=("nginx.service",),
    spec={},
    verb="restart",
)
VERIFY = VerifySpec(query="cpu", expect="value < 80", window_seconds=600)
RULES = PolicyRules(approval_timeout=30 * M, reminder_before=10 * M)


class Story:
    """One incident, one investigation, one proposed action; every event kept."""

    def __init__(self) -> None:
        self.world = World()
        self.events: list[DomainEvent] = []
        alert = Alert(fingerprint=fingerprint(LABELS), labels=LABELS, starts_at=T0)
        self.do(ReceiveAlert(alert))
        self.incident = next(iter(self.world.incidents))
        self.inv = investigation_id_for(self.incident, "host-high-cpu", 1)
        spec = ActionSpec(id="restart_service", kind="systemd", risk="high", params_schema={})
        self.do(
            StartInvestigation(
                self.inv,
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
        v = self.world.investigations.active[self.inv].version
        [proposed, *_] = self.do(ProposeAction(self.inv, v, "c1", "restart_service", {}, "hot"))
        self.id: UUID = proposed.proposal_id  # type: ignore[attr-defined]

    def do(self, cmd: Any, at: datetime = T0) -> list[DomainEvent]:
        evs = decide(self.world, cmd, at)
        self.events += evs
        return evs

    def pending(self, rollback: bool = False) -> None:
        self.do(
            DecidePolicy(
                self.id,
                RULES,
                PLAN,
                labels=LABELS,
                verify=VERIFY,
                rollback_plan=PLAN if rollback else None,
            )
        )

    def notes(self, cmd: Any, at: datetime = T0) -> list[str]:
        """The follow-up line of each event `cmd` causes that chat hears about."""
        return [
            follow_up_note(e, self.world)
            for e in self.do(cmd, at)
            if type(e).__name__ in FOLLOW_UPS
        ]


ACT = "restart_service on web1 (`systemctl restart nginx.service`)"


def _approved(s: Story) -> None:
    s.pending()
    s.do(ApproveAction(s.id, "bea", "approver", "slack"))


def _dispatched(s: Story, rollback: bool = False) -> None:
    s.pending(rollback)
    s.do(ApproveAction(s.id, "bea", "approver", "slack"))
    s.do(DispatchAction(s.id, RULES, "k-1"), T0 + M)


def _succeeded(s: Story) -> None:
    _dispatched(s, rollback=True)
    s.do(RecordOutcome(s.id, "succeeded", "exited 0", seconds=1.5), T0 + M)


def _verify_failed(s: Story) -> None:
    _succeeded(s)
    s.do(RecordVerification(s.id, False, "value < 80 did not hold (got 95)"), T0 + 5 * M)
    s.do(DispatchRollback(s.id, "k-1:rollback"), T0 + 5 * M)


CASES: list[tuple[str, Callable[[Story], None], Callable[[Story], Any], datetime, list[str]]] = [
    (
        "approval requested, with the time left",
        lambda s: None,
        lambda s: DecidePolicy(s.id, RULES, PLAN, labels=LABELS),
        T0,
        [f"Approval requested for {ACT}: needs 1 approval(s); 30m left (expires 12:30 UTC)"],
    ),
    (
        "reminder with the time left",
        lambda s: s.pending(),
        lambda s: RemindApproval(s.id),
        T0 + 20 * M,
        [f"Reminder: {ACT} still waits for approval; 10m left (expires 12:30 UTC)"],
    ),
    (
        "an approval names who, how, and what is still needed",
        lambda s: s.pending(),
        lambda s: ApproveAction(s.id, "bea", "approver", "slack", "go"),
        T0,
        [
            f"bea (approver) approved {ACT} via slack (1 of 1); "
            "it runs after a final check of the world: go"
        ],
    ),
    (
        "rejected",
        lambda s: s.pending(),
        lambda s: RejectAction(s.id, "carl", "approver", "console", "not during the sale"),
        T0,
        [f"carl (approver) rejected {ACT} via console; it will not run: not during the sale"],
    ),
    (
        "expired",
        lambda s: (
            s.pending(),
            s.do(FireDeadline(deadline_id("action-approval", s.id)), T0 + 30 * M),
        ),
        lambda s: ExpireApproval(s.id),
        T0 + 31 * M,
        [
            f"Approval for {ACT} expired unanswered at 12:30 UTC; not run",
            f"{ACT} handed to a person: nobody approved systemctl restart nginx.service",
        ],
    ),
    (
        "succeeded, verification pending",
        _dispatched,
        lambda s: RecordOutcome(s.id, "succeeded", "exited 0", seconds=1.5),
        T0 + M,
        [
            f"{ACT} succeeded in 1.5s, approved by bea via slack; exited 0; "
            "verification pending (within 10m)"
        ],
    ),
    (
        "failed",
        _dispatched,
        lambda s: RecordOutcome(s.id, "failed", "exit status 5", seconds=0.2),
        T0 + M,
        [
            f"{ACT} failed after 0.2s, approved by bea via slack: exit status 5",
            f"{ACT} handed to a person: systemctl restart nginx.service failed: exit status 5",
        ],
    ),
    (
        "verified",
        _succeeded,
        lambda s: RecordVerification(s.id, True, "value < 80 held (got 12)"),
        T0 + 5 * M,
        [f"{ACT} verified: value < 80 held (got 12)"],
    ),
    (
        "verification failed, rolling back",
        _succeeded,
        lambda s: RecordVerification(s.id, False, "value < 80 did not hold (got 95)"),
        T0 + 5 * M,
        [f"{ACT} failed verification: value < 80 did not hold (got 95); rolling back"],
    ),
    (
        "rolled back",
        _verify_failed,
        lambda s: RecordOutcome(s.id, "succeeded", "exited 0", rollback=True),
        T0 + 6 * M,
        [
            f"{ACT} rolled back: exited 0",
            f"{ACT} handed to a person: verification failed: value < 80 did not hold (got 95); "
            "rolled back: exited 0",
        ],
    ),
]


@pytest.mark.parametrize(
    ("setup", "command", "at", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_follow_up_lines(
    setup: Callable[[Story], None],
    command: Callable[[Story], Any],
    at: datetime,
    expected: list[str],
) -> None:
    s = Story()
    setup(s)
    notes = s.notes(command(s), at)
    assert len(notes) == len(expected), notes
    for got, want in zip(notes, expected, strict=True):
        assert got.startswith(want), got


def test_drift_cancel_and_an_escalated_investigation_are_told() -> None:
    s = Story()
    _approved(s)
    s.do(ResolveIncident(s.incident, "bob", "fixed by hand"), T0 + M)
    notes = s.notes(DispatchAction(s.id, RULES, "k-1"), T0 + 2 * M)
    assert notes == [f"{ACT} cancelled before running: drift check: incident is resolved"]
    v = s.world.investigations.get(s.inv).version  # type: ignore[union-attr]
    conclude = ConcludeInvestigation(
        s.inv, v, "cpu hot", "", (), "agent", escalate="the model gave no usable answer"
    )
    evs = s.do(conclude, T0 + 3 * M)
    [esc] = [e for e in evs if type(e).__name__ == "InvestigationEscalated"]
    assert incident_of(esc, s.world) == s.incident
    assert follow_up_note(esc, s.world) == (
        "Investigation escalated to a person: the model gave no usable answer"
    )


def test_the_header_keeps_the_state_and_names_the_instance() -> None:
    s = Story()
    s.pending()
    inc = s.world.incidents[s.incident]
    # A later stage's news does not flip the header while nobody has acknowledged.
    for kind in ("concluded", "action_proposed", "approval_requested", "action_executed"):
        msg = incident_message(s.world, inc, kind, T0)
        assert msg.headline == "🔥 Firing: [CRITICAL] HostHighCpuLoad on web1", kind
    assert [b.action for b in incident_message(s.world, inc, "opened", T0).buttons] == [
        "ack",
        "approve",
        "reject",
    ]
    # Without a Slack app nobody can answer a button: none are shown.
    assert incident_message(s.world, inc, "opened", T0, interactive=False).buttons == ()
