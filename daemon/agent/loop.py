"""The agent loop: fold the investigation from its events, decide the next step, do it, record it.

Every effect is recorded before (LLMRequested, ToolCalled) and after (LLMResponded,
ToolResulted) it happens, through the Ingestor, so a crash at any point resumes from the
stream: a model step with a recorded response is never asked again, and a tool call with
no recorded result is simply run again (tools are read-only).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from daemon.agent.lead import common_cause, lead_brief, lead_text
from daemon.agent.llm import ChatModel, ModelError
from daemon.agent.prompt import build_messages, messages_hash
from daemon.agent.run import Call, InvestigationRun, fold
from daemon.agent.steps import (
    Abandon,
    CallModel,
    Done,
    Exhaust,
    Finish,
    Next,
    Propose,
    RefuseTool,
    RunTool,
    Situation,
    evidence_refs,
    next_step,
)
from daemon.config.agent import AgentConfig
from daemon.config.problems import problems
from daemon.domain import Command, Rejected
from daemon.domain.events import DomainEvent
from daemon.domain.investigation_model import (
    AbandonInvestigation,
    ConcludeInvestigation,
    EvidenceRef,
    ExhaustBudget,
    ProposeAction,
    RecordLLMFailure,
    RecordLLMRequest,
    RecordLLMResponse,
    RecordToolCall,
    RecordToolResult,
    ToolStatus,
)
from daemon.domain.targets import TargetRules, derive_target
from daemon.engine.blobs import BlobStore
from daemon.engine.ingest import Ingestor
from daemon.runbooks.outcomes import success_record_text
from daemon.runbooks.runbook import (
    MissingLabel,
    Runbook,
    RunbookLibrary,
    promql_string,
    render,
)
from daemon.runbooks.tools import (
    ARGS,
    CONTROL,
    ProposeActionArgs,
    Tool,
    ToolContext,
    ToolResult,
    describe,
    run_tool,
)

log = logging.getLogger("watchkeeper.agent")

# A diagnostic may take its time (a range query over days); the action checks allow less.
TOOL_TIMEOUT = 120.0


class StaleRun(Exception):  # noqa: N818 - a condition, handled by reloading
    """Our view of the stream is behind what is recorded; reload it."""


@dataclass
class Stats:
    """Counters for /metrics."""

    llm_calls: int = 0
    llm_failures: int = 0
    tool_calls: int = 0
    tool_failures: int = 0
    proposals: int = 0
    refused: int = 0
    finished: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)


class Investigator:
    """Runs investigations to their end, one `investigate` call per investigation."""

    def __init__(
        self,
        ingestor: Ingestor,
        runbooks: RunbookLibrary,
        *,
        tools: dict[str, Tool],
        model: ChatModel | None,
        blobs: BlobStore,
        config: AgentConfig,
        clock: Callable[[], datetime],
        failure_pause: Callable[[int], float] = lambda n: min(30.0, 2.0**n),
        targets: TargetRules | None = None,
        shadow: RunbookLibrary | None = None,
    ) -> None:
        self.targets = targets or TargetRules()
        self.ingestor = ingestor
        self.runbooks = runbooks
        self.shadow = shadow or RunbookLibrary()
        self.tools = tools
        self.model = model
        self.blobs = blobs
        self.config = config
        self.clock = clock
        self.failure_pause = failure_pause
        self.stats = Stats()

    # --- the loop ------------------------------------------------------------------------

    async def load(self, investigation_id: UUID) -> InvestigationRun:
        """Fold the investigation's stream."""
        events = await asyncio.to_thread(self.ingestor.log.stream, investigation_id)
        return fold(events)

    async def investigate(self, investigation_id: UUID) -> InvestigationRun:
        """Fold, decide, act, record, until the investigation is finished."""
        run = await self.load(investigation_id)
        idle = 0
        while True:
            library = self.shadow if run.started.shadow else self.runbooks
            rb = library.get(run.started.runbook_id)
            step = next_step(run, rb, self._situation(run))
            if isinstance(step, Done):
                return run
            before = run.version
            try:
                assert rb is not None or isinstance(step, Abandon)
                await self._do(step, run, rb)
            except StaleRun:
                run = await self.load(investigation_id)
                continue
            # A step that records nothing would spin; give up loudly instead.
            idle = idle + 1 if run.version == before else 0
            if idle > 3:
                log.error("investigation made no progress id=%s step=%s", run.id, step)
                return run

    def _situation(self, run: InvestigationRun) -> Situation:
        inc = self.ingestor.world.incidents.get(run.started.incident_id)
        return Situation(
            now=self.clock(),
            incident_active=inc is not None and inc.is_active,
            llm=self.model is not None,
            max_failures=self.config.llm.max_failures if self.config.llm else 2,
        )

    async def _record(self, run: InvestigationRun, cmd: Command) -> list[DomainEvent]:
        """Record one command; fold its events into `run`."""
        try:
            events = await self.ingestor.execute(cmd)
        except Rejected as e:
            if e.status in {409, 404}:
                raise StaleRun(e.reason) from e
            raise
        for ev in events:
            run.apply(ev)
        return events

    # --- steps ---------------------------------------------------------------------------

    async def _do(self, step: Next, run: InvestigationRun, rb: Runbook | None) -> None:
        v = run.version
        if isinstance(step, Abandon):
            await self._record(run, AbandonInvestigation(run.id, v, step.reason))
            self._finished("abandoned")
        elif isinstance(step, Finish):
            if run.started.shadow and step.escalate:
                # A shadow run never pages anyone: what it would escalate goes in its summary.
                step = replace(
                    step,
                    summary=f"{step.summary}\n(shadow: would escalate: {step.escalate})",
                    escalate="",
                )
            elif not run.started.shadow:
                # The lead of a situation concludes for all of it: name the common cause.
                brief = lead_brief(self.ingestor.world, run.started.incident_id)
                step = replace(step, probable_cause=common_cause(step.probable_cause, brief))
            await self._record(
                run,
                ConcludeInvestigation(
                    run.id,
                    v,
                    step.summary,
                    step.probable_cause,
                    step.evidence,
                    step.by,
                    step.escalate,
                ),
            )
            self._finished("escalated" if step.escalate else "concluded")
            log.info(
                "investigation concluded id=%s runbook=%s proposals=%d escalated=%s",
                run.id,
                run.started.runbook_id,
                len(run.proposals),
                bool(step.escalate),
            )
        elif isinstance(step, Exhaust):
            await self._record(run, ExhaustBudget(run.id, v, step.limit, step.detail))
            log.info("investigation budget exhausted id=%s limit=%s", run.id, step.limit)
        elif isinstance(step, RefuseTool):
            await self._answer(run, step.call, "refused", step.reason)
        elif isinstance(step, Propose):
            await self._propose(
                run,
                Call(step.call_id, "propose_action", "{}", 0),
                action_id=step.action_id,
                params=step.params,
                rationale=step.rationale,
                evidence=step.evidence,
                by="deterministic",
            )
        elif isinstance(step, RunTool):
            assert rb is not None
            await self._run_tool(run, rb, step)
        elif isinstance(step, CallModel):
            assert rb is not None
            await self._call_model(run, rb, step)

    def _finished(self, outcome: str) -> None:
        self.stats.finished += 1
        self.stats.by_outcome[outcome] = self.stats.by_outcome.get(outcome, 0) + 1

    async def _answer(
        self,
        run: InvestigationRun,
        call: Call,
        status: ToolStatus,
        summary: str,
        *,
        called: dict[str, Any] | None = None,
    ) -> None:
        """Record a result without running anything (after a ToolCalled if `called` is given)."""
        if called is not None:
            await self._record_call(run, call, call.tool, called)
        if status == "refused":
            self.stats.refused += 1
        await self._record(
            run,
            RecordToolResult(
                run.id, run.version, call.call_id, call.tool, status, self.clock(), summary[:2000]
            ),
        )

    async def _run_tool(self, run: InvestigationRun, rb: Runbook, step: RunTool) -> None:
        call = step.call
        if step.arguments is not None:
            escape = promql_string if call.tool.startswith("promql_") else None
            try:
                raw: Any = render(step.arguments, run.labels, escape)
            except MissingLabel as e:
                await self._answer(
                    run, call, "no_data", f"not run: {e}", called=dict(step.arguments)
                )
                return
        else:
            raw = call.arguments()
            if call.raw_arguments.strip() and not raw and call.raw_arguments.strip() != "{}":
                await self._answer(run, call, "error", "arguments are not a JSON object", called={})
                return
        if call.tool == "propose_action":
            try:
                pa = ProposeActionArgs.model_validate(raw)
            except ValidationError as e:
                await self._answer(
                    run, call, "refused", f"invalid propose_action: {_errors(e)}", called=raw
                )
                return
            await self._propose(
                run,
                call,
                action_id=pa.action,
                params=pa.params,
                rationale=pa.rationale,
                evidence=evidence_refs(run, pa.evidence),
                by=f"agent:{run.started.model}",
            )
            return
        tool = self.tools.get(call.tool)
        if tool is None:
            await self._answer(
                run,
                call,
                "refused",
                f"tool {call.tool} is not available on this daemon",
                called=raw,
            )
            return
        try:
            args = tool.args.model_validate(raw)
        except ValidationError as e:
            await self._answer(run, call, "error", f"invalid arguments: {_errors(e)}", called=raw)
            return
        await self._record_call(run, call, call.tool, args.model_dump(mode="json"))
        ctx = ToolContext(
            incident_id=run.started.incident_id,
            runbook_id=rb.id,
            labels=run.labels,
            world=self.ingestor.world,
            now=self.clock(),
            target=self._target(run)[0],
        )
        self.stats.tool_calls += 1
        result = await run_tool(tool, args, ctx, TOOL_TIMEOUT)
        if result.status == "error":
            self.stats.tool_failures += 1
        await self._record_result(run, call, result)

    async def _record_call(
        self, run: InvestigationRun, call: Call, tool: str, called: dict[str, Any]
    ) -> None:
        """Record the model's call of `tool` with the arguments it gave (ToolCalled)."""
        await self._record(
            run, RecordToolCall(run.id, run.version, call.call_id, tool, called, call.step)
        )

    async def _record_result(self, run: InvestigationRun, call: Call, result: ToolResult) -> None:
        payload, digest, size = result.data, "", 0
        if result.data is not None:
            from daemon.engine.blobs import encode

            raw = encode(result.data)
            size = len(raw)
            if size > self.config.tools.blob_threshold_bytes:
                digest, size = await self.blobs.put(result.data)
                payload = None
        await self._record(
            run,
            RecordToolResult(
                run.id,
                run.version,
                call.call_id,
                call.tool,
                result.status,
                result.observed_at,
                result.summary[:4000],
                dict(result.facts),
                payload,
                digest,
                size,
            ),
        )

    async def _propose(
        self,
        run: InvestigationRun,
        call: Call,
        *,
        action_id: str,
        params: dict[str, Any],
        rationale: str,
        evidence: tuple[EvidenceRef, ...],
        by: str,
    ) -> None:
        recorded = run.calls.get(call.call_id)
        if recorded is None or recorded.called is None:
            # Resuming a run stopped before its proposal: the call is recorded already.
            called = {"action": action_id, "params": params, "rationale": rationale}
            await self._record_call(run, call, "propose_action", called)
        target, source = self._target(run)
        try:
            await self._record(
                run,
                ProposeAction(
                    run.id, run.version, call.call_id, action_id, params, rationale, evidence, by,
                    target=target, target_source=source,
                ),
            )
        except Rejected as e:
            log.info(
                "proposal refused investigation=%s action=%s reason=%s", run.id, action_id, e.reason
            )
            await self._answer(run, call, "refused", f"refused: {e.reason}")
            return
        self.stats.proposals += 1
        log.info("action proposed investigation=%s action=%s", run.id, action_id)

    def _target(self, run: InvestigationRun) -> tuple[str, str]:
        """The host this investigation is about, and how it was found (labels or runbook)."""
        rb = self.runbooks.get(run.started.runbook_id)
        return derive_target(run.labels, self.targets, rb.target if rb else None)

    # --- the model -----------------------------------------------------------------------

    def tool_definitions(self, rb: Runbook) -> list[dict[str, Any]]:
        """OpenAI tool definitions: the runbook's available tools, propose_action, conclude."""
        defs = [describe(n, ARGS[n]) for n in rb.tools if n in self.tools]
        if rb.actions:
            pa = describe("propose_action", CONTROL["propose_action"])
            props = pa["function"]["parameters"]["properties"]
            props["action"]["enum"] = [a.id for a in rb.actions]
            pa["function"]["description"] += " Actions: " + "; ".join(
                f"{a.id} (risk {a.risk})" for a in rb.actions
            )
            defs.append(pa)
        defs.append(describe("conclude", CONTROL["conclude"]))
        return defs

    async def _call_model(self, run: InvestigationRun, rb: Runbook, step: CallModel) -> None:
        assert self.model is not None
        for call in run.calls.values():
            if (
                call.result is not None
                and call.result.blob
                and self.blobs.cached(call.result.blob) is None
            ):
                await asyncio.to_thread(self.blobs.get, call.result.blob)
        now = self.clock()
        messages = build_messages(
            run,
            rb,
            now,
            recent_in_full=self.config.recent_results_in_full,
            final=step.final,
            blob=self.blobs.cached,
            record=success_record_text(self.ingestor.world, rb.id, now),
            situation=lead_text(lead_brief(self.ingestor.world, run.started.incident_id)),
        )
        tools = None if step.final else self.tool_definitions(rb)
        await self._record(
            run,
            RecordLLMRequest(
                run.id,
                run.version,
                step.step,
                messages_hash(messages, tools),
                len(messages),
                tuple(t["function"]["name"] for t in tools or []),
                step.final,
            ),
        )
        self.stats.llm_calls += 1
        try:
            reply = await self.model.complete(messages, tools)
        except ModelError as e:
            self.stats.llm_failures += 1
            log.warning("model call failed investigation=%s step=%d error=%s", run.id, step.step, e)
            await self._record(run, RecordLLMFailure(run.id, run.version, step.step, str(e)))
            await asyncio.sleep(self.failure_pause(run.failures_in_row))
            return
        await self._record(
            run,
            RecordLLMResponse(
                run.id,
                run.version,
                step.step,
                reply.message,
                reply.tool_calls if not step.final else (),
                reply.usage,
                self.model.cost(reply.usage),
                reply.model,
                reply.finish_reason,
                reply.seconds,
            ),
        )


def _errors(e: ValidationError) -> str:
    return "; ".join(problems(e.errors(include_url=False), empty="arguments"))[:1000]
