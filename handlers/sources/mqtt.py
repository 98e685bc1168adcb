"""MQTT source (aiomqtt 2.x): subscribes to topic filters, maps topic levels to labels.

Two named tasks: `receive` holds the connection (reconnecting with jittered backoff and
subscribing again every time), `submit` takes whatever has queued up and commits it in one
batch. QoS 1 redeliveries are harmless: a repeated alert or sample changes nothing, so it
records nothing. A message is acknowledged on receipt, before it is committed (aiomqtt 2.x
has no manual acknowledgement); while the event store refuses a batch, the batch is kept and
submitted again with backoff, and what arrives meanwhile waits in memory (acknowledged), so
only a daemon that dies during a store outage loses what it held.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import aiomqtt

from daemon.config.sources import MqttConfig, MqttSubscription
from daemon.domain.commands import Command
from daemon.domain.limits import DEFAULT_LIMITS, AlertLimits
from daemon.domain.topics import METRIC, TopicTemplate
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

log = logging.getLogger("watchkeeper.sources.mqtt")
QUEUE_SIZE = 10_000
BATCH = 2_000


@dataclass(frozen=True, slots=True)
class _Received:
    topic: str
    payload: bytes
    at: datetime


class MqttSource(SourceTasks):
    """Feeds alerts and samples from an MQTT broker into the Ingestor."""

    def __init__(
        self,
        config: MqttConfig,
        intake: Intake,
        clock: Callable[[], datetime],
        *,
        password: str | None,
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
        self.password = password
        self.resolve_timeout = resolve_timeout
        self.backoff = backoff
        self.health = SourceHealth(name=config.name, kind="mqtt")
        self.templates = {
            s.filter: TopicTemplate.parse(s.template) if s.template else None
            for s in config.subscriptions
        }
        self.client_id = config.client_id or f"watchkeeper-{socket.gethostname()}"
        self.connections = 0
        self._queue: asyncio.Queue[_Received] = asyncio.Queue(QUEUE_SIZE)
        # A batch the event store did not take, submitted again before anything newer.
        self._retry: list[_Received] = []
        self.store_backoff = Backoff(0.5, 10.0)

    def tasks(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """The connection loop and the batching submitter."""
        return {"receive": self._run, "submit": self._submit}

    def _client(self) -> aiomqtt.Client:
        c = self.config
        tls_params = None
        if c.secure:
            t = c.tls
            tls_params = aiomqtt.TLSParameters(
                ca_certs=str(t.ca_file) if t and t.ca_file else None,
                certfile=str(t.cert_file) if t and t.cert_file else None,
                keyfile=str(t.key_file) if t and t.key_file else None,
                cert_reqs=ssl.CERT_NONE if t and t.insecure_skip_verify else ssl.CERT_REQUIRED,
            )
        return aiomqtt.Client(
            c.host,
            c.port,
            username=c.username,
            password=self.password,
            identifier=self.client_id,
            clean_session=c.clean_session,
            keepalive=max(int(c.keepalive.total_seconds()), 5),
            timeout=10,
            tls_params=tls_params,
            tls_insecure=bool(c.tls and c.tls.insecure_skip_verify) if c.secure else None,
        )

    async def _run(self) -> None:
        while True:
            try:
                async with self._client() as client:
                    for sub in self.config.subscriptions:
                        await client.subscribe(sub.filter, qos=sub.qos)
                    self.connections += 1
                    self.health.connected = True
                    self.backoff.reset()
                    log.info(
                        "mqtt source=%s connected broker=%s:%d subscriptions=%s",
                        self.name, self.config.host, self.config.port,
                        ",".join(s.filter for s in self.config.subscriptions),
                    )
                    async for msg in client.messages:
                        body = _bytes(msg.payload)
                        await self._queue.put(_Received(msg.topic.value, body, self.clock()))
            except aiomqtt.MqttError as e:
                self.health.connected = False
                self.health.failed(describe(e))
                log.warning("mqtt source=%s disconnected: %s", self.name, e)
            except Exception as e:
                # Anything else (TLS files, a bug) must not end the source: log, back off.
                self.health.connected = False
                self.health.failed(describe(e))
                log.exception("mqtt source=%s failed", self.name)
            delay = self.backoff.next()
            log.info("mqtt source=%s reconnecting in %.1fs", self.name, delay)
            await asyncio.sleep(delay)

    def _subscription(self, topic: str) -> MqttSubscription | None:
        t = aiomqtt.Topic(topic)
        for sub in self.config.subscriptions:
            if t.matches(sub.filter):
                return sub
        return None

    def _commands(self, msg: _Received) -> list[Command]:
        sub = self._subscription(msg.topic)
        source = f"mqtt:{self.name}"
        try:
            if sub is None:
                raise PayloadError([f"topic {msg.topic!r} matches no subscription filter"])
            labels = dict(sub.labels)
            metric = sub.metric
            template = self.templates[sub.filter]
            if template is not None:
                found = template.match(msg.topic)
                if found is None:
                    why = f"topic {msg.topic!r} does not fit template {template.text!r}"
                    raise PayloadError([why])
                metric = found.pop(METRIC, metric)
                labels.update(found)
            return decode(
                sub.format,
                msg.payload,
                now=msg.at,
                resolve_timeout=self.resolve_timeout,
                source=f"mqtt:{sub.filter}",
                labels=labels,
                metric=metric,
                limits=self.limits,
            )
        except PayloadError as e:
            self.health.failed(f"{msg.topic}: {'; '.join(e.problems)}")
            problems = [f"topic {msg.topic}: {p}" for p in e.problems]
            return [dead_letter(uuid4(), source, problems, msg.payload)]

    async def _submit(self) -> None:
        while True:
            batch, self._retry = self._retry or [await self._queue.get()], []
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                commands: list[Command] = []
                for msg in batch:
                    commands += self._commands(msg)
                await self.intake.submit(coalesce(commands))
            except StoreUnavailable as e:
                # Nothing was recorded and the broker already has its acknowledgement: keep
                # the batch and try again, ahead of anything newer. Meanwhile our queue fills
                # and receiving waits; aiomqtt keeps acknowledging and buffering what
                # arrives, in memory, until the store answers.
                self._retry = batch
                self.health.failed(f"{len(batch)} message(s) not recorded yet: {e}")
                delay = self.store_backoff.next()
                log.error(
                    "mqtt source=%s store unavailable, retrying %d message(s) in %.1fs: %s",
                    self.name, len(batch), delay, e,
                )
                await pause_for_store(self.intake, delay)
                continue
            except Exception:
                log.exception("mqtt source=%s submit failed messages=%d", self.name, len(batch))
                self.health.failed("submit failed; see the log")
                continue
            self.store_backoff.reset()
            self.health.seen(len(batch))
            self.health.lag = self._queue.qsize()


def _bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()
