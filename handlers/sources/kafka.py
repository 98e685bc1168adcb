"""Kafka source (aiokafka) with exactly-once ingestion through the event store's tracking table.

Per `getmany()` batch, each partition's records become one `Ingestor.submit` with
`Tracking("kafka:<topic>:<partition>", last offset)`: the events and the position commit in
one transaction. On assignment the consumer seeks to the recorded position + 1, so a crash
at any point neither loses nor repeats a record. Kafka's own committed offsets are written
only so lag shows up in Kafka tooling; they are never read back.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context
from eventsourcing.persistence import Tracking

from daemon.config.sources import KafkaConfig
from daemon.domain.commands import Command
from daemon.domain.limits import DEFAULT_LIMITS, AlertLimits
from daemon.intake.formats import PayloadError
from daemon.intake.payloads import coalesce, dead_letter, decode
from daemon.intake.source import SourceHealth
from daemon.intake.streams import (
    Backoff,
    Intake,
    SourceTasks,
    StoreUnavailable,
    describe,
    pause_for_store,
)

log = logging.getLogger("watchkeeper.sources.kafka")
_NS = uuid5(NAMESPACE_URL, "https://watchkeeper.invalid/kafka")
# How often, while no records arrive, to check that the cluster still answers.
PROBE_EVERY = 5.0


class _ConnectFailures(logging.Handler):
    """Why aiokafka could not connect, per address.

    Its bootstrap logs each address's error ("Unable connect to "h:p": [SSL:
    CERTIFICATE_VERIFY_FAILED] ...") and then raises `KafkaConnectionError("Unable to
    bootstrap from [...]")` without the cause; health should say which it was.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == 'Unable connect to "%s:%s": %s' and len(record.args or ()) == 3:
            host, port, err = record.args  # type: ignore[misc]
            self.last[f"{host}:{port}"] = str(err)

    def explain(self, e: BaseException, servers: list[str]) -> str:
        """`describe(e)`, plus the causes logged for these servers since the last call."""
        text = describe(e)
        if not isinstance(e, KafkaConnectionError):
            return text
        causes = [f"{s}: {self.last.pop(s)}" for s in servers if s in self.last]
        return f"{text} ({'; '.join(causes)})" if causes else text


_CONNECT_FAILURES = _ConnectFailures()


