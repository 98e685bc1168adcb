"""The state watchkeeper decides from: open incidents, their alerts, and silences.

Entities are frozen; `evolve` replaces them. `World` is only the container that holds the
current entity of each stream (plus indexes derived from them), so a rebuild from the log
and a live run end in the same place.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from daemon.domain.action_model import ActionBook
from daemon.domain.alert_model import Alert
from daemon.domain.inhibit import InhibitRule, source_key
from daemon.domain.investigation_model import Investigations
from daemon.domain.limits import StateLimits
from daemon.domain.matchers import Matcher, matches_all
from daemon.domain.notification_model import NotificationLog
from daemon.domain.rule_model import RuleBook
from daemon.domain.situation_model import Correlation, Situations
from daemon.domain.timer_model import DeadlineBook

IncidentState = Literal["open", "acknowledged", "resolved", "closed"]
SEVERITY_RANK = {"critical": 4, "error": 3, "warning": 2, "info": 1, "none": 0}


class Incident(BaseModel):
    """A group of alerts sharing the values of the `group_by` labels, from open to closed."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    version: int
    group_key: str
    group_labels: dict[str, str]
    state: IncidentState = "open"
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None = None
    acknowledged_by: str = ""
    resolved_by: str = ""
    firing: int = 0
    alerts_total: int = 0
    severity: str = "none"
    title: str = ""
    reopen_count: int = 0
    # Worked by people (daemon/domain/incident_work.py): owner, escalation pause, notes.
    assignee: str = ""
    snoozed_until: datetime | None = None
    notes: int = 0
    links: tuple[UUID, ...] = ()

    @property
    def is_active(self) -> bool:
        """Open or acknowledged."""
        return self.state in ("open", "acknowledged")


class AlertState(BaseModel):
    """The latest recorded state of one alert and the stream its events go to."""

    model_config = ConfigDict(frozen=True)

    alert: Alert
    stream_id: UUID
    stream_version: int = 0
    incident_id: UUID | None = None
    silenced_by: tuple[UUID, ...] = ()
    # The firing alert that inhibits this one (see daemon/domain/inhibit.py), and the rule.
    inhibited_by: str = ""
    inhibit_rule: str = ""

    @property
    def firing(self) -> bool:
        """Whether the alert is firing."""
        return self.alert.status == "firing"


class Silence(BaseModel):
    """Matchers and a time window; matching alerts are recorded but open no incident."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    version: int
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str = ""
    ended_at: datetime | None = None
    ended_by: str = ""

    def state(self, now: datetime) -> Literal["pending", "active", "expired"]:
        """Alertmanager's silence states at `now`."""
        if self.ended_at is not None or now >= self.ends_at:
            return "expired"
        if now < self.starts_at:
            return "pending"
        return "active"

    def silences(self, labels: dict[str, str], now: datetime) -> bool:
        """Whether this silence mutes an alert with these labels at `now`."""
        return self.state(now) == "active" and matches_all(self.matchers, labels)


class GroupingPolicy(BaseModel):
    """How alerts become incidents: grouping labels, lease default and reopen window."""

    model_config = ConfigDict(frozen=True)

    group_by: tuple[str, ...] = ("alertname",)
    resolve_timeout: timedelta = timedelta(minutes=5)
    reopen_window: timedelta = timedelta(minutes=30)
    # A person resolved the incident while its alerts still fire: if they still fire this
    # long after, it reopens (as PagerDuty re-triggers), so a resolve cannot hide an alert.
    resolve_grace: timedelta = timedelta(minutes=5)
    # Ended silences stay listed this long, as in Alertmanager's data retention.
    silence_retention: timedelta = timedelta(days=5)
    # How much the hot set may hold; an alert past a limit is refused with a dead letter.
    limits: StateLimits = Field(default_factory=StateLimits)
    # Alertmanager's inhibit rules (daemon/domain/inhibit.py).
    inhibit_rules: tuple[InhibitRule, ...] = ()
    # How incidents are linked into situations (daemon/domain/situation_model.py).
    correlation: Correlation = Field(default_factory=Correlation)

    def group_labels(self, labels: dict[str, str]) -> dict[str, str]:
        """The labels that define the alert's group ("..." groups by every label)."""
        if "..." in self.group_by:
            return dict(sorted(labels.items()))
        return {k: labels[k] for k in sorted(self.group_by) if labels.get(k)}

    def group_key(self, labels: dict[str, str]) -> str:
        """Alertmanager-style group key, e.g. `{alertname="X", instance="h1"}`."""
        if "..." in self.group_by:
            return self._format_key(labels)
        # Asked for every firing alert, and a few groups hold many alerts: memoized by the
        # values of the grouping labels (emptied when full, like the fingerprint cache).
        memo = (self.group_by, *[labels.get(k) for k in self.group_by])
        key = _GROUP_KEYS.get(memo)
        if key is None:
            if len(_GROUP_KEYS) >= _GROUP_KEYS_SIZE:
                _GROUP_KEYS.clear()
            key = _GROUP_KEYS[memo] = self._format_key(labels)
        return key

    def _format_key(self, labels: dict[str, str]) -> str:
        inner = ", ".join(f'{k}="{v}"' for k, v in self.group_labels(labels).items())
        return "{" + inner + "}"


