"""The supervisor: one TaskGroup of named tasks, signals, drain on shutdown, sd_notify."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

from daemon.config.auth import Authenticator
from daemon.config.secrets import resolved
from daemon.config.settings import ConfigError, Settings, load_config
from daemon.domain import Rejected
from daemon.engine.ingest import Ingestor
from daemon.engine.leadership import Election, FileLock, StoreInUse
from daemon.engine.logtail import LogTail
from daemon.engine.metrics import Metrics
from daemon.engine.reactor import Reactor
from daemon.engine.store import EventLog, StoreTimeouts, StoreUnavailable
from daemon.engine.timers import TimerService
from daemon.intake.source import Source
from daemon.intake.status import SourceCollector, rules_command
from daemon.notify.pipeline import notification_status
from daemon.runtime import memory
from daemon.runtime.logs import setup_logging
from daemon.runtime.outcome_metrics import OutcomeHistograms
from daemon.runtime.replica import Replica, ReplicaCollector
from daemon.runtime.sdnotify import SystemdNotifier
from daemon.runtime.wiring import (
    build_ingestor,
    build_reactions,
    build_sources,
    preload_leader_modules,
    reload_hosts,
    store_timeouts,
)
from daemon.web.app import create_app
from daemon.web.context import ApiContext
from daemon.web.slow_clients import read_deadline_protocol

log = logging.getLogger("watchkeeper.runtime")
# Seconds a leader stopping with SIGTERM lets requests in flight commit before it hands
# over (the goal: a successor leads within 2 s).
HANDOVER_GRACE = 0.5


def utcnow() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


# Events an on-call engineer wants to see in the journal, one line each; the rest
# (alert repeats, agent steps, notification bookkeeping) stay in the event log.
_WORTH_LOGGING = frozenset(
    {
        "IncidentOpened", "IncidentAcknowledged", "IncidentResolved", "IncidentReopened",
        "IncidentClosed", "AlertSilenced", "SilenceCreated", "SilenceEnded",
        "DeadLetterRecorded", "ActionProposed", "PolicyDecided", "ApprovalRequested",
        "ActionApproved", "ActionRejected", "ApprovalExpired", "ActionRequestRefused",
        "ActionCancelled", "ActionDispatched", "ActionSucceeded", "ActionFailed",
        "ActionOutcomeUnknown", "VerificationPassed", "VerificationFailed", "RolledBack",
        "RollbackFailed", "ActionEscalated", "ExecutionPaused", "ExecutionResumed",
        "NotificationFailed",
    }
)
_DETAIL_FIELDS = (
    "group_key", "incident_id", "by", "channel", "outcome", "reasons", "reason", "source",
    "action_id", "idempotency_key", "expires_at",
)


def log_event(position: int, event: Any) -> None:
    """Log one committed event worth knowing as a key=value line."""
    name = type(event).__name__
    if name not in _WORTH_LOGGING:
        return
    present = [f for f in _DETAIL_FIELDS if getattr(event, f, None)]
    # Each `name=%s` is a field of its own in logfmt and JSON (daemon/runtime/logs.py).
    fmt = "%s position=%d stream=%s" + "".join(f" {f}=%s" for f in present)
    log.info(fmt, name, position, event.originator_id, *(getattr(event, f) for f in present))


def _served(s: Settings) -> tuple[object, ...]:
    """The http settings uvicorn takes at start (a change needs a restart)."""
    h = s.http
    return (h.read_timeout, h.keep_alive, h.max_connections, h.trusted_proxies)


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the supervisor owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def all_secrets(settings: Settings) -> list[str]:
    """Every resolvable secret value, so logs can scrub them."""
    out = resolved(settings.secret_refs()) + resolved(settings.notifications.secret_refs())
    if "@" in settings.store and ":" in settings.store.split("@")[0]:
        out.append(settings.store.split("@")[0].rsplit(":", 1)[1])
    return out


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves so a busy port is a clear error, not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def sqlite_lock(url: str) -> FileLock | None:
    """Lock a SQLite store's file for this process (None for PostgreSQL or in-memory)."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if path == ":memory:" or path.startswith("file:"):
        return None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire()
    except StoreInUse as e:
        raise RuntimeError(str(e)) from None
    return lock