def tracking_name(tp: TopicPartition) -> str:
    """The tracking-table name of a partition's position."""
    return f"kafka:{tp.topic}:{tp.partition}"


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Consumer-group rebalances: seek each newly assigned partition to recorded + 1.

    The fetcher may already be running when this is called, so the consume loop checks
    every batch against the recorded position too (see `KafkaSource._ingest`); this seek
    only spares it fetching records it would drop.
    """

    def __init__(self, source: KafkaSource, consumer: AIOKafkaConsumer) -> None:
        self.source = source
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self.source.forget(tp)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in sorted(assigned):
            pos = await self.source.intake.position(tracking_name(tp))
            if pos is not None:
                self.consumer.seek(tp, pos + 1)
            elif self.source.config.start_from == "earliest":
                await self.consumer.seek_to_beginning(tp)
            else:
                await self.consumer.seek_to_end(tp)
            log.info("partition assigned name=%s resume_after=%s", tracking_name(tp), pos)


class KafkaSource(SourceTasks):
    """Consumes the configured topics into the Ingestor, one transaction per partition batch."""

    def __init__(
        self,
        config: KafkaConfig,
        intake: Intake,
        clock: Callable[[], datetime],
        *,
        sasl_password: str | None,
        resolve_timeout: timedelta,
        backoff: Backoff,
        limits: AlertLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__()
        self.limits = limits
        self.config = config
        self.name = config.name
        self.intake = intake
        self.clock = clock
        self.sasl_password = sasl_password
        self.resolve_timeout = resolve_timeout
        self.backoff = backoff
        self.health = SourceHealth(name=config.name, kind="kafka")
        # Installed by the first Kafka source, not on import: only a daemon reading Kafka
        # needs aiokafka's log read.
        aiokafka_log = logging.getLogger("aiokafka")
        if _CONNECT_FAILURES not in aiokafka_log.handlers:
            aiokafka_log.addHandler(_CONNECT_FAILURES)
        self.formats = {t.topic: t.format for t in config.topics}
        # The last offset committed to the event store per assigned partition (None: none yet).
        self.positions: dict[TopicPartition, int | None] = {}
        self._warned_behind: set[TopicPartition] = set()
        # Partitions whose first batch since assignment is still to be checked.
        self._verify: set[TopicPartition] = set()

    def forget(self, tp: TopicPartition) -> None:
        """A partition left us (or must be re-read): its position is looked up again."""
        self.positions.pop(tp, None)
        self._verify.discard(tp)

    def tasks(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """One consumer loop."""
        return {"consume": self._run}

    def _consumer(self) -> AIOKafkaConsumer:
        c = self.config
        kwargs: dict[str, Any] = {
            "bootstrap_servers": c.bootstrap_servers,
            "group_id": c.group_id,
            "client_id": c.client_id,
            "enable_auto_commit": False,
            "auto_offset_reset": c.start_from,
            "security_protocol": c.security_protocol,
        }
        if c.tls is not None or c.security_protocol in ("SSL", "SASL_SSL"):
            tls = c.tls
            ctx = create_ssl_context(
                cafile=str(tls.ca_file) if tls and tls.ca_file else None,
                certfile=str(tls.cert_file) if tls and tls.cert_file else None,
                keyfile=str(tls.key_file) if tls and tls.key_file else None,
            )
            if tls is not None and tls.insecure_skip_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            kwargs["ssl_context"] = ctx
        if c.sasl_mechanism:
            kwargs["sasl_mechanism"] = c.sasl_mechanism
            kwargs["sasl_plain_username"] = c.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        kwargs.update(c.options)
        return AIOKafkaConsumer(**kwargs)

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.health.connected = False
                reason = _CONNECT_FAILURES.explain(e, self.config.bootstrap_servers)
                self.health.failed(reason)
                log.warning("kafka source=%s unavailable: %s", self.name, reason)
            delay = self.backoff.next()
            log.info("kafka source=%s reconnecting in %.1fs", self.name, delay)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        consumer = self._consumer()
        try:
            await consumer.start()
            if self.config.group_id is None:
                # No group: every partition is ours; the loop finds where to resume.
                consumer.subscribe(topics=list(self.formats))
            else:
                consumer.subscribe(topics=list(self.formats), listener=_Assignment(self, consumer))
            self.health.connected = True
            self.backoff.reset()
            log.info(
                "kafka source=%s connected servers=%s topics=%s",
                self.name, ",".join(self.config.bootstrap_servers), ",".join(self.formats),
            )
            probed = time.monotonic()
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=self.config.max_batch)
                # Partitions concurrently: one decodes while another's transaction commits.
                lasts = await asyncio.gather(
                    *(self._ingest(consumer, tp, records) for tp, records in batch.items())
                )
                done = {tp: last for tp, last in zip(batch, lasts, strict=True) if last is not None}
                if done:
                    self.health.connected = True
                    probed = time.monotonic()
                    if self.config.group_id is not None:
                        await self._commit_for_lag(consumer, done)
                elif time.monotonic() - probed > PROBE_EVERY:
                    probed = time.monotonic()
                    await self._probe(consumer)
                self._lag(consumer)
        finally:
            self.positions.clear()
            await consumer.stop()

    async def _ingest(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        records: list[ConsumerRecord[Any, Any]],
    ) -> int | None:
        """Decide and commit one partition's records with their position; the last offset."""
        name = tracking_name(tp)
        if tp not in self.positions:
            # First batch since (re)assignment: the event store says where we are.
            self.positions[tp] = await self.intake.position(name)
            self._verify.add(tp)
        done = self.positions[tp]
        if done is not None:
            # Never re-apply a record at or below the recorded position.
            records = [r for r in records if r.offset > done]
        if not records:
            return None
        if tp in self._verify:
            self._verify.discard(tp)
            if done is not None and records[0].offset > done + 1:
                # Fetching began past the recorded position (a committed offset or `latest`):
                # go back once. A gap that remains is Kafka's own (compaction, transactions).
                log.info("kafka %s: rewinding from %d to %d", name, records[0].offset, done + 1)
                consumer.seek(tp, done + 1)
                return None
        fmt = self.formats[tp.topic]
        source = f"kafka:{tp.topic}"
        now = self.clock()
        commands: list[Command] = []
        for r in records:
            body: bytes = r.value or b""
            try:
                commands += decode(
                    fmt,
                    body,
                    now=now,
                    resolve_timeout=self.resolve_timeout,
                    source=source,
                    limits=self.limits,
                )
            except PayloadError as e:
                # Deterministic id: the store refuses the same dead letter twice.
                rid = uuid5(_NS, f"{name}:{r.offset}")
                problems = [f"offset {r.offset}: {p}" for p in e.problems]
                commands.append(dead_letter(rid, source, problems, body))
                self.health.failed(f"{name} offset {r.offset}: {'; '.join(e.problems)}")
        last: int = records[-1].offset
        try:
            await self.intake.submit(coalesce(commands), tracking=Tracking(name, last))
        except StoreUnavailable as e:
            # Nothing committed: read these records again once the store answers, and ask
            # the store for the position again (another daemon may have moved it).
            self.forget(tp)
            consumer.seek(tp, records[0].offset)
            self.health.failed(str(e))
            await pause_for_store(self.intake, self.backoff.next())
            return None
        self.positions[tp] = last
        self.health.seen(len(records))
        return last

    async def _commit_for_lag(
        self, consumer: AIOKafkaConsumer, done: dict[TopicPartition, int]
    ) -> None:
        try:
            await consumer.commit({tp: last + 1 for tp, last in done.items()})
        except KafkaError as e:
            # Informational only: the event store holds the real position.
            log.debug("kafka source=%s lag commit failed: %s", self.name, e)

    async def _probe(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await asyncio.wait_for(consumer.topics(), timeout=PROBE_EVERY)
        except (KafkaError, TimeoutError, OSError) as e:
            if self.health.connected:
                log.warning("kafka source=%s lost the cluster: %s", self.name, e)
            self.health.connected = False
            self.health.failed(f"cluster does not answer: {describe(e)}")
        else:
            self.health.connected = True

    def _lag(self, consumer: AIOKafkaConsumer) -> None:
        lag = 0
        known = False
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is None:
                continue
            known = True
            pos = self.positions.get(tp)
            if pos is None:
                continue
            next_offset = pos + 1
            if hw < next_offset and tp not in self._warned_behind:
                self._warned_behind.add(tp)
                log.warning(
                    "kafka source=%s %s ends at offset %d but watchkeeper recorded %d: "
                    "was the topic recreated? records up to %d are skipped",
                    self.name, tracking_name(tp), hw, pos, pos,
                )
            lag += max(hw - next_offset, 0)
        self.health.lag = lag if known else None
