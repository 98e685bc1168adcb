"""Outcome memory: what each earlier proposal of a runbook led to (approved? ran? verified?
came back within a day?), in `past_incidents` and in the prompt's success record."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from daemon.domain import Alert, ReceiveAlert, World, decide, fingerprint
from daemon.domain.action_model import (
    ActionPlan,
    ApproveAction,
    DecidePolicy,
    DispatchAction,
    RecordOutcome,
    RecordVerification,
    RejectAction,
    VerifySpec,
)
from daemon.domain.investigation_model import (
    ActionSpec,
    Budget,
    ConcludeInvestigation,
    ProposeAction,
    StartInvestigation,
    investigation_id_for,
)
from daemon.domain.policy import PolicyRules
from daemon.runbooks.context_tools import PastIncidents
from daemon.runbooks.outcomes import runbook_outcomes, success_record_text
from daemon.runbooks.tools import PastIncidentsArgs, ToolContext

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RB = "systemd-service-down"
PLAN = ActionPlan(
    kind="systemd",
    action_id="restart_unit",
    summary="systemctl restart nginx.service",
    targets=("nginx.service",),
    spec={},
    verb="restart",
)
VERIFY = VerifySpec(query="up", expect="value == 1", window_seconds=300)


def labels(instance: str) -> dict[str, str]:
    return {"alertname": "SystemdUnitFailed", "instance": instance, "name": "nginx.service"}


class History:
    def __init__(self) -> None:
        self.world = World()
        self.runs: dict[UUID, int] = {}

    def do(self, cmd: Any, at: datetime) -> list[Any]:
        return decide(self.world, cmd, at)

    def alert(self, lab: dict[str, str], at: datetime, status: str = "firing") -> UUID:
        a = Alert(
            fingerprint=fingerprint(lab),
            labels=lab,
            status=status,  # type: ignore[arg-type]
            starts_at=at,
            ends_at=at + timedelta(hours=1) if status == "firing" else at,
        )
        self.do(ReceiveAlert(a), at)
        inc = self.world.alerts[a.fingerprint].incident_id
        assert inc is not None
        return inc

    def propose(self, inc: UUID, lab: dict[str, str], at: datetime) -> UUID:
        n = self.runs[inc] = self.runs.get(inc, 0) + 1
        inv = investigation_id_for(inc, RB, n)
        spec = ActionSpec(id="restart_unit", kind="systemd", risk="low", params_schema={})
        self.do(
            StartInvestigation(
                inv, inc, n, RB, "3", "deterministic", "", "h", Budget(), (spec,), {"labels": lab}
            ),
            at,
        )
        v = self.world.investigations.active[inv].version
        [proposed, *_] = self.do(
            ProposeAction(inv, v, "c1", "restart_unit", {"unit": "nginx.service"}, "failed", ()),
            at,
        )
        pid: UUID = proposed.proposal_id
        self.do(DecidePolicy(pid, PolicyRules(), PLAN, labels=lab, verify=VERIFY), at)
        v = self.world.investigations.get(inv).version  # type: ignore[union-attr]
        self.do(ConcludeInvestigation(inv, v, "restart proposed", "unit failed", (), "det"), at)
        return pid


def build() -> tuple[History, UUID]:
    h = History()
    web1, web2 = labels("web1:9100"), labels("web2:9100")
    # Day 1 on web1: approved, ran, verified; resolved, then back within the hour.
    inc = h.alert(web1, T0)
    pid = h.propose(inc, web1, T0)
    h.do(ApproveAction(pid, "alice", "approver", "api"), T0)
    h.do(DispatchAction(pid, PolicyRules(), "k1"), T0)
    h.do(RecordOutcome(pid, "succeeded", "exited 0"), T0)
    h.do(RecordVerification(pid, True, "value == 1 held"), T0 + timedelta(minutes=2))
    h.alert(web1, T0 + timedelta(minutes=10), "resolved")
    h.alert(web1, T0 + timedelta(minutes=50))  # reopens: the restart did not hold
    # Day 3 on web1 again: rejected by a person.
    inc3 = h.alert(web1, T0 + timedelta(days=3))
    pid3 = h.propose(inc3, web1, T0 + timedelta(days=3))
    h.do(
        RejectAction(pid3, "bob", "approver", "console", "it is a config error"),
        T0 + timedelta(days=3),
    )
    # Another target's history does not belong to web1's.
    inc_w2 = h.alert(web2, T0 + timedelta(days=4))
    pid_w2 = h.propose(inc_w2, web2, T0 + timedelta(days=4))
    h.do(ApproveAction(pid_w2, "alice", "approver", "api"), T0 + timedelta(days=4))
    current = h.alert({**web1, "alertname": "SystemdServiceDown"}, T0 + timedelta(days=5))
    return h, current


def test_outcomes_say_what_was_approved_ran_verified_and_came_back() -> None:
    h, current = build()
    by_inc = runbook_outcomes(h.world, RB, labels=labels("web1:9100"), exclude_incident=current)
    outs = sorted((o for os_ in by_inc.values() for o in os_), key=lambda o: o.proposed_at)
    assert [(o.approved, o.ran, o.verified) for o in outs] == [
        (True, True, True),
        (False, False, None),
    ]
    assert outs[0].came_back is True
    assert outs[1].decided_by == "bob"
    assert "it is a config error" in outs[1].reason


def test_past_incidents_returns_the_outcomes_for_the_same_target() -> None:
    h, current = build()
    ctx = ToolContext(
        incident_id=current,
        runbook_id=RB,
        labels=labels("web1:9100"),
        world=h.world,
        now=T0 + timedelta(days=5),
    )
    res = asyncio.run(PastIncidents().run(PastIncidentsArgs(), ctx))
    assert res.status == "ok"
    acted = [a for row in res.data for a in row.get("actions", [])]
    assert {
        (a["approved"], a["ran"], a["verified"], a["came_back_within_a_day"]) for a in acted
    } == {
        (True, True, True, True),
        (False, False, None, None),
    }
    assert res.facts["verified"] == 1
    assert res.facts["came_back"] == 1
    assert "came back within a day" in res.summary
    assert "web2" not in str(res.data)


def test_the_prompt_gets_a_success_record_line_per_action() -> None:
    h, _ = build()
    # Verified of those that ran (web2's approved restart has not run yet), and all proposals.
    text = success_record_text(h.world, RB, T0 + timedelta(days=5))
    assert "restart_unit: 1 of 1 verified in 30 days (3 proposed)" in text
    assert success_record_text(h.world, RB, T0 + timedelta(days=60)) == ""
