"""An in-process watchkeeper for agent tests: a real event store and Ingestor in a temp dir,
the real loop and runbooks, a settable clock, and a fake tool layer where a test wants one."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from daemon.agent.llm import OpenAIChat
from daemon.agent.loop import Investigator
from daemon.agent.reaction import AgentReaction
from daemon.config.agent import AgentConfig
from daemon.config.settings import Settings
from daemon.domain import Alert, ReceiveAlert, fingerprint
from daemon.domain.events import DomainEvent
from daemon.domain.investigation_model import Investigation
from daemon.engine.blobs import BlobStore
from daemon.engine.ingest import Ingestor
from daemon.engine.store import EventLog
from daemon.runbooks.context_tools import AlertContext, PastIncidents
from daemon.runbooks.runbook import RunbookLibrary, load_runbooks
from daemon.runbooks.tools import (
    PromQLInstantArgs,
    PromQLRangeArgs,
    Tool,
    ToolContext,
    ToolResult,
)
from daemon.runtime.wiring import build_ingestor


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        """Move time forward."""
        self.now += timedelta(**kw)


@dataclass
class CannedPromQL:
    """A fake PromQL tool: the first answer whose key occurs in the query wins."""

    name: str
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    on_call: Callable[[], None] | None = None

    @property
    def args(self) -> type[PromQLInstantArgs] | type[PromQLRangeArgs]:
        """The real argument model of the tool this fakes."""
        return PromQLRangeArgs if self.name == "promql_range" else PromQLInstantArgs

    async def run(self, args: Any, ctx: ToolContext) -> ToolResult:
        """Answer from the table, or no_data."""
        self.queries.append(args.query)
        if self.on_call is not None:
            self.on_call()
        for key, facts in self.answers.items():
            if key in args.query:
                return ToolResult(
                    status="ok",
                    observed_at=ctx.now,
                    summary=f"1 series: {key} = {facts.get('value', facts.get('last'))}",
                    facts=facts,
                    data=[{"metric": {"key": key}, **facts}],
                )
        return ToolResult(
            status="no_data", observed_at=ctx.now, summary="no series", facts={"count": 0}
        )


@dataclass
class Harness:
    """The pieces an agent test drives."""

    ingestor: Ingestor
    config: AgentConfig
    runbooks: RunbookLibrary
    tools: dict[str, Tool]
    clock: Clock
    blobs: BlobStore
    model: OpenAIChat | None = None

    def investigator(self, **kw: Any) -> Investigator:
        """A fresh loop (as after a restart) over the same store."""
        return Investigator(
            self.ingestor,
            self.runbooks,
            tools=self.tools,
            model=self.model,
            blobs=self.blobs,
            config=self.config,
            clock=self.clock,
            failure_pause=lambda n: 0.0,
            **kw,
        )

    def reaction(self) -> AgentReaction:
        """The agent reaction (routing, queue, workers)."""
        return AgentReaction(
            self.ingestor, self.runbooks, self.config, self.investigator(), self.clock
        )

    async def fire(self, labels: dict[str, str], annotations: dict[str, str] | None = None) -> UUID:
        """Post one firing alert; return the incident it opened or joined."""
        alert = Alert(
            fingerprint=fingerprint(labels),
            labels=labels,
            annotations=annotations or {},
            starts_at=self.clock(),
            ends_at=self.clock() + timedelta(hours=1),
            source="test",
        )
        await self.ingestor.submit([ReceiveAlert(alert)])
        st = self.ingestor.world.alerts[alert.fingerprint]
        assert st.incident_id is not None
        return st.incident_id

    async def resolve(self, labels: dict[str, str]) -> None:
        """Post the alert as resolved now."""
        alert = Alert(
            fingerprint=fingerprint(labels),
            labels=labels,
            status="resolved",
            starts_at=self.clock() - timedelta(minutes=1),
            ends_at=self.clock(),
            source="test",
        )
        await self.ingestor.submit([ReceiveAlert(alert)])

    async def start(self, incident_id: UUID) -> list[UUID]:
        """Route the incident and record its StartInvestigation(s); return their ids."""
        cmds = self.reaction().starts_for(incident_id)
        assert cmds, "no runbook routed"
        await self.ingestor.submit(cmds)
        return [c.investigation_id for c in cmds]

    def stream(self, investigation_id: UUID) -> list[DomainEvent]:
        """The investigation's events."""
        return self.ingestor.log.stream(investigation_id)

    def types(self, investigation_id: UUID) -> list[str]:
        """Event type names of the investigation's stream."""
        return [type(e).__name__ for e in self.stream(investigation_id)]

    def entity(self, investigation_id: UUID) -> Investigation:
        """The compact entity in the World."""
        inv = self.ingestor.world.investigations.get(investigation_id)
        assert inv is not None
        return inv


@contextlib.asynccontextmanager
async def harness(
    tmp: Path,
    *,
    agent: dict[str, Any] | None = None,
    runbooks_dir: Path | None = None,
    tools: dict[str, Tool] | None = None,
    clock: Clock | None = None,
    llm_key: str = "test-key",
) -> AsyncIterator[Harness]:
    """A started Ingestor on a temp SQLite store, with the agent's pieces around it."""
    settings = Settings(
        store=f"sqlite:///{tmp}/events.db",
        state_dir=tmp,
        grouping={"group_by": ["alertname", "instance"]},
        agent=agent or {},
    )
    clock = clock or Clock()
    log = EventLog(settings.store)
    ing = build_ingestor(settings, log, clock)
    await ing.start()
    cfg = settings.agent
    lib = load_runbooks(runbooks_dir or cfg.runbooks_dir)
    assert not lib.problems, lib.problems
    all_tools: dict[str, Tool] = {
        "alert_context": AlertContext(),
        "past_incidents": PastIncidents(),
    }
    all_tools.update(tools or {})
    model = OpenAIChat(cfg.llm, llm_key) if cfg.llm else None
    h = Harness(ing, cfg, lib, all_tools, clock, BlobStore(log, ing.writer), model)
    try:
        yield h
    finally:
        if model is not None:
            await model.close()
        await ing.close()
        log.close()
