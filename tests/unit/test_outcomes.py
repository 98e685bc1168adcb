"""Outcome figures folded from events made by the real pure core: time to acknowledge,
resolve and approve; investigations concluded or escalated; what actions came to; and
incidents that came back within a day after an action."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.domain import Acknowledge, Alert, ReceiveAlert, World, decide, fingerprint
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
from daemon.domain.events import DomainEvent
from daemon.domain.investigation_model import (
    ActionSpec,
    Budget,
    ConcludeInvestigation,
    ProposeAction,
    StartInvestigation,
    investigation_id_for,
)
from daemon.domain.outcomes import distribution, figures, fold
from daemon.domain.policy import PolicyRules

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)
PLAN = ActionPlan(
    kind="systemd", action_id="restart", summary="systemctl restart x", targets=("x",), spec={}
)


class Log:
    def __init__(self) -> None:
        self.world = World()
        self.events: list[DomainEvent] = []

    def do(self, cmd: Any, at: datetime) -> list[DomainEvent]:
        evs = decide(self.world, cmd, at)
        self.events += evs
        return evs

    def incident(self, name: str, service: str, severity: str, at: datetime) -> Any:
        labels = {"alertname": name, "service": service, "severity": severity}
        alert = Alert(fingerprint=fingerprint(labels), labels=labels, starts_at=at)
        self.do(ReceiveAlert(alert), at)
        return self.world.groups[f'{{alertname="{name}"}}']

    def action(self, inc: Any, runbook: str, at: datetime, escalate: str = "") -> Any:
        inv = investigation_id_for(inc, runbook, 1)
        spec = ActionSpec(id="restart", kind="systemd", risk="low", params_schema={})
        self.do(
            StartInvestigation(
                inv, inc, 1, runbook, "1", "deterministic", "", "h", Budget(), (spec,)
            ),
            at,
        )
        v = self.world.investigations.active[inv].version
        [p, *_] = self.do(ProposeAction(inv, v, "c1", "restart", {}, "why"), at)
        v = self.world.investigations.active[inv].version
        self.do(ConcludeInvestigation(inv, v, "s", "cause", (), "agent", escalate=escalate), at)
        verify = VerifySpec(query="up", expect="value > 0", window_seconds=60)
        self.do(DecidePolicy(p.proposal_id, PolicyRules(), PLAN, verify=verify), at)  # type: ignore[attr-defined]
        return p.proposal_id  # type: ignore[attr-defined]


def story() -> Log:
    log = Log()
    # web: acked after 2m, approved after 4m, succeeded and verified, then came back in 3h.
    web = log.incident("WebDown", "web", "critical", T0)
    act = log.action(web, "restart-web", T0)
    log.do(Acknowledge(web, "alice"), T0 + 2 * M)
    log.do(ApproveAction(act, "bea", "approver", "console"), T0 + 4 * M)
    log.do(DispatchAction(act, PolicyRules(), "k"), T0 + 5 * M)
    log.do(RecordOutcome(act, "succeeded", "ok"), T0 + 5 * M)
    log.do(RecordVerification(act, True, "up"), T0 + 6 * M)
    fp = next(iter(log.world.members[web]))
    log.do(
        ReceiveAlert(
            log.world.alerts[fp].alert.model_copy(
                update={"status": "resolved", "ends_at": T0 + 7 * M}
            )
        ),
        T0 + 7 * M,
    )
    labels = {"alertname": "WebDown", "service": "web", "severity": "critical"}
    again = Alert(fingerprint=fingerprint(labels), labels=labels, starts_at=T0 + 27 * M)
    log.do(ReceiveAlert(again), T0 + 27 * M)
    # db: acked after 10m, its action rejected after 1m, investigation escalated.
    db = log.incident("DbSlow", "db", "warning", T0 + 60 * M)
    act = log.action(db, "db-slow", T0 + 60 * M, escalate="needs a DBA")
    log.do(RejectAction(act, "bea", "approver", "api", "not now"), T0 + 61 * M)
    log.do(Acknowledge(db, "carl"), T0 + 70 * M)
    return log


def test_figures_by_service() -> None:
    got = figures(fold(story().events), by="service")
    assert set(got) == {"db", "web"}
    web, db = got["web"], got["db"]
    assert web["incidents"] == 1
    assert web["time_to_acknowledge"]["p50"] == 120.0
    assert web["time_to_resolve"]["p50"] == 420.0
    assert web["time_to_approve"]["p50"] == 240.0
    assert web["actions"] | {} == {
        "proposed": 1,
        "approved": 1,
        "rejected": 0,
        "expired": 0,
        "succeeded": 1,
        "failed": 0,
        "verified": 1,
        "verification_failed": 0,
        "rolled_back": 0,
    }
    assert web["investigations"] == {"concluded": 1, "escalated": 0, "running": 0}
    assert web["reopened_within_a_day_after_an_action"] == 1
    assert db["time_to_acknowledge"]["p50"] == 600.0
    assert db["time_to_approve"]["p50"] == 60.0
    assert (db["actions"]["rejected"], db["actions"]["succeeded"]) == (1, 0)
    assert db["investigations"] == {"concluded": 0, "escalated": 1, "running": 0}
    assert db["reopened_within_a_day_after_an_action"] == 0


def test_grouping_and_period() -> None:
    out = fold(story().events)
    assert set(figures(out, by="runbook")) == {"db-slow", "restart-web"}
    assert set(figures(out, by="severity")) == {"critical", "warning"}
    total = figures(out)["all"]
    assert total["incidents"] == 2
    assert total["time_to_acknowledge"] == {"count": 2, "mean": 360.0, "p50": 120.0, "p90": 600.0}
    later = figures(out, since=T0 + 30 * M)
    assert later["all"]["incidents"] == 1
    assert figures(out, since=T0 + 2 * 60 * M) == {}


def test_distribution_uses_nearest_rank() -> None:
    assert distribution([]) == {"count": 0, "mean": None, "p50": None, "p90": None}
    assert distribution([float(s) for s in range(1, 11)]) == {
        "count": 10,
        "mean": 5.5,
        "p50": 5.0,
        "p90": 9.0,
    }