async def _locked_store(s: Settings) -> tuple[FileLock | None, EventLog]:
    """The file lock (SQLite) and the open event log; nothing held if either fails."""
    file_lock = sqlite_lock(s.store)
    try:
        return file_lock, await asyncio.to_thread(open_store, s.store, store_timeouts(s))
    except BaseException:
        if file_lock is not None:
            file_lock.release()
        raise


class _ReactorCollector:
    """The running reactions' metrics (only the leader runs them; they change on takeover)."""

    def __init__(self, reactor: Callable[[], Reactor | None]) -> None:
        self.reactor = reactor

    def collect(self) -> Iterator[Any]:
        r = self.reactor()
        for c in r.collectors() if r is not None else []:
            yield from c.collect()


def open_store(url: str, timeouts: StoreTimeouts) -> EventLog:
    """Open the event log, or fail naming the store it tried (without its password)."""
    try:
        return EventLog(url, timeouts)
    except Exception as e:
        where = url.rsplit("@", 1)[-1] if url.startswith("postgres") else url
        raise RuntimeError(
            f"cannot open the event store {where}: {e}; check `store:` and `state_dir:` "
            "and that the daemon's user may write there"
        ) from e


class Supervisor:
    """Runs the daemon until SIGTERM/SIGINT; SIGHUP reloads what can change safely."""

    def __init__(
        self,
        settings: Settings,
        config_path: str | Path | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        notifier: SystemdNotifier | None = None,
        owns_process: bool = False,
    ) -> None:
        self.settings = settings
        # The process is this daemon's alone (`watchkeeper run`, benchmarks), so it tunes
        # the collector and allocator for itself (daemon/memory.py); tests share theirs.
        self.owns_process = owns_process
        if owns_process:
            memory.configure(settings.tuning.gc_threshold)
        self.tidied_at: datetime | None = None
        self.config_path = config_path
        self.clock = clock
        self.notifier = notifier or SystemdNotifier()
        self.metrics = Metrics()
        self.started = time.monotonic()
        self.stop = asyncio.Event()
        self.writer_ok_at = time.monotonic()
        self.ingestor: Ingestor | None = None
        self.ctx: ApiContext | None = None
        self.sources: list[Source] = []
        self.running_sources = settings.sources
        self.timers: TimerService | None = None
        self.reactor: Reactor | None = None
        self.replica: Replica | None = None
        # What runs only while this process leads (reactions, timers, stream sources).
        self._leading: contextlib.AsyncExitStack | None = None
        self.replica_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # --- status --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What /healthz, /api/v1/status and the STATUS= line report."""
        ing = self.ingestor
        world = ing.world if ing else None
        counts: dict[str, int] = {}
        firing = silences = 0
        if world is not None:
            for inc in world.incidents.values():
                counts[inc.state] = counts.get(inc.state, 0) + 1
            firing = sum(1 for a in world.alerts.values() if a.firing and a.incident_id)
            now = self.clock()
            silences = sum(1 for s in world.silences.values() if s.state(now) == "active")
        writer_age = time.monotonic() - self.writer_ok_at
        writer_ok = writer_age < 30
        store_up = bool(ing and ing.store.up)
        reactions = self.reactor.status() if self.reactor is not None else {}
        agent_problem = reactions.get("agent", {}).get("problem")
        replica = self.replica.status() if self.replica is not None else {"role": "leader"}
        unready = agent_problem if agent_problem and "no usable" in agent_problem else None
        if self.replica is not None and self.replica.leader_url() == "":
            unready = "no leader: an election is under way"
        return {
            # Healthy: the process works (its writer answers), even while the store is down;
            # ready: it can take traffic, which needs the store.
            "healthy": bool(ing and ing.ready and writer_ok),
            "ready": bool(ing and ing.ready and store_up),
            "writer": "ok" if writer_ok else f"no answer for {writer_age:.0f}s",
            "store_health": ing.store.view() if ing else {"ok": False},
            "position": world.position if world else 0,
            "incidents": counts,
            "alerts_firing": firing,
            "silences_active": silences,
            "dead_letters": len(ing.projections.dead_letters) if ing else 0,
            "event_counts": dict(ing.projections.event_counts) if ing else {},
            "sources": {src.name: src.health.model_dump() for src in self.sources},
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            "store": "postgresql" if self.settings.store.startswith("postgres") else "sqlite",
            "notifications": notification_status(world) if world is not None else {},
            "reactions": reactions,
            # Leader or follower, the epoch, the leader's address, a follower's lag.
            "replica": replica,
            # Why /readyz says 503 although the log is loaded (the agent cannot work, or no
            # replica leads), if so.
            "unready_reason": unready,
        }

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        h = self.health()
        inc = h["incidents"]
        bad = [src.name for src in self.sources if not src.health.connected]
        src = "sources ok" if not bad else "degraded: " + ", ".join(bad)
        actions = self.ingestor.world.actions if self.ingestor else None
        waiting = len(actions.pending()) if actions else 0
        paused = ", execution PAUSED" if actions and actions.paused else ""
        if self.ingestor is not None and not self.ingestor.store.up:
            return f"{self.ingestor.store.problem()}; refusing intake"
        rep = h["replica"]
        role = ""
        if rep.get("replicated"):
            lead = (rep.get("leader") or {}).get("address") or "no leader"
            role = (f"leader (epoch {rep.get('epoch')}), " if rep["role"] == "leader"
                    else f"follower of {lead}, ")
        return role + (
            f"{inc.get('open', 0)} open incidents, {inc.get('acknowledged', 0)} acknowledged, "
            f"{waiting} awaiting approval, {h['alerts_firing']} alerts firing, {src}{paused}"
        )

    # --- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Start everything, serve until asked to stop, then drain and exit."""
        s = self.settings
        sock = bind(s.http.host, s.http.port)
        try:
            file_lock, store = await _locked_store(s)
        except BaseException:
            sock.close()
            raise
        self.notifier.send("STATUS=rebuilding state from the event log")
        ing = self.ingestor = self._ingestor(store)
        replica = self.replica = self._replica(store, ing)
        if replica.replicated:
            preload_leader_modules()
        await ing.start()
        self.ctx = ApiContext(
            s, ing, self.clock, self.metrics, Authenticator(s), self.health,
            leader_url=replica.leader_url,
        )
        server = QuietServer(
            uvicorn.Config(
                self.metrics.instrument(create_app(self.ctx)),
                lifespan="off",
                log_config=None,
                access_log=False,
                # X-Forwarded-For is believed from http.trusted_proxies only (web/sso.py).
                proxy_headers=False,
                timeout_graceful_shutdown=int(s.http.drain_timeout.total_seconds()) or 1,
                http=read_deadline_protocol(s.http.read_timeout.total_seconds()),
                timeout_keep_alive=max(1, int(s.http.keep_alive.total_seconds())),
                limit_concurrency=s.http.max_connections,
            )
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        try:
            async with asyncio.TaskGroup() as tg:
                # Leads at once when no other replica does (always, on SQLite).
                await replica.start()
                http = tg.create_task(server.serve(sockets=[sock]), name="http")
                ticker = tg.create_task(self._ticker(), name="ticker")
                dog = tg.create_task(self._watchdog(), name="watchdog")
                await self._until_serving(server, http)
                log.info(
                    "watchkeeper ready listen=%s store=%s position=%d role=%s",
                    s.http.listen,
                    self.health()["store"],
                    ing.world.position,
                    replica.role,
                )
                self.notifier.send("READY=1", f"STATUS={self.status_line()}")
                await self.stop.wait()
                self.notifier.send("STOPPING=1", "STATUS=draining")
                # Stop intake from streams first, then drain HTTP; the log keeps the rest.
                await replica.stop_work()
                server.should_exit = True
                if replica.replicated:
                    # Requests in flight may commit for a moment; then hand over at once
                    # (a later one is answered 503 and retried against the new leader).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(http), HANDOVER_GRACE)
                await replica.close()
                await http
                ticker.cancel()
                dog.cancel()
        finally:
            if self._leading is not None:  # start-up failed half-way
                await self._stop_leading()
            await ing.close()
            await asyncio.to_thread(store.close)
            if file_lock is not None:
                file_lock.release()
            sock.close()
            self.notifier.close()
            log.info("watchkeeper stopped position=%d", ing.world.position)

    def _ingestor(self, store: EventLog) -> Ingestor:
        """The Ingestor, with its log lines and metrics attached (not yet started)."""
        ing = build_ingestor(self.settings, store, self.clock)
        ing.write_latency_observer = self.metrics.store_write.observe
        # Log lines, and outcome histograms on /metrics (daemon/runtime/outcome_metrics.py).
        ing.listeners.extend(
            (
                # Followers apply the leader's events too: only the leader's journal says so.
                lambda pos, ev: log_event(pos, ev) if ing.leading else None,
                OutcomeHistograms(self.metrics.registry, lambda: ing.world),
            )
        )
        self.metrics.watch_state(self._metric_snapshot)
        self.metrics.registry.register(SourceCollector(lambda: self.sources))
        self.metrics.registry.register(_ReactorCollector(lambda: self.reactor))
        self.metrics.registry.register(ReplicaCollector(lambda: self.replica))
        return ing

    def _replica(self, store: EventLog, ing: Ingestor) -> Replica:
        """The election (PostgreSQL: follow until this process wins; commits are fenced)."""
        election = fence = None
        if store.is_postgres:
            fence = store.fence_commits()
            election = Election(
                store.connect_kwargs, store.schema, self.replica_id,
                self.settings.http.advertised(),
            )
            ing.leading = False
        poll = self.settings.tuning.replica_poll.total_seconds()
        return Replica(
            ing, election, fence,
            start_leading=self._start_leading, stop_leading=self._stop_leading,
            poll=poll,
            tail=LogTail(store.connect_kwargs, store.schema, retry=max(poll, 1.0))
            if store.is_postgres else None,
        )

    async def _start_leading(self) -> None:
        """Start what only the leader runs: rules, reactions, timers, stream sources.

        Each resumes from what the log and its tracked position say, as after a restart.
        """
        s, ing = self.settings, self.ingestor
        assert ing is not None
        stack = contextlib.AsyncExitStack()
        self._leading = stack
        try:
            # Rules before any source delivers samples; absence clocks restart from now.
            self.running_sources = s.sources
            await self._configure_rules(s, resuming=True)
            reactor = Reactor(ing, build_reactions(s, ing, self.clock))
            await reactor.start()
            stack.push_async_callback(reactor.close)
            self.reactor = reactor
            # Durable timers: fires what came due while no one led, then watches.
            timers = TimerService(ing, self.clock)
            await timers.start()
            stack.push_async_callback(timers.close)
            self.timers = timers
            sources = build_sources(s, ing, self.clock)
            for src in sources:
                await stack.enter_async_context(src)
            self.sources = sources
        except BaseException:
            await self._stop_leading()
            raise

    async def _stop_leading(self) -> None:
        """Stop stream sources, timers and reactions (in that order); the log keeps the rest."""
        stack, self._leading = self._leading, None
        if stack is not None:
            await stack.aclose()
        self.sources, self.timers, self.reactor = [], None, None

    def _request_stop(self, sig: signal.Signals) -> None:
        log.info("received %s; draining in-flight requests and commits", sig.name)
        self.stop.set()

    async def _until_serving(self, server: uvicorn.Server, http: asyncio.Task[None]) -> None:
        while not server.started:
            if http.done():
                http.result()
                raise RuntimeError("HTTP server exited during start-up")
            await asyncio.sleep(0.01)

    async def _ticker(self) -> None:
        assert self.ingestor is not None
        interval = self.settings.tuning.tick_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                if self.ingestor.leading:
                    await self.ingestor.tick()  # what it records is logged by log_event
            except StoreUnavailable:
                pass  # the outage is logged once by the ingestor; time passes again after
            except Exception:
                log.exception("tick failed")
            self._maybe_tidy()

    def _maybe_tidy(self) -> None:
        """Memory upkeep (daemon/memory.py): at the first tick, once state is rebuilt, settle
        (collect and freeze what the rebuild allocated); then tidy every
        `tuning.memory_interval` of daemon time."""
        if not self.owns_process:
            return
        every = self.settings.tuning.memory_interval
        now = self.clock()
        if self.tidied_at is None:
            self.tidied_at = now
            memory.settle()
        elif every and now - self.tidied_at >= every:
            self.tidied_at = now
            memory.tidy()

    async def _watchdog(self) -> None:
        assert self.ingestor is not None
        interval = self.notifier.watchdog_interval or 5.0
        patience = max(interval, 1.0)
        while True:
            try:
                async with asyncio.timeout(patience):
                    await self.ingestor.writer_answers()
                alive = True
            except TimeoutError:
                alive = False
            if alive:
                self.writer_ok_at = time.monotonic()
                if self.ingestor.store.seconds_since_commit() >= interval:
                    # Idle: only a probe can tell the store went away (`/readyz`).
                    await self.ingestor.check_store()
                # Pinging only after the writer answered: a wedged writer stops the pings
                # and systemd restarts us.
                if self.notifier.watchdog_interval:
                    self.notifier.send("WATCHDOG=1", f"STATUS={self.status_line()}")
            else:
                log.error("event store writer did not answer within %.1fs", patience)
            await asyncio.sleep(interval)

    def _metric_snapshot(self) -> dict[str, Any]:
        h = self.health()
        return {
            "incidents": h["incidents"],
            "alerts_firing": h["alerts_firing"],
            "silences_active": h["silences_active"],
            "position": h["position"],
            "event_counts": h["event_counts"],
            "notifications": h["notifications"],
            "store_up": h["store_health"].get("ok", False),
            "store_seconds_since_commit": h["store_health"].get("seconds_since_commit", 0.0),
            "writer_age": time.monotonic() - self.writer_ok_at,
        }

    async def _configure_rules(self, s: Settings, *, resuming: bool) -> None:
        """Record the configured rules (PromQL rules: those of the sources actually running)."""
        if self.ingestor is None or not self.ingestor.leading:
            return  # the leader records its rules when it takes over
        cmd = rules_command(s.rules, self.running_sources, resuming=resuming)
        try:
            events = await self.ingestor.submit([cmd])
        except Rejected as e:
            log.error("rules not applied: %s", e.reason)
            return
        if events:
            log.info("rules configured rules=%d events=%d", len(cmd.rules), len(events))

    async def reload(self) -> None:
        """Re-read the config file; apply what is safe to change live, log the rest."""
        if self.config_path is None:
            log.info("SIGHUP: no config file to reload")
            return
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as e:
            log.error("reload refused, keeping the running config: %s", "; ".join(e.problems))
            self.notifier.send("READY=1")
            return
        old = self.settings
        needs_restart = [
            name
            for name, a, b in (
                ("store", old.store, new.store),
                ("http.listen", old.http.listen, new.http.listen),
                ("http connection settings", _served(old), _served(new)),
                ("limits (hot set)", old.limits.state_limits(), new.limits.state_limits()),
                ("grouping", old.grouping, new.grouping),
                ("inhibit_rules", old.inhibit_rules, new.inhibit_rules),
                ("situations", old.situations, new.situations),
                ("tuning", old.tuning, new.tuning),
                ("notifications", old.notifications, new.notifications),
                ("sources", old.sources, new.sources),
                ("inventory.ssh", old.inventory.ssh, new.inventory.ssh),
            )
            if a != b
        ]
        self.settings = new
        await self._configure_rules(new, resuming=False)
        if self.reactor is not None:
            reload_hosts(self.reactor.reactions, new)
        setup_logging(new.logging.format, new.logging.level, all_secrets(new))
        if self.ctx is not None:
            self.ctx.settings = new
            self.ctx.auth = Authenticator(new)
        log.info(
            "config reloaded (auth, logging, http limits, inventory applied)%s",
            f"; restart needed for: {', '.join(needs_restart)}" if needs_restart else "",
        )
        self.notifier.send("READY=1", f"STATUS={self.status_line()}")


def run_daemon(settings: Settings, config_path: str | Path | None) -> int:
    """Entry point for `watchkeeper run`: returns the process exit code."""
    setup_logging(settings.logging.format, settings.logging.level, all_secrets(settings))
    sup = Supervisor(settings, config_path, owns_process=True)
    try:
        asyncio.run(sup.run())
    except RuntimeError as e:
        log.error("%s", e)
        return 1
    except Exception as e:
        log.exception("fatal: %s", e)
        return 1
    return 0

