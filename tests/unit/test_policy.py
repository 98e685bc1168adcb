"""Policy tables: modes and risk tiers, per-runbook overrides, rate limits over a sliding
window of recorded dispatches, blast radius, maintenance windows and change freezes.
The clock is a parameter: every row says when it is."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from daemon.domain.matchers import Matcher
from daemon.domain.policy import (
    Dispatch,
    PolicyRules,
    Proposal,
    RateLimit,
    RunbookPolicy,
    Window,
    evaluate,
)

# A Friday, 16:00 UTC.
NOW = datetime(2026, 3, 6, 16, 0, tzinfo=UTC)


def proposal(**kw: Any) -> Proposal:
    base: dict[str, Any] = {
        "action_id": "restart_service",
        "kind": "systemd",
        "risk": "low",
        "runbook_id": "host-high-cpu",
        "targets": ("nginx.service",),
        "labels": {"alertname": "HostHighCpuLoad", "env": "prod", "team": "web"},
        "verb": "restart",
    }
    return Proposal(**(base | kw))


def restarts(*minutes_ago: int, target: str = "nginx.service") -> list[Dispatch]:
    return [
        Dispatch(
            action_id="restart_service",
            kind="systemd",
            target=target,
            at=NOW - timedelta(minutes=m),
        )
        for m in minutes_ago
    ]


HOURLY_3 = RateLimit(action="restart_*", max=3, per=timedelta(hours=1))
FREEZE = Window(
    name="friday-freeze",
    effect="block",
    matchers=(Matcher.parse('env="prod"'),),
    days=(4,),
    start=time(12, 0),
    end=time(23, 59),
)
MAINTENANCE = Window(
    name="db-maintenance",
    effect="approve",
    matchers=(Matcher.parse('team="web"'),),
    starts_at=NOW - timedelta(hours=1),
    ends_at=NOW + timedelta(hours=1),
)


@pytest.mark.parametrize(
    ("name", "rules", "p", "history", "outcome", "reasons", "approvals"),
    [
        (
            "review is the default: even low risk waits for a person",
            PolicyRules(),
            proposal(),
            [],
            "approve",
            ["mode review: every action needs an approval"],
            1,
        ),
        (
            "observe records what would run and never executes",
            PolicyRules(mode="observe"),
            proposal(risk="high"),
            [],
            "observe",
            ["mode observe: recorded with exactly what would run; never executed"],
            0,
        ),
        (
            "autonomous: low risk runs alone",
            PolicyRules(mode="autonomous"),
            proposal(risk="low"),
            [],
            "execute",
            ["mode autonomous: low risk runs without approval"],
            0,
        ),
        (
            "autonomous: medium risk still needs approval",
            PolicyRules(mode="autonomous"),
            proposal(risk="medium"),
            [],
            "approve",
            ["mode autonomous: medium risk needs an approval"],
            1,
        ),
        (
            "autonomous: high risk needs two different people when configured",
            PolicyRules(mode="autonomous", approvals_required={"high": 2}),
            proposal(risk="high"),
            [],
            "approve",
            ["mode autonomous: high risk needs 2 approvals from different people"],
            2,
        ),
        (
            "a runbook override makes one runbook autonomous up to medium",
            PolicyRules(
                runbooks={
                    "host-high-cpu": RunbookPolicy(mode="autonomous", auto_risks=("low", "medium"))
                }
            ),
            proposal(risk="medium"),
            [],
            "execute",
            ["mode autonomous: medium risk runs without approval"],
            0,
        ),
        (
            "an override of another runbook changes nothing here",
            PolicyRules(runbooks={"disk-filling": RunbookPolicy(mode="autonomous")}),
            proposal(),
            [],
            "approve",
            ["mode review: every action needs an approval"],
            1,
        ),
        (
            "a runbook can be put in observe mode alone",
            PolicyRules(
                mode="autonomous", runbooks={"host-high-cpu": RunbookPolicy(mode="observe")}
            ),
            proposal(),
            [],
            "observe",
            ["mode observe: recorded with exactly what would run; never executed"],
            0,
        ),
        (
            "rate limit: three restarts within the hour refuse a fourth",
            PolicyRules(mode="autonomous", rate_limits=(HOURLY_3,)),
            proposal(),
            restarts(5, 20, 59),
            "refuse",
            ["rate limit: 3 restarts of nginx.service in the last 1h (at most 3)"],
            0,
        ),
        (
            "rate limit: the window slides; one restart 61 minutes ago no longer counts",
            PolicyRules(mode="autonomous", rate_limits=(HOURLY_3,)),
            proposal(),
            restarts(5, 20, 61),
            "execute",
            ["mode autonomous: low risk runs without approval"],
            0,
        ),
        (
            "rate limit: counted per target",
            PolicyRules(mode="autonomous", rate_limits=(HOURLY_3,)),
            proposal(),
            restarts(1, 2, 3, target="api.service"),
            "execute",
            ["mode autonomous: low risk runs without approval"],
            0,
        ),
        (
            "rate limit: only matching actions count and are limited",
            PolicyRules(mode="autonomous", rate_limits=(HOURLY_3,)),
            proposal(action_id="rotate_logs", verb="start"),
            restarts(1, 2, 3),
            "execute",
            ["mode autonomous: low risk runs without approval"],
            0,
        ),
        (
            "rate limit: a shell action reads as runs of its id",
            PolicyRules(rate_limits=(RateLimit(kind="shell", max=1, per=timedelta(minutes=30)),)),
            proposal(action_id="vacuum_journal", kind="shell", targets=("500M",), verb=""),
            [Dispatch(action_id="vacuum_journal", kind="shell", target="500M", at=NOW)],
            "refuse",
            ["rate limit: 1 run of vacuum_journal of 500M in the last 30m (at most 1)"],
            0,
        ),
        (
            "blast radius: an empty target is refused",
            PolicyRules(mode="autonomous"),
            proposal(targets=()),
            [],
            "refuse",
            ["blast radius: restart_service names no target; an empty target is refused"],
            0,
        ),
        (
            "blast radius: a wildcard unit is refused",
            PolicyRules(mode="autonomous"),
            proposal(targets=("nginx*.service",)),
            [],
            "refuse",
            ["blast radius: target 'nginx*.service' is a wildcard; name each target"],
            0,
        ),
        (
            "blast radius: a regex matching everything is a wildcard too",
            PolicyRules(),
            proposal(kind="alertmanager_silence", targets=('instance=~".*"',)),
            [],
            "refuse",
            ["blast radius: target 'instance=~\".*\"' is a wildcard; name each target"],
            0,
        ),
        (
            "blast radius: even observe mode refuses too many targets",
            PolicyRules(mode="observe", max_targets=2),
            proposal(targets=("a.service", "b.service", "c.service")),
            [],
            "refuse",
            ["blast radius: 3 targets, more than the 2 allowed"],
            0,
        ),
        (
            "change freeze: Friday afternoon blocks prod",
            PolicyRules(mode="autonomous", windows=(FREEZE,)),
            proposal(),
            [],
            "refuse",
            [
                "change freeze 'friday-freeze' (fri 12:00:00-23:59:00 UTC) blocks actions "
                'on env="prod"'
            ],
            0,
        ),
        (
            "change freeze: staging is not matched",
            PolicyRules(mode="autonomous", windows=(FREEZE,)),
            proposal(labels={"env": "staging"}),
            [],
            "execute",
            ["mode autonomous: low risk runs without approval"],
            0,
        ),
        (
            "maintenance window: forces an approval for what would run alone",
            PolicyRules(mode="autonomous", windows=(MAINTENANCE,)),
            proposal(),
            [],
            "approve",
            [
                "mode autonomous: low risk would run alone, but a window asks for an approval",
                "maintenance window 'db-maintenance' (until 2026-03-06T17:00:00+00:00) on "
                'team="web": approval required',
            ],
            1,
        ),
    ],
)
def test_policy_table(
    name: str,
    rules: PolicyRules,
    p: Proposal,
    history: list[Dispatch],
    outcome: str,
    reasons: list[str],
    approvals: int,
) -> None:
    verdict = evaluate(p, rules, history, NOW)
    assert (verdict.outcome, list(verdict.reasons), verdict.approvals_required) == (
        outcome,
        reasons,
        approvals,
    ), name


@pytest.mark.parametrize(
    ("window", "at", "active"),
    [
        # Weekly, same day: Friday 12:00-23:59.
        (FREEZE, NOW, True),
        (FREEZE, NOW.replace(hour=11, minute=59), False),
        (FREEZE, NOW + timedelta(days=1), False),
        # Past midnight: Saturday 22:00 to Sunday 02:00, in Berlin time.
        (
            Window(
                name="night",
                days=(5,),
                start=time(22, 0),
                end=time(2, 0),
                timezone="Europe/Berlin",
            ),
            datetime(2026, 3, 8, 0, 30, tzinfo=UTC),  # Sunday 01:30 in Berlin
            True,
        ),
        (
            Window(
                name="night",
                days=(5,),
                start=time(22, 0),
                end=time(2, 0),
                timezone="Europe/Berlin",
            ),
            datetime(2026, 3, 8, 1, 30, tzinfo=UTC),  # Sunday 02:30 in Berlin
            False,
        ),
        # Absolute: start inclusive, end exclusive.
        (MAINTENANCE, MAINTENANCE.starts_at, True),
        (MAINTENANCE, MAINTENANCE.ends_at, False),
    ],
)
def test_window_activity(window: Window, at: datetime, active: bool) -> None:
    assert window.active(at) is active


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({}, "give either starts_at and ends_at, or days with start and end"),
        ({"starts_at": NOW}, "an absolute window needs both starts_at and ends_at"),
        ({"starts_at": NOW, "ends_at": NOW}, "ends_at must be after starts_at"),
        ({"days": (4,), "start": time(1)}, "a weekly window needs days, start and end"),
        ({"days": (7,), "start": time(1), "end": time(2)}, "days are 0 (Monday) to 6 (Sunday)"),
    ],
)
def test_bad_windows_say_why(kw: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        Window(name="w", **kw)


def test_config_section_builds_the_same_rules() -> None:
    from daemon.config.settings import Settings

    s = Settings(
        actions={
            "mode": "autonomous",
            "auto_risks": ["low"],
            "approvals_required": {"high": 2},
            "rate_limits": [{"action": "restart_*", "max": 3, "per": "1h"}],
            "windows": [
                {
                    "name": "friday-freeze",
                    "matchers": ['env="prod"'],
                    "days": ["fri"],
                    "start": "12:00",
                    "end": "23:59",
                }
            ],
        }
    )
    rules = s.actions.rules()
    assert rules.rate_limits == (HOURLY_3,)
    assert rules.windows == (FREEZE,)
    verdict = evaluate(proposal(risk="high", labels={}), rules, [], NOW)
    assert (verdict.outcome, verdict.approvals_required) == ("approve", 2)
