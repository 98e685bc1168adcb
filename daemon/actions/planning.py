"""From a proposal to a policy command: render the plan, its rollback and its verification.

The executor renders exactly what would run; the runbook supplies the rollback (another of
its actions, or written steps) and the verify check, rendered now with the incident's
labels so an approver sees the query that will decide whether the fix worked.
"""

from __future__ import annotations

from typing import Any

from daemon.actions.executor import ActionExecutor, PlanError, fill_typed
from daemon.actions.hosts import HOST_KINDS, HostRouter, TargetError
from daemon.domain.action_model import (
    ActionEntry,
    ActionPlan,
    DecidePolicy,
    VerifySpec,
)
from daemon.domain.durations import parse_duration
from daemon.domain.policy import PolicyRules
from daemon.runbooks.runbook import (
    MissingLabel,
    Runbook,
    promql_string,
    render,
)


def plan_action(
    rb: Runbook | None,
    action_id: str,
    params: dict[str, Any],
    executors: dict[str, ActionExecutor],
    *,
    hosts: HostRouter | None = None,
    target: str = "",
    target_source: str = "",
) -> ActionPlan:
    """The plan for one of a runbook's actions on its target; PlanError saying why there is none."""
    if rb is None:
        raise PlanError("its runbook is not loaded")
    action = rb.action(action_id)
    if action is None:
        raise PlanError(f"runbook {rb.id} has no action {action_id!r}")
    executor = executors.get(action.kind)
    if executor is None:
        raise PlanError(f"no {action.kind} executor is configured on this daemon")
    plan = executor.plan(action, params)
    if hosts is None:
        return plan
    try:
        return hosts.place(plan, target, target_source)
    except TargetError as e:
        raise PlanError(str(e)) from None


def verify_spec(rb: Runbook, labels: dict[str, str]) -> VerifySpec | None:
    """The runbook's verify check with the incident's labels filled in (MissingLabel if not)."""
    v = rb.verify
    if v is None:
        return None
    window = parse_duration(v.window).total_seconds()
    if v.query:
        return VerifySpec(
            query=render(v.query, labels, promql_string), expect=v.expect, window_seconds=window
        )
    return VerifySpec(probe=render(v.probe or "", labels), expect=v.expect, window_seconds=window)


def policy_command(
    entry: ActionEntry,
    rb: Runbook | None,
    executors: dict[str, ActionExecutor],
    rules: PolicyRules,
    labels: dict[str, str],
    *,
    hosts: HostRouter | None = None,
) -> DecidePolicy:
    """Everything policy needs to decide on `entry`, or the reason it cannot run at all."""
    if hosts is not None and entry.kind in HOST_KINDS:
        # The inventory's labels win over the alert's: an alert cannot claim env="dev".
        known = hosts.inventory.find(entry.target or hosts.this_host)
        if known is not None:
            labels = {**labels, **known.labels}
    common: dict[str, Any] = {"action_id": entry.id, "rules": rules, "labels": labels}
    if rb is not None and rb.version != entry.runbook_version:
        why = (
            f"runbook {rb.id} is now version {rb.version}, "
            f"the proposal was for {entry.runbook_version}"
        )
        return DecidePolicy(**common, plan=None, plan_error=why)
    try:
        plan = plan_action(
            rb, entry.action_id, entry.params, executors,
            hosts=hosts, target=entry.target, target_source=entry.target_source,
        )
    except PlanError as e:
        return DecidePolicy(**common, plan=None, plan_error=str(e))
    assert rb is not None
    try:
        verify = verify_spec(rb, labels)
    except MissingLabel as e:
        return DecidePolicy(**common, plan=None, plan_error=f"its verify check {e}")
    action = rb.action(entry.action_id)
    assert action is not None
    rollback_plan, note = None, ""
    if action.rollback is not None:
        note = action.rollback.note
        if action.rollback.action:
            try:
                params = fill_typed(action.rollback.params, entry.params)
                rollback_plan = plan_action(
                    rb, action.rollback.action, params, executors,
                    hosts=hosts, target=entry.target, target_source=entry.target_source,
                )
            except PlanError as e:
                note = (note + " " if note else "") + (
                    f"(rollback {action.rollback.action} cannot run here: {e})"
                )
    return DecidePolicy(
        **common,
        plan=plan,
        rollback_plan=rollback_plan,
        rollback_note=note,
        verify=verify,
        evidence_max_age_seconds=rb.evidence_max_age_td.total_seconds(),
    )
