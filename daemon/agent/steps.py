"""`next_step(run, runbook, now, ...)`: what the investigation does next. Pure.

The LLM path asks the model, runs the tools it asks for (refusing repeats), and stops at
its conclusion or at a budget limit, after one last call without tools. The deterministic
path runs the runbook's diagnostics in order, evaluates the default action's condition on
their facts, proposes the action if it holds, and writes a plain summary. When the model
keeps failing, a run finishes on the deterministic path and is escalated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from daemon.agent.run import Call, InvestigationRun
from daemon.domain.investigation_model import EvidenceRef
from daemon.runbooks.runbook import MissingLabel, Runbook, render

CONTROL_TOOLS = ("propose_action", "conclude")


@dataclass(frozen=True)
class CallModel:
    """Ask the model for `step` (with no tools when `final`)."""

    step: int
    final: bool = False


@dataclass(frozen=True)
class RunTool:
    """Run (or answer) a tool call: a model's call, or a runbook diagnostic `d-<id>`."""

    call: Call
    arguments: dict[str, Any] | None = None


@dataclass(frozen=True)
class RefuseTool:
    """Answer a call without running it (a repeat, a tool the runbook does not allow)."""

    call: Call
    reason: str


@dataclass(frozen=True)
class Propose:
    """Propose the runbook's default action (deterministic path)."""

    call_id: str
    action_id: str
    params: dict[str, Any]
    rationale: str
    evidence: tuple[EvidenceRef, ...]


@dataclass(frozen=True)
class Exhaust:
    """Record that a budget limit was reached."""

    limit: str
    detail: str


@dataclass(frozen=True)
class Finish:
    """Conclude (and escalate when `escalate` is set)."""

    summary: str
    probable_cause: str = ""
    evidence: tuple[EvidenceRef, ...] = ()
    escalate: str = ""
    by: str = "agent"


@dataclass(frozen=True)
class Abandon:
    """Stop without a conclusion."""

    reason: str


@dataclass(frozen=True)
class Done:
    """Nothing left to do."""


Next = CallModel | RunTool | RefuseTool | Propose | Exhaust | Finish | Abandon | Done


@dataclass(frozen=True)
class Situation:
    """What next_step needs besides the run: the time, the incident, the model's availability."""

    now: datetime
    incident_active: bool = True
    llm: bool = True
    max_failures: int = 2


def next_step(run: InvestigationRun, rb: Runbook | None, sit: Situation) -> Next:
    """Decide the next step of an investigation."""
    if run.finished:
        return Done()
    if rb is None:
        return Abandon(f"runbook {run.started.runbook_id} is no longer loaded")
    if not sit.incident_active:
        return Abandon("the incident is no longer open")
    gave_up = run.failures_in_row >= sit.max_failures
    if run.started.mode == "deterministic" or not sit.llm or gave_up:
        escalate = ""
        if gave_up:
            escalate = (
                f"the model failed {run.failures_in_row} times in a row "
                f"({run.last_error[:200]}); concluded on the deterministic path"
            )
        elif run.started.mode == "llm" and not sit.llm:
            escalate = "no model is configured any more; concluded on the deterministic path"
        return deterministic_step(run, rb, escalate)
    return _model_step(run, rb, sit)


# --- the LLM path ------------------------------------------------------------------------


def _model_step(run: InvestigationRun, rb: Runbook, sit: Situation) -> Next:
    waiting = run.awaiting
    if waiting is not None:
        # Requested but never answered (we crashed or were stopped during the call).
        return CallModel(waiting.step, waiting.final)
    if not run.steps:
        # The model starts from facts: the runbook's diagnostics are its first evidence.
        pending = _next_diagnostic(run, rb)
        if pending is not None:
            return pending
    for call in run.open_calls:
        if call.tool == "conclude":
            continue
        if call.tool not in (*rb.tools, *CONTROL_TOOLS):
            return RefuseTool(call, f"tool {call.tool!r} is not allowed by runbook {rb.id}")
        earlier = _repeat_of(run, call)
        if earlier is not None:
            return RefuseTool(
                call,
                f"repeated call: same as {earlier.call_id}; use that result "
                "(repeats count against the budget)",
            )
        return RunTool(call)
    if run.exhausted is not None:
        return _final(run)
    conclude = next((c for c in run.open_calls if c.tool == "conclude"), None)
    if conclude is not None:
        args = conclude.arguments()
        evidence = evidence_refs(run, args.get("evidence") or [])
        return Finish(
            summary=str(args.get("summary") or "(no summary given)"),
            probable_cause=str(args.get("probable_cause") or ""),
            evidence=evidence,
            escalate=untrusted_conclusion(run, evidence),
            by=f"agent:{run.started.model}",
        )
    last = run.responded[-1].response if run.responded else None
    if last is not None and not last.tool_calls:
        done = _finish_from_text(run, last.message, escalate="")
        return replace(done, escalate=untrusted_conclusion(run, done.evidence))
    limit = over_budget(run, sit.now)
    if limit is not None:
        return Exhaust(*limit)
    return CallModel(run.next_step_number)


