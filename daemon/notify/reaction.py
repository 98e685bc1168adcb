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
from daemon.domain.incident_work import IncidentUnacknowledged
from daemon.domain.notification_model import Escalate, RecordAttempt, window_frees_at
from daemon.domain.situation_model import SituationLinked, SituationUnlinked
from daemon.domain.state import Incident, World
from daemon.domain.timer_model import (
    CancelDeadline,
    DeadlineFired,
    SetDeadline,
    deadline_id,
)
from daemon.engine.ingest import Ingestor
from daemon.engine.outage import StoreUnavailable
from daemon.notify.content import digest, incident_message, summary_message
from daemon.notify.followups import FOLLOW_UPS, follow_up_note, incident_of
from daemon.notify.pipeline import (
    ChatNotifier,
    Dedup,
    Deliver,
    Message,
    Notice,
    Outcome,
    Pipeline,
    RetryPolicy,
    StormControl,
)

log = logging.getLogger("watchkeeper.notify")
# Asked on every committed event: a set lookup by exact type (events are leaf classes).
_LIFECYCLE = frozenset(
    {
        IncidentOpened,
        IncidentReopened,
        IncidentAcknowledged,
        IncidentUnacknowledged,
        IncidentResolved,
        IncidentClosed,
    }
)
ESCALATION = "escalation"
SUMMARY = "notify-summary"


