"""The "agent" reaction: route each opened (or reopened) incident to runbooks, start an
Investigation per runbook, and run investigations on a bounded pool of workers.

Starting is recorded with the reactor's tracking position in one transaction. Running is
not tied to the reactor: a queue ordered by severity then incident age feeds at most
`agent.concurrency` workers, so an alert storm queues instead of spawning unbounded model
calls. At start every unfinished investigation in the World is queued again and resumes
from its events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Tracking

from daemon.agent.loop import Investigator
from daemon.agent.prompt import prompt_hash
from daemon.agent.queue import InvestigationQueue
from daemon.config.agent import AgentConfig
from daemon.domain import Rejected
from daemon.domain.events import DomainEvent, IncidentOpened, IncidentReopened
from daemon.domain.investigation_model import (
    Investigation,
    InvestigationStarted,
    StartInvestigation,
    investigation_id_for,
)
from daemon.domain.routing import RouteTree, route, with_runbook_matches
from daemon.domain.situation_model import SituationUnlinked
from daemon.engine.ingest import Ingestor
from daemon.runbooks.context_tools import common_labels, incident_context
from daemon.runbooks.runbook import RunbookLibrary

log = logging.getLogger("watchkeeper.agent")
# Asked on every committed event: a set lookup by exact type (events are leaf classes).
_STARTS = frozenset({IncidentOpened, IncidentReopened, SituationUnlinked})


def runbook_problem(runbooks: RunbookLibrary, config: AgentConfig) -> str | None:
    """Why investigations cannot start as configured, or None."""
    where = str(config.runbooks_dir) if config.runbooks_dir else "the shipped runbooks"
    if not runbooks.runbooks:
        return (
            f"no usable runbook in {where} ({len(runbooks.problems)} problem(s)); "
            "no investigation can start: set agent.runbooks_dir or fix the runbooks"
        )
    default = config.default_runbook
    if default and default not in runbooks.runbooks:
        return (
            f"agent.default_runbook {default!r} is not among the {len(runbooks.runbooks)} "
            f"runbook(s) in {where}; unmatched incidents get no investigation"
        )
    return None


class AgentReaction:
    """Routes incidents to runbooks and runs their investigations under a concurrency cap."""

    name = "agent"

    def __init__(
        self,
        ingestor: Ingestor,
        runbooks: RunbookLibrary,
        config: AgentConfig,
        investigator: Investigator,
        clock: Callable[[], datetime],
        *,
        shadow: RunbookLibrary | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.runbooks = runbooks
        self.shadow = shadow or RunbookLibrary()
        self.config = config
        self.investigator = investigator
        self.clock = clock
        self.tree: RouteTree = with_runbook_matches(
            config.tree(), {rid: rb.match for rid, rb in runbooks.runbooks.items()}
        )
        self.problem = runbook_problem(runbooks, config)
        self._warned: set[str] = set()  # unknown runbook ids already logged, once each
        self.queue = InvestigationQueue()
        self.running: dict[Any, asyncio.Task[Any]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._retries: set[asyncio.Task[None]] = set()
        self.retry_after = 30.0

    # --- Reaction ------------------------------------------------------------------------

    def interested(self, event: DomainEvent) -> bool:
        """Opened and reopened incidents, and incidents taken out of a situation."""
        return type(event) in _STARTS

    async def react(self, position: int, event: DomainEvent) -> None:
        """Route the incident and record one StartInvestigation per selected runbook."""
        tracking = Tracking(f"reactor:{self.name}", position)
        reopened_at = event.timestamp if isinstance(event, IncidentReopened) else None
        if isinstance(event, SituationUnlinked):
            # Taken out, it is investigated on its own; a member that now leads, likewise.
            commands = self.starts_for(event.incident_id)
            if event.new_lead is not None:
                commands += self.starts_for(event.new_lead)
        else:
            commands = self.starts_for(event.originator_id, reopened_at=reopened_at)
        try:
            events = await self.ingestor.submit(commands, tracking=tracking)
        except Rejected as e:
            log.info(
                "no investigation started incident=%s reason=%s", event.originator_id, e.reason
            )
            await self.ingestor.submit([], tracking=tracking)
            return
        for ev in events:
            if isinstance(ev, InvestigationStarted):
                inv = self.ingestor.world.investigations.get(ev.originator_id)
                if inv is not None:
                    await self._enqueue(inv)

    def starts_for(
        self, incident_id: Any, *, reopened_at: datetime | None = None
    ) -> list[StartInvestigation]:
        """Commands starting a run of every routed runbook not yet investigated.

        A new incident gets one run per runbook; a reopened one gets a new run of each
        runbook whose runs all finished before it reopened. A runbook with a different
        version in the shadow library also gets a shadow run of that version.
        """
        world = self.ingestor.world
        inc = world.incidents.get(incident_id)
        if inc is None or not inc.is_active:
            return []
        labels = common_labels(world, inc.id)
        runs = world.investigations.for_incident(inc.id)
        budget_steps: int | None = None
        situation = world.situations.of_incident(inc.id)
        if situation is not None and situation.lead != inc.id:
            # A member: the lead investigation sees its alerts; at most a short run here.
            budget_steps = world.policy.correlation.member_steps
            if budget_steps <= 0:
                log.info(
                    "no investigation of its own incident=%s: lead of situation=%s covers it",
                    inc.id,
                    situation.id,
                )
                return []
        out = []
        for rid in route(self.tree, labels):
            rb = self.runbooks.get(rid)
            if rb is None:
                if rid not in self._warned:  # once, not once per incident
                    self._warned.add(rid)
                    log.warning(
                        "route names an unknown runbook runbook=%s incident=%s "
                        "(logged once per runbook)", rid, inc.id,
                    )
                continue
            candidate = self.shadow.get(rid)
            tries = [(rb, False)]
            if candidate is not None and candidate.version != rb.version:
                tries.append((candidate, True))
            for book, shadow in tries:
                mine = [r for r in runs if r.runbook_id == rid and r.shadow == shadow]
                if any(not r.finished for r in mine):
                    continue
                if mine and (reopened_at is None or any(r.started_at >= reopened_at for r in mine)):
                    continue
                number = len(mine) + 1
                llm = self.config.llm
                budget = book.budgets.budget()
                if budget_steps is not None:
                    budget = budget.model_copy(update={"steps": min(budget.steps, budget_steps)})
                out.append(
                    StartInvestigation(
                        investigation_id=investigation_id_for(
                            inc.id, f"{rid}@shadow" if shadow else rid, number
                        ),
                        incident_id=inc.id,
                        run=number,
                        runbook_id=rid,
                        runbook_version=book.version,
                        mode="llm" if llm else "deterministic",
                        model=llm.model if llm else "",
                        prompt_hash=prompt_hash(book),
                        budget=budget,
                        actions=book.specs(),
                        context=incident_context(world, inc.id),
                        shadow=shadow,
                    )
                )
        return out

    # --- workers -------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the workers and queue every unfinished investigation (resume after restart)."""
        for i in range(self.config.concurrency):
            self._workers.append(asyncio.create_task(self._work(), name=f"agent:worker:{i}"))
        pending = [i for i in self.ingestor.world.investigations.active.values() if not i.finished]
        for inv in pending:
            await self._enqueue(inv)
        if pending:
            log.info("resuming investigations count=%d", len(pending))

    async def shut(self) -> None:
        """Stop the workers; unfinished investigations resume from their events next start."""
        for t in (*self._workers, *self._retries):
            t.cancel()
        await asyncio.gather(*self._workers, *self._retries, return_exceptions=True)
        self._workers.clear()

    async def _enqueue(self, inv: Investigation) -> None:
        await self.queue.put(
            inv.id,
            severity=inv.severity,
            incident_opened_at=inv.incident_opened_at,
            runbook_id=inv.runbook_id,
            incident_id=inv.incident_id,
            now=time.monotonic(),
            member=self.ingestor.world.situations.is_member(inv.incident_id),
        )

    async def _work(self) -> None:
        while True:
            iid = await self.queue.get()
            task = asyncio.current_task()
            assert task is not None
            self.running[iid] = task
            try:
                await self.investigator.investigate(iid)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "investigation failed id=%s; retrying in %.0fs", iid, self.retry_after
                )
                retry = asyncio.create_task(self._retry(iid), name=f"agent:retry:{iid}")
                self._retries.add(retry)
                retry.add_done_callback(self._retries.discard)
            finally:
                self.running.pop(iid, None)

    async def _retry(self, iid: Any) -> None:
        # A store or tool failure should not park an investigation until the next restart.
        await asyncio.sleep(self.retry_after)
        inv = self.ingestor.world.investigations.active.get(iid)
        if inv is not None and not inv.finished:
            await self._enqueue(inv)

    # --- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Queue, running investigations, model and counters for /api/v1/status."""
        world = self.ingestor.world
        book = world.investigations
        active = list(book.active.values())
        stats = self.investigator.stats
        return {
            "model": self.config.llm.model if self.config.llm else "none (deterministic path)",
            "concurrency": self.config.concurrency,
            "running": len(self.running),
            "queued": len(self.queue),
            "queue": self.queue.snapshot(time.monotonic()),
            "runbooks": len(self.runbooks.runbooks),
            "runbook_problems": len(self.runbooks.problems),
            "problem": self.problem,
            "investigations": {
                "unfinished": sum(1 for i in active if not i.finished),
                "concluded": sum(
                    1 for i in (*active, *book.past.values()) if i.status == "concluded"
                ),
                "escalated": sum(1 for i in (*active, *book.past.values()) if i.escalated),
            },
            "tokens": sum(i.usage.total for i in (*active, *book.past.values())),
            "cost": round(sum(i.cost for i in (*active, *book.past.values())), 6),
            "llm_calls": stats.llm_calls,
            "llm_failures": stats.llm_failures,
            "tool_calls": stats.tool_calls,
            "proposals": stats.proposals,
            "refused": stats.refused,
        }

    def collectors(self) -> list[Any]:
        """Prometheus collectors for /metrics."""
        from daemon.agent.metrics import AgentCollector

        return [AgentCollector(self.status)]