def _final(run: InvestigationRun) -> Next:
    assert run.exhausted is not None
    why = f"budget exhausted ({run.exhausted.limit}: {run.exhausted.detail})"
    final = next((s for s in run.steps if s.final), None)
    if final is None:
        return CallModel(run.next_step_number, final=True)
    if final.response is not None:
        return _finish_from_text(run, final.response.message, escalate=why)
    return Finish(
        summary=f"Stopped: {why}; the final call to the model failed ({run.last_error[:200]}).",
        escalate=why,
        by=f"agent:{run.started.model}",
    )


def refused_proposals(run: InvestigationRun) -> list[Call]:
    """The model's proposals that were refused (bad action, bad params, policy)."""
    return [
        c
        for c in run.calls.values()
        if c.tool == "propose_action"
        and c.result is not None
        and c.result.status == "refused"
        and not c.call_id.startswith("d-")
    ]


def untrusted_conclusion(run: InvestigationRun, evidence: tuple[EvidenceRef, ...]) -> str:
    """Why a model's conclusion must go to a person ("" when it can stand)."""
    reasons = []
    refused = refused_proposals(run)
    if refused:
        last = refused[-1].result
        assert last is not None
        reasons.append(f"{len(refused)} proposal(s) were refused (last: {last.summary[:200]})")
    if not evidence:
        reasons.append("the conclusion cites no evidence")
    return "; ".join(reasons)


def _next_diagnostic(run: InvestigationRun, rb: Runbook) -> RunTool | None:
    for d in rb.diagnostics:
        cid = f"d-{d.id}"
        call = run.calls.get(cid)
        if call is None or not call.answered:
            return RunTool(call or Call(cid, d.tool, "{}", 0), arguments=dict(d.args))
    return None


def over_budget(run: InvestigationRun, now: datetime) -> tuple[str, str] | None:
    """The limit reached, if any: (limit, detail)."""
    b = run.started.budget
    if len(run.responded) >= b.steps:
        return "steps", f"{len(run.responded)} of {b.steps} model steps used"
    if run.usage.total >= b.tokens:
        return "tokens", f"{run.usage.total} of {b.tokens} tokens used"
    if run.began_at is not None:
        elapsed = (now - run.began_at).total_seconds()
        if elapsed >= b.wall_seconds:
            return "wall_time", f"{elapsed:.0f}s of {b.wall_seconds:.0f}s used"
    repeats = sum(
        1
        for c in run.calls.values()
        if c.result is not None
        and c.result.status == "refused"
        and "repeated call" in c.result.summary
    )
    if repeats > b.max_repeats:
        return "repetition", f"{repeats} repeated tool calls (more than {b.max_repeats})"
    return None


_WS = re.compile(r"\s+")
_TIME_ARGS = {"range", "step", "start", "end", "time"}


def _normal(value: Any) -> Any:
    if isinstance(value, str):
        return _WS.sub("", value).lower()
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in sorted(value.items()) if k not in _TIME_ARGS}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def call_key(call: Call) -> str:
    """A key equal for identical and near-identical calls (whitespace, case, time window)."""
    tool = "promql" if call.tool.startswith("promql_") else call.tool
    return tool + ":" + json.dumps(_normal(call.arguments()), sort_keys=True)


def _repeat_of(run: InvestigationRun, call: Call) -> Call | None:
    if call.tool in CONTROL_TOOLS:
        return None
    key = call_key(call)
    for other in run.calls.values():
        if other is call:
            break
        if other.answered and other.tool not in CONTROL_TOOLS and call_key(other) == key:
            assert other.result is not None
            if other.result.status != "refused":
                return other
    return None