class NotifyReaction:
    """Follows the log; pages, escalates and updates chat for incidents."""

    name = "notify"

    def __init__(
        self,
        ingestor: Ingestor,
        notifiers: Mapping[str, ChatNotifier],
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
        # Buttons only when a Slack app (its signing secret) is there to answer them.
        self.interactive = bool(config.slack_app.signing_secret)
        retry = RetryPolicy(
            attempts=config.retry.attempts,
            backoff=config.retry.backoff.total_seconds(),
            max_backoff=config.retry.max_backoff.total_seconds(),
        )
        # Records not committed because the store failed, kept for the event's retry.
        self._unrecorded: tuple[int, list[Command]] | None = None
        world = self._world
        self.pipeline = Pipeline(
            [
                Dedup(world, notifiers),
                StormControl(
                    world, clock, notifiers, config.storm.max_messages, config.storm.window
                ),
            ],
            Deliver(notifiers, retry, sleep=sleep, rand=rand),
            self._record_attempts,
        )

    def _world(self) -> World:
        return self.ingestor.world

    async def _record_attempts(self, attempts: Sequence[RecordAttempt]) -> None:
        # Committed (fenced, like every commit) before anything is sent: a daemon that dies
        # after sending leaves an attempt without outcome, which is never sent again.
        await self.ingestor.submit(list(attempts))

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
        return (
            type(event) in _LIFECYCLE
            or type(event).__name__ in FOLLOW_UPS
            or isinstance(event, SituationLinked | SituationUnlinked)
        )

    async def react(self, position: int, event: DomainEvent) -> None:
        """Work out and perform what `event` asks for; record it with our position."""
        unrecorded, self._unrecorded = self._unrecorded, None
        if unrecorded is not None and unrecorded[0] == position:
            # The record of what we sent failed to commit (the store went away): the event
            # is handled again, and what was sent is recorded, not sent again.
            commands = unrecorded[1]
        else:
            commands = await self._handle(position, event)
        if not commands:
            return
        tracking = Tracking(f"reactor:{self.name}", position)
        try:
            await self.ingestor.submit(commands, tracking=tracking)
        except Rejected as e:
            # A lone command that state refuses (e.g. a deadline that already fired).
            log.info("notify record refused position=%d: %s", position, e.reason)
        except StoreUnavailable:
            self._unrecorded = (position, commands)
            raise

    # --- dispatch ------------------------------------------------------------------------

    async def _handle(self, position: int, event: DomainEvent) -> list[Command]:
        if isinstance(event, IncidentOpened | IncidentReopened):
            return self._start_chain(position, event)
        if isinstance(event, SituationLinked | SituationUnlinked):
            return await self._situation_changed(position, event)
        if isinstance(event, IncidentUnacknowledged):
            # Given back: nobody has it, so escalation starts again from its first step.
            note = f"Unacknowledged by {event.by}" + (f": {event.reason}" if event.reason else "")
            key = f"unacknowledged:{event.originator_version}"
            follow = await self._follow_up(
                position, event.originator_id, "unacknowledged", note, key=key
            )
            return follow + self._start_chain(position, event)
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
        if world.situations.is_member(inc.id):
            # One page per situation: its lead's. This incident shows in the lead's thread.
            return []
        return self._chain_for(inc, position, event.timestamp)

    def _chain_for(self, inc: Incident, position: int, at: datetime) -> list[Command]:
        world = self._world()
        policy = select_policy(self.policies, routing_labels(world, inc))
        if policy is None:
            log.info("no escalation policy matches incident=%s labels=%s", inc.id, inc.group_labels)
            return []
        step = first_step(policy)
        # The chain is named by the position of the event that opened it: unique and stable.
        return [self._step_deadline(inc.id, policy, position, step, at + step.wait)]

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
        snoozed = inc.snoozed_until
        if snoozed is not None and snoozed > self.clock():
            # Snoozed: the same step waits until the snooze ends (a deadline of its own).
            log.info("escalation snoozed incident=%s until=%s", inc.id, snoozed.isoformat())
            wait = SetDeadline(
                deadline_id=deadline_id(
                    ESCALATION, inc.id, chain, level, round_, "snoozed", snoozed.isoformat()
                ),
                kind=ESCALATION,
                due_at=snoozed,
                subjects=(inc.id,),
                payload=dict(event.payload),
            )
            return [wait]
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
        msg = self._message(world, inc, kind, note, esc)
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
        self,
        position: int,
        incident_id: UUID,
        kind: str,
        note: str,
        *,
        key: str,
        fresh: bool = False,
    ) -> list[Command]:
        world = self._world()
        inc = world.incidents.get(incident_id)
        thread_of = incident_id
        threads = world.notifications.threads_of(incident_id)
        situation = world.situations.of_incident(incident_id)
        if not threads and situation is not None and inc is not None:
            # A member has no thread of its own: its news is told in its lead's message
            # (edited in place where the channel can), as a note naming the member.
            thread_of = situation.lead
            threads = world.notifications.threads_of(thread_of)
            note = f"{inc.title or inc.group_key}: {note}"
            inc = world.incidents.get(thread_of)
        if inc is None or not threads:
            return []
        msg = self._message(world, inc, kind, note)
        notices = [
            self._notice(t.channel, thread_of, msg, key, needs_thread=True, fresh=fresh)
            for t in threads
            if t.channel in self.notifiers
        ]
        return self._records(position, await self.pipeline.run_all(notices))

    def _message(
        self,
        world: World,
        inc: Incident,
        kind: str,
        note: str = "",
        escalation: dict[str, Any] | None = None,
    ) -> Message:
        return incident_message(
            world,
            inc,
            kind,
            self.clock(),
            console_url=self.console_url,
            note=note,
            escalation=escalation,
            interactive=self.interactive,
        )

    async def _follow_up_of_later_stage(
        self, position: int, event: DomainEvent, kind: str
    ) -> list[Command]:
        world = self._world()
        inc_id = incident_of(event, world)
        if inc_id is None:
            return []
        note = follow_up_note(event, world)
        # Each of these is news even when the message itself looks the same (a reminder).
        return await self._follow_up(
            position, inc_id, kind, note, key=f"{kind}:{position}", fresh=True
        )

    # --- situations -----------------------------------------------------------------------

    async def _situation_changed(
        self, position: int, event: SituationLinked | SituationUnlinked
    ) -> list[Command]:
        """A member joined or left: stop its own chain, tell the lead's thread (an edit where
        the channel can edit, a reply in the thread otherwise)."""
        world = self._world()
        s = world.situations.get(event.originator_id)
        inc = world.incidents.get(event.incident_id)
        if s is None or inc is None:
            return []
        cmds: list[Command] = []
        if isinstance(event, SituationLinked):
            if event.incident_id == s.lead:
                return []
            cmds += self._cancel(
                inc.id, None, f"linked into situation {s.id}; its lead incident pages"
            )
            name = inc.title or inc.group_key
            note = f"{name} joined this situation ({event.rule}: {event.reason})"
        else:
            note = f"{inc.title or inc.group_key} left this situation ({event.reason})"
            # On its own again: it pages through its own chain from now on; so does a
            # member that became the lead (a former lead has paged already).
            new_lead = world.incidents.get(event.new_lead) if event.new_lead else None
            for other in (inc, new_lead):
                if other is not None and other.is_active and not self._paged(other.id):
                    cmds += self._chain_for(other, position, event.timestamp)
        # A lead that left tells its own thread; otherwise the (new) lead's thread hears it.
        told = inc.id if isinstance(event, SituationUnlinked) and event.new_lead else s.lead
        return cmds + await self._follow_up(
            position, told, "situation", note, key=f"situation:{position}"
        )

    def _paged(self, incident_id: UUID) -> bool:
        """Whether the incident has a chain running or a message out already."""
        world = self._world()
        return bool(
            world.notifications.threads_of(incident_id)
            or world.deadlines.about(incident_id, ESCALATION)
        )

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
        fresh: bool = False,
    ) -> Notice:
        return Notice(
            channel=channel,
            message=msg,
            key=key,
            digest=digest(msg) + (f":{key}" if fresh else ""),
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
