"""The notify reaction: escalation chains on durable deadlines, and chat follow-ups.

An opening (or reopening) incident gets the first step of its policy as a deadline. When
an escalation deadline fires, the step's channels are paged through the pipeline and the
next step is set. Acknowledging or resolving cancels what is pending (per the policy's
stop conditions) and updates every channel that shows the incident. All of it, with the
reaction's tracked position, is recorded in one commit per event, so a restart neither
re-sends what was sent nor loses what was due.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking

from daemon.config.notify import NotificationsConfig
from daemon.domain import Rejected
from daemon.domain.commands import Command
from daemon.domain.durations import format_duration
from daemon.domain.escalation import (
    EscalationPolicy,
    Step,
    first_step,
    next_step,
    routing_labels,
    select_policy,
    stop_reason,
)
from daemon.domain.events import (
    DomainEvent,
    IncidentAcknowledged,
    IncidentClosed,
    IncidentOpened,
    IncidentReopened,
    IncidentResolved,
)
from daemon.domain.notification_model import Escalate, window_frees_at
from daemon.domain.state import Incident, World
from daemon.domain.timer_model import (
    CancelDeadline,
    DeadlineFired,
    SetDeadline,
    deadline_id,
)
from daemon.engine.ingest import Ingestor
from daemon.notify.content import digest, incident_message, summary_message
from daemon.notify.pipeline import (
    Dedup,
    Deliver,
    Message,
    Notice,
    Notifier,
    Outcome,
    Pipeline,
    RetryPolicy,
    StormControl,
)

log = logging.getLogger("watchkeeper.notify")
# Asked on every committed event: a set lookup by exact type (events are leaf classes).
_LIFECYCLE = frozenset(
    {IncidentOpened, IncidentReopened, IncidentAcknowledged, IncidentResolved, IncidentClosed}
)
ESCALATION = "escalation"
SUMMARY = "notify-summary"
# Events of later stages, recognised by name so this module does not depend on theirs.
FOLLOW_UPS = {
    "ActionProposed": "action_proposed",
    "ApprovalRequested": "approval_requested",
    "ApprovalReminded": "approval_requested",
    "ActionEscalated": "escalated",
    "ActionSucceeded": "action_executed",
    "ActionExecuted": "action_executed",
    "ActionFailed": "action_failed",
    "InvestigationConcluded": "concluded",
}


class NotifyReaction:
    """Follows the log; pages, escalates and updates chat for incidents."""

    name = "notify"

    def __init__(
        self,
        ingestor: Ingestor,
        notifiers: Mapping[str, Notifier],
        config: NotificationsConfig,
        clock: Callable[[], datetime],
        *,
        console_url: str = "",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.ingestor, self.notifiers, self.clock = ingestor, notifiers, clock
        self.policies: Sequence[EscalationPolicy] = config.escalation_policies()
        self.console_url = console_url or config.console_url
        self.storm = config.storm
        retry = RetryPolicy(
            attempts=config.retry.attempts,
            backoff=config.retry.backoff.total_seconds(),
            max_backoff=config.retry.max_backoff.total_seconds(),
        )
        world = self._world
        self.pipeline = Pipeline(
            [
                Dedup(world),
                StormControl(
                    world, clock, notifiers, config.storm.max_messages, config.storm.window
                ),
            ],
            Deliver(notifiers, retry, sleep=sleep, rand=rand),
        )

    def _world(self) -> World:
        return self.ingestor.world

    # --- Service: each channel keeps one HTTP client while the reactor runs -------------

    async def open(self) -> None:
        """Nothing to start: channels open their clients at their first message."""

    async def shut(self) -> None:
        """Close every channel's HTTP client."""
        for notifier in self.notifiers.values():
            close = getattr(notifier, "aclose", None)
            if close is not None:
                await close()

    # --- Reaction protocol ---------------------------------------------------------------

    def interested(self, event: DomainEvent) -> bool:
        """Incident lifecycle events, fired deadlines of ours, and later stages' follow-ups."""
        if isinstance(event, DeadlineFired):
            return event.kind in (ESCALATION, SUMMARY)
        return type(event) in _LIFECYCLE or type(event).__name__ in FOLLOW_UPS

    async def react(self, position: int, event: DomainEvent) -> None:
        """Work out and perform what `event` asks for; record it with our position."""
        commands = await self._handle(position, event)
        if not commands:
            return
        tracking = Tracking(f"reactor:{self.name}", position)
        try:
            await self.ingestor.submit(commands, tracking=tracking)
        except Rejected as e:
            # A lone command that state refuses (e.g. a deadline that already fired).
            log.info("notify record refused position=%d: %s", position, e.reason)

    # --- dispatch ------------------------------------------------------------------------

    async def _handle(self, position: int, event: DomainEvent) -> list[Command]:
        if isinstance(event, IncidentOpened | IncidentReopened):
            return self._start_chain(position, event)
        if isinstance(event, DeadlineFired) and event.kind == ESCALATION:
            return await self._escalate(position, event)
        if isinstance(event, DeadlineFired) and event.kind == SUMMARY:
            return await self._summary(position, event)
        if isinstance(event, IncidentAcknowledged):
            note = f"Acknowledged by {event.by}" + (f": {event.comment}" if event.comment else "")
            return await self._stop_and_follow_up(position, event, "acknowledged", note)
        if isinstance(event, IncidentResolved):
            return await self._stop_and_follow_up(
                position, event, "resolved", f"Resolved: {event.reason}"
            )
        if isinstance(event, IncidentClosed):
            return self._cancel(event.originator_id, None, "incident closed")
        kind = FOLLOW_UPS.get(type(event).__name__)
        if kind is not None:
            return await self._follow_up_of_later_stage(position, event, kind)
        return []

    # --- escalation ----------------------------------------------------------------------

    def _policy(self, name: object, inc: Incident) -> EscalationPolicy | None:
        named = next((p for p in self.policies if p.name == name), None)
        return named or select_policy(self.policies, routing_labels(self._world(), inc))

    def _start_chain(self, position: int, event: DomainEvent) -> list[Command]:
        world = self._world()
        inc = world.incidents.get(event.originator_id)
        if inc is None or not inc.is_active:
            return []
        policy = select_policy(self.policies, routing_labels(world, inc))
        if policy is None:
            log.info("no escalation policy matches incident=%s labels=%s", inc.id, inc.group_labels)
            return []
        step = first_step(policy)
        # The chain is named by the position of the event that opened it: unique and stable.
        return [self._step_deadline(inc.id, policy, position, step, event.timestamp + step.wait)]

    def _step_deadline(
        self,
        incident_id: UUID,
        policy: EscalationPolicy,
        chain: int,
        step: Step,
        due: datetime,
    ) -> SetDeadline:
        level, round_ = step.level, step.round
        return SetDeadline(
            deadline_id=deadline_id(ESCALATION, incident_id, chain, level, round_),
            kind=ESCALATION,
            due_at=due,
            subjects=(incident_id,),
            payload={"policy": policy.name, "level": level, "round": round_, "chain": chain},
        )

    async def _escalate(self, position: int, event: DeadlineFired) -> list[Command]:
        world = self._world()
        inc_id = event.subjects[0] if event.subjects else None
        inc = world.incidents.get(inc_id) if inc_id else None
        if inc is None:
            return []
        policy = self._policy(event.payload.get("policy"), inc)
        level, round_ = int(event.payload.get("level", 0)), int(event.payload.get("round", 0))
        chain = int(event.payload.get("chain", position))
        if policy is None or level >= len(policy.levels):
            log.warning(
                "escalation step has no policy level any more incident=%s payload=%s",
                inc.id,
                event.payload,
            )
            return []
        why = stop_reason(policy.stop_on, inc)
        if why:
            log.info("escalation stopped incident=%s: %s", inc.id, why)
            return []
        channels = policy.levels[level].channels
        first = (level, round_) == (0, 0)
        kind = ("reopened" if inc.reopen_count else "opened") if first else "escalated"
        note = (
            ""
            if first
            else (
                f"Escalated to level {level + 1} of policy {policy.name}"
                + (f" (repeat {round_})" if round_ else "")
                + f": paging {', '.join(channels)}"
            )
        )
        esc = {"policy": policy.name, "level": level, "round": round_}
        msg = incident_message(
            world, inc, kind, self.clock(), console_url=self.console_url, note=note, escalation=esc
        )
        key = f"esc:{chain}:{level}:{round_}"
        detail = f"policy {policy.name} level {level + 1}" + (f" repeat {round_}" if round_ else "")
        outcomes = await self.pipeline.run_all(
            [self._notice(c, inc.id, msg, key, detail=detail) for c in channels]
        )
        cmds: list[Command] = []
        if not first:
            cmds.append(Escalate(inc.id, policy.name, level, round_, channels))
        cmds += self._records(position, outcomes)
        step = next_step(policy, level, round_)
        if step is not None:
            cmds.append(self._step_deadline(inc.id, policy, chain, step, self.clock() + step.wait))
        return cmds

    def _cancel(self, incident_id: UUID, condition: str | None, reason: str) -> list[Command]:
        cmds: list[Command] = []
        for d in self._world().deadlines.about(incident_id, ESCALATION):
            policy = next((p for p in self.policies if p.name == d.payload.get("policy")), None)
            if condition is None or policy is None or condition in policy.stop_on:
                cmds.append(CancelDeadline(d.id, reason))
        return cmds

    async def _stop_and_follow_up(
        self, position: int, event: DomainEvent, kind: str, note: str
    ) -> list[Command]:
        inc_id = event.originator_id
        cmds = self._cancel(inc_id, kind, note)
        return cmds + await self._follow_up(
            position, inc_id, kind, note, key=f"{kind}:{event.originator_version}"
        )

    async def _follow_up(
        self, position: int, incident_id: UUID, kind: str, note: str, *, key: str
    ) -> list[Command]:
        world = self._world()
        inc = world.incidents.get(incident_id)
        threads = world.notifications.threads_of(incident_id)
        if inc is None or not threads:
            return []
        msg = incident_message(
            world, inc, kind, self.clock(), console_url=self.console_url, note=note
        )
        notices = [
            self._notice(t.channel, incident_id, msg, key, needs_thread=True)
            for t in threads
            if t.channel in self.notifiers
        ]
        return self._records(position, await self.pipeline.run_all(notices))

    async def _follow_up_of_later_stage(
        self, position: int, event: DomainEvent, kind: str
    ) -> list[Command]:
        inc_id: Any = getattr(event, "incident_id", None)
        if inc_id is None:
            invs: Any = getattr(self._world(), "investigations", None)
            inv = invs.get(event.originator_id) if hasattr(invs, "get") else None
            inc_id = getattr(inv, "incident_id", None)
        if not isinstance(inc_id, UUID):
            return []
        note = {
            "action_proposed": f"Agent proposed {getattr(event, 'kind', 'an action')}",
            "concluded": "Investigation concluded"
            + (
                f": {getattr(event, 'probable_cause', '')}"
                if getattr(event, "probable_cause", "")
                else ""
            ),
        }.get(kind, str(getattr(event, "reason", "")) or kind.replace("_", " ").capitalize())
        return await self._follow_up(position, inc_id, kind, note, key=f"{kind}:{position}")

    # --- storm summaries -----------------------------------------------------------------

    async def _summary(self, position: int, event: DeadlineFired) -> list[Command]:
        channel = str(event.payload.get("channel", ""))
        chlog = self._world().notifications.channel(channel)
        if chlog.held_pending == 0 or channel not in self.notifiers:
            return []
        msg = summary_message(
            channel,
            chlog.held_back,
            chlog.held_pending,
            format_duration(self.storm.window),
            self.console_url,
        )
        notice = Notice(
            channel=channel,
            message=msg,
            key=f"summary:{position}",
            digest=digest(msg),
            summarized=chlog.held_pending,
            detail=f"{chlog.held_pending} held back",
        )
        return self._records(position, await self.pipeline.run_all([notice]))

    # --- helpers -------------------------------------------------------------------------

    def _notice(
        self,
        channel: str,
        incident_id: UUID,
        msg: Message,
        key: str,
        *,
        needs_thread: bool = False,
        detail: str = "",
    ) -> Notice:
        return Notice(
            channel=channel,
            message=msg,
            key=key,
            digest=digest(msg),
            thread=self._world().notifications.thread(incident_id, channel),
            needs_thread=needs_thread,
            detail=detail,
        )

    def _records(self, position: int, outcomes: Sequence[Outcome]) -> list[Command]:
        """Notification-log commands, plus a summary deadline for channels that began holding."""
        cmds: list[Command] = []
        world = self._world()
        for o in outcomes:
            cmd = o.command()
            if cmd is not None:
                cmds.append(cmd)
            if o.status != "held":
                continue
            ch = o.notice.channel
            pending = [
                d
                for d in world.deadlines.pending.values()
                if d.kind == SUMMARY and d.payload.get("channel") == ch
            ]
            if pending:
                continue
            chlog = world.notifications.channel(ch)
            due = window_frees_at(chlog, self.storm.max_messages, self.storm.window) or (
                self.clock() + self.storm.window
            )
            cmds.append(
                SetDeadline(
                    deadline_id=deadline_id(SUMMARY, ch, position),
                    kind=SUMMARY,
                    due_at=due,
                    payload={"channel": ch},
                )
            )
        return cmds