def evidence_refs(run: InvestigationRun, ids: Any) -> tuple[EvidenceRef, ...]:
    """EvidenceRefs for the cited call ids that exist and were answered."""
    out = []
    for cid in ids if isinstance(ids, list) else []:
        call = run.calls.get(str(cid))
        if call is None or call.result is None:
            continue
        r = call.result
        out.append(
            EvidenceRef(
                call_id=call.call_id,
                tool=call.tool,
                summary=r.summary[:500],
                observed_at=r.observed_at,
                blob=r.blob,
            )
        )
    return tuple(out)


def _finish_from_text(run: InvestigationRun, text: str, escalate: str) -> Finish:
    """A conclusion from the model's plain answer (JSON with summary/probable_cause, or prose)."""
    summary, cause, evidence = text.strip(), "", tuple[EvidenceRef, ...]()
    candidate = summary.removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        data = json.loads(candidate)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("summary"):
        summary = str(data["summary"])
        cause = str(data.get("probable_cause") or "")
        evidence = evidence_refs(run, data.get("evidence") or [])
    return Finish(
        summary=summary or "(the model gave no summary)",
        probable_cause=cause,
        evidence=evidence,
        escalate=escalate,
        by=f"agent:{run.started.model}",
    )


# --- the deterministic path --------------------------------------------------------------


DEFAULT_CALL = "d-default-action"


def deterministic_step(run: InvestigationRun, rb: Runbook, escalate: str = "") -> Next:
    """Diagnostics in order, then the default action if its condition holds, then a summary."""
    pending = _next_diagnostic(run, rb)
    if pending is not None:
        return pending
    facts = run.facts()
    da = rb.default_action
    verdict: list[str] = []
    if da is not None:
        holds, verdict = da.when.explain(facts)
        # A run stopped between recording the proposal call and the proposal has the call
        # unanswered: propose now. ActionProposed commits with the call's result, so an
        # answered call was proposed (or refused) exactly once.
        call = run.calls.get(DEFAULT_CALL)
        if holds and (call is None or not call.answered):
            try:
                params = render(da.params, run.labels)
            except MissingLabel as e:
                verdict.append(f"cannot propose {da.action}: its params {e}")
            else:
                cited = sorted(da.when.diagnostics())
                return Propose(
                    call_id=DEFAULT_CALL,
                    action_id=da.action,
                    params=params,
                    rationale=(da.rationale or f"condition of {da.action} held")
                    + "\n"
                    + "\n".join(verdict),
                    evidence=evidence_refs(run, [f"d-{c}" for c in cited]),
                )
    return _deterministic_finish(run, rb, verdict, escalate)


def _deterministic_finish(
    run: InvestigationRun, rb: Runbook, verdict: list[str], escalate: str
) -> Finish:
    lines = [
        f"Runbook {rb.id} v{rb.version} ({rb.title}): ran {len(rb.diagnostics)} diagnostic(s)."
    ]
    for d in rb.diagnostics:
        call = run.calls.get(f"d-{d.id}")
        r = call.result if call else None
        if r is not None:
            lines.append(
                f"- {d.id} [{r.status}]: {r.summary.splitlines()[0][:300] if r.summary else ''}"
            )
    da = rb.default_action
    cause = ""
    proposed = [p for p in run.proposals if p.call_id == DEFAULT_CALL]
    refused = run.calls.get(DEFAULT_CALL)
    if da is None:
        lines.append("This runbook has no default action: a person decides what to do.")
    elif proposed:
        p = proposed[0]
        lines.append(
            f"Default action {p.action_id} proposed ({p.risk} risk, params {json.dumps(p.params)}):"
        )
        lines += verdict
        cause = da.rationale
    elif refused is not None and refused.result is not None and refused.result.status == "refused":
        lines.append(f"Default action {da.action} could not be proposed: {refused.result.summary}")
        lines += verdict
    else:
        lines.append(f"Default action {da.action} not proposed: its condition does not hold.")
        lines += verdict
    evidence = evidence_refs(run, [f"d-{d.id}" for d in rb.diagnostics])
    return Finish(
        summary="\n".join(lines),
        probable_cause=cause,
        evidence=evidence,
        escalate=escalate,
        by="deterministic",
    )