_GROUP_KEYS: dict[tuple[object, ...], str] = {}
_GROUP_KEYS_SIZE = 65_536


def _narrow(shared: dict[str, str], labels: dict[str, str]) -> None:
    """Keep in `shared` only the labels `labels` has with the same value."""
    if shared.items() <= labels.items():
        return  # the usual case, a set comparison in C: nothing to drop
    for k in [k for k, v in shared.items() if labels.get(k) != v]:
        del shared[k]


class World(BaseModel):
    """Current entities by id plus derived indexes. Mutated only by `evolve`."""

    policy: GroupingPolicy = Field(default_factory=GroupingPolicy)
    incidents: dict[UUID, Incident] = {}
    groups: dict[str, UUID] = {}
    alerts: dict[str, AlertState] = {}
    silences: dict[UUID, Silence] = {}
    # Most recently closed incidents (bounded), so listings can show them.
    closed: dict[UUID, Incident] = {}
    closed_kept: int = 500
    # Silenced firing episodes so far; each gets its own stream (see decide.silenced_stream_id).
    silenced_episodes: int = 0
    # When each alert was last refused at the hot set's limits (soft, bounded): a source
    # re-sends a refused alert every evaluation, and one dead letter a while is enough.
    refused_at: dict[str, datetime] = Field(default_factory=dict, exclude=True)
    # Inhibited firing episodes so far; each gets its own stream, like silenced ones.
    inhibited_episodes: int = 0
    # Durable timers (daemon/domain/timers.py) and the notification log (notifications.py).
    deadlines: DeadlineBook = Field(default_factory=DeadlineBook)
    notifications: NotificationLog = Field(default_factory=NotificationLog)
    # Investigations of hot incidents, and a bounded record of finished ones (investigation.py).
    investigations: Investigations = Field(default_factory=Investigations)
    # Metric rules as configured and the state of every series they watch (rules.py).
    rulebook: RuleBook = Field(default_factory=RuleBook)
    # Proposed actions, their approvals and outcomes, and the kill switch (actions.py).
    actions: ActionBook = Field(default_factory=ActionBook)
    # Incidents linked into situations, and per-target action leases (situation_model.py).
    situations: Situations = Field(default_factory=Situations)
    # The last notification id folded into this world (for checkpoints).
    position: int = 0
    # Soft state, not folded from events and not checkpointed: lease renewals. A source
    # such as Prometheus re-sends every firing alert on each evaluation with a later
    # endsAt; that is a repeat of an unchanged alert, so it is kept here, not stored.
    leases: dict[str, datetime] = Field(default_factory=dict, exclude=True)
    # After a restart the renewals are gone; until this time no lease expires, so
    # sources get one resolve_timeout to renew before anything resolves by lease.
    lease_grace_until: datetime | None = Field(default=None, exclude=True)
    # Index over `alerts`: each incident's alert fingerprints, so finding an incident's
    # alerts does not scan every alert (reactions do it on every event). Maintained by
    # evolve; derived, so not checkpointed.
    members: dict[UUID, dict[str, None]] = Field(default_factory=dict, exclude=True)
    # When firing leases may run out: a heap of (time, fingerprint) so Tick looks only at
    # what is due instead of every alert. Entries go stale (renewed, resolved, closed);
    # Tick re-checks each one it pops. Derived, so not checkpointed.
    lease_heap: list[tuple[datetime, str]] = Field(default_factory=list, exclude=True)
    # Firing alerts held by silences, re-checked against the silences on each Tick.
    silenced_firing: dict[str, None] = Field(default_factory=dict, exclude=True)
    # Firing alerts held by inhibit rules, re-checked when an alert resolves and on Tick.
    inhibited_firing: dict[str, None] = Field(default_factory=dict, exclude=True)
    # Alerts that matched an inhibit rule's source side, filed by rule and `equal` values
    # (inhibit.source_key), so a new alert finds its source without walking every firing
    # alert. Entries that stopped firing are dropped when met. Derived, not stored.
    inhibit_sources: dict[tuple[object, ...], dict[str, None]] = Field(
        default_factory=dict, exclude=True
    )
    # `shared_labels` answers, per incident, for firing alerts and for all alerts (None: no
    # alert qualifies). Filled by one walk on first ask; evolve narrows them in place as
    # alerts join (an intersection only shrinks then) and drops them when an alert stops
    # firing or leaves (only then can it widen). Reactions ask on every incident they
    # touch, and a storm puts thousands of alerts in one incident. Derived, not stored.
    shared_firing: dict[UUID, dict[str, str] | None] = Field(default_factory=dict, exclude=True)
    shared_all: dict[UUID, dict[str, str] | None] = Field(default_factory=dict, exclude=True)

    def active_silences(self, labels: dict[str, str], now: datetime) -> tuple[UUID, ...]:
        """Ids of silences muting these labels now."""
        if not self.silences:
            return ()
        return tuple(s.id for s in self.silences.values() if s.silences(labels, now))

    def lease_end(self, fingerprint: str) -> datetime | None:
        """When a firing alert's lease runs out: the later of recorded and renewed leases."""
        st = self.alerts.get(fingerprint)
        if st is None or st.alert.ends_at is None:
            return None
        end = max(st.alert.ends_at, self.leases.get(fingerprint, st.alert.ends_at))
        if self.lease_grace_until is not None and end < self.lease_grace_until:
            return self.lease_grace_until
        return end

    def incident_alerts(self, incident_id: UUID) -> list[AlertState]:
        """Alerts currently attached to an incident (in the order of `alerts`)."""
        return list(self.member_alerts(incident_id))

    def member_alerts(self, incident_id: UUID) -> Iterator[AlertState]:
        """The incident's alerts one by one, for callers that need only some of them."""
        for fp in self.members.get(incident_id, ()):
            yield self.alerts[fp]

    def shared_labels(
        self, incident_id: UUID, *, firing_only: bool = False
    ) -> dict[str, str] | None:
        """Labels every (firing) alert of the incident has with the same value; None if no
        alert qualifies.

        Answered from `shared_firing` / `shared_all` when known, else by one pass over the
        member index (stopping once nothing is shared), which is then kept.
        """
        memo = self.shared_firing if firing_only else self.shared_all
        if incident_id in memo:
            known = memo[incident_id]
            return None if known is None else dict(known)
        shared: dict[str, str] | None = None
        for st in self.member_alerts(incident_id):
            alert = st.alert
            if firing_only and alert.status != "firing":
                continue
            if shared is None:
                shared = dict(alert.labels)
                continue
            _narrow(shared, alert.labels)
            if not shared:
                break
        if incident_id in self.incidents:
            # Only hot incidents: evolve keeps these current, and closing drops them.
            memo[incident_id] = None if shared is None else dict(shared)
        return shared

    def shared_joined(self, incident_id: UUID, labels: dict[str, str]) -> None:
        """An alert with these labels fired in (or joined) the incident: narrow what is known."""
        for memo in (self.shared_firing, self.shared_all):
            if incident_id in memo:
                known = memo[incident_id]
                if known is None:
                    memo[incident_id] = dict(labels)
                elif known:
                    _narrow(known, labels)

    def shared_widened(self, incident_id: UUID | None, *, left: bool) -> None:
        """An alert of the incident stopped firing (or `left` it): forget what is known."""
        self.shared_firing.pop(incident_id, None)  # type: ignore[arg-type]
        if left:
            self.shared_all.pop(incident_id, None)  # type: ignore[arg-type]

    def note_inhibit_source(self, alert: Alert) -> None:
        """File a firing alert under every inhibit rule whose source side it matches."""
        for i, rule in enumerate(self.policy.inhibit_rules):
            if matches_all(rule.source_matchers, alert.labels):
                key = source_key(i, rule, alert.labels)
                self.inhibit_sources.setdefault(key, {})[alert.fingerprint] = None

    def inhibit_candidates(
        self, rule_index: int, rule: InhibitRule, labels: dict[str, str]
    ) -> Iterator[Alert]:
        """Firing alerts filed as sources of a rule with the same `equal` values as `labels`."""
        bucket = self.inhibit_sources.get(source_key(rule_index, rule, labels))
        if not bucket:
            return
        for fp in list(bucket):
            st = self.alerts.get(fp)
            if st is None or not st.firing:
                del bucket[fp]
                continue
            yield st.alert

    def track_lease(self, fingerprint: str, ends_at: datetime | None) -> None:
        """Note a lease end for Tick to look at (see `lease_heap`)."""
        if ends_at is not None:
            heapq.heappush(self.lease_heap, (ends_at, fingerprint))

    @model_validator(mode="after")
    def _index_members(self) -> World:
        # A world loaded from a checkpoint has alerts but no indexes (they are not stored).
        self.members = {}
        self.lease_heap = []
        self.silenced_firing = {}
        self.inhibited_firing = {}
        self.inhibit_sources = {}
        self.shared_firing = {}
        self.shared_all = {}
        for fp, st in self.alerts.items():
            if st.incident_id is not None:
                self.members.setdefault(st.incident_id, {})[fp] = None
            if st.firing:
                if self.policy.inhibit_rules:
                    self.note_inhibit_source(st.alert)
                if st.alert.ends_at is not None:
                    self.lease_heap.append((st.alert.ends_at, fp))
                if st.incident_id is None and st.inhibited_by:
                    self.inhibited_firing[fp] = None
                elif st.incident_id is None:
                    self.silenced_firing[fp] = None
        heapq.heapify(self.lease_heap)
        return self
