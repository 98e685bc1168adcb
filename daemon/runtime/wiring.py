"""The composition root: the one module that knows which handlers exist and builds them."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import datetime

from daemon.actions.executor import ActionExecutor
from daemon.actions.hosts import HostRouter
from daemon.actions.reaction import ActionsReaction
from daemon.agent.reaction import AgentReaction
from daemon.config.notify import NotificationsConfig
from daemon.config.secrets import resolve_secret
from daemon.config.settings import Settings
from daemon.engine.ingest import Ingestor
from daemon.engine.reactor import Reaction
from daemon.engine.store import EventLog, StoreTimeouts
from daemon.intake.source import Source
from daemon.intake.streams import Backoff
from daemon.notify.pipeline import ChatNotifier
from daemon.notify.reaction import NotifyReaction
from daemon.runbooks.tools import Tool

_log = logging.getLogger("watchkeeper.wiring")


# Modules the leader's components import when first built: a follower loads them ahead,
# so a takeover does not spend seconds importing (aiokafka, asyncssh, openai...).
_LEADER_MODULES = (
    "handlers.sources.kafka", "handlers.sources.mqtt", "handlers.sources.prometheus",
    "handlers.transports.local", "handlers.transports.ssh", "handlers.tools.http_probe",
    "handlers.tools.prometheus", "handlers.tools.shell", "handlers.actions.alertmanager",
    "handlers.actions.http", "handlers.actions.shell", "handlers.actions.systemd",
    "handlers.notifiers.mattermost", "handlers.notifiers.slack", "handlers.notifiers.teams",
    "handlers.notifiers.webhook", "daemon.agent.llm", "daemon.agent.loop",
    "daemon.engine.blobs", "daemon.runbooks.runbook", "daemon.runbooks.context_tools",
    "daemon.actions.checks",
)


def preload_leader_modules() -> None:
    """Import what building the leader's components needs (a follower, before takeover)."""
    for name in _LEADER_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as e:  # an optional extra not installed: fails when used, as ever
            _log.debug("not preloaded module=%s: %s", name, e)


def build_ingestor(settings: Settings, log: EventLog, clock: Callable[[], datetime]) -> Ingestor:
    """The Ingestor configured from settings."""
    return Ingestor(
        log,
        settings.policy(),
        clock,
        max_batch=settings.tuning.max_batch,
        checkpoint_every=settings.tuning.checkpoint_every,
        dead_letters_kept=settings.tuning.dead_letters_kept,
        checkpoint_in_child=settings.tuning.checkpoint_in_child,
        commit_timeout=settings.tuning.commit_timeout.total_seconds(),
        recovery=Backoff(
            settings.tuning.reconnect_backoff.total_seconds(),
            settings.tuning.reconnect_max_backoff.total_seconds(),
        ),
    )


def store_timeouts(settings: Settings) -> StoreTimeouts:
    """Bounds on every store call, from `tuning`."""
    return StoreTimeouts(
        connect=settings.tuning.store_connect_timeout.total_seconds(),
        statement=settings.tuning.store_statement_timeout.total_seconds(),
    )


def build_sources(
    settings: Settings, ingestor: Ingestor, clock: Callable[[], datetime]
) -> list[Source]:
    """Every configured stream source (Kafka, MQTT, Prometheus), not yet started."""
    from handlers.sources.kafka import KafkaSource
    from handlers.sources.mqtt import MqttSource
    from handlers.sources.prometheus import PrometheusSource

    cfg = settings.sources
    lease = settings.grouping.resolve_timeout
    limits = settings.limits.alert_limits()

    def backoff() -> Backoff:
        return Backoff(cfg.reconnect_min.total_seconds(), cfg.reconnect_max.total_seconds())

    def secret(ref: str | None) -> str | None:
        return resolve_secret(ref) if ref else None

    sources: list[Source] = []
    for k in cfg.kafka:
        sources.append(
            KafkaSource(k, ingestor, clock, sasl_password=secret(k.sasl_password),
                        resolve_timeout=lease, backoff=backoff(), limits=limits)
        )
    for m in cfg.mqtt:
        sources.append(
            MqttSource(m, ingestor, clock, password=secret(m.password),
                       resolve_timeout=lease, backoff=backoff(), limits=limits)
        )
    for p in cfg.prometheus:
        headers = {h: resolve_secret(v) for h, v in p.headers.items()}
        sources.append(
            PrometheusSource(p, ingestor, clock, headers=headers,
                             resolve_timeout=lease, backoff=backoff(), limits=limits)
        )
    return sources


def build_reactions(
    settings: Settings, ingestor: Ingestor, clock: Callable[[], datetime]
) -> list[Reaction]:
    """Every reaction that follows the log (agent, policy, notifiers), not yet started."""
    reactions: list[Reaction] = []
    hosts = build_hosts(settings)
    if settings.notifications.policies:
        reactions.append(
            NotifyReaction(
                ingestor,
                build_notifiers(settings.notifications),
                settings.notifications,
                clock,
                console_url=settings.notifications.console_url or settings.http.external_url,
            )
        )
    if settings.agent.enabled:
        reactions.append(build_agent(settings, ingestor, clock, hosts))
    reactions.append(build_actions(settings, ingestor, clock, hosts))
    return reactions


def build_hosts(settings: Settings) -> HostRouter:
    """This host, the inventory, and the local and ssh transports that reach its hosts."""
    from handlers.transports.local import LocalTransport
    from handlers.transports.ssh import SshTransport

    ssh = settings.inventory.ssh
    router = HostRouter(
        settings.host.name,
        settings.host.names(),
        settings.inventory.load(),
        {},
        settings.targets.missing,
    )
    router.transports["local"] = LocalTransport(router.is_this_host, lambda: router.this_host)
    router.transports["ssh"] = SshTransport(
        resolve_secret(ssh.key) if ssh.key else None,
        ssh.known_hosts,
        user=ssh.user,
        connect_timeout=ssh.connect_timeout.total_seconds(),
        max_per_host=ssh.max_connections_per_host,
        idle_timeout=ssh.idle_timeout.total_seconds(),
        keepalive=ssh.keepalive.total_seconds(),
    )
    return router


def reload_hosts(reactions: list[Reaction], settings: Settings) -> None:
    """SIGHUP: the re-read inventory and host identity, for actions and diagnostics alike."""
    for r in reactions:
        if isinstance(r, ActionsReaction) and r.hosts is not None:
            r.hosts.reload(
                settings.host.name,
                settings.host.names(),
                settings.inventory.load(),
                settings.targets.missing,
            )


def build_agent(
    settings: Settings,
    ingestor: Ingestor,
    clock: Callable[[], datetime],
    hosts: HostRouter | None = None,
) -> AgentReaction:
    """The investigation agent: runbooks, read-only tools, the model (if configured)."""
    from daemon.agent.llm import OpenAIChat
    from daemon.agent.loop import Investigator
    from daemon.engine.blobs import BlobStore
    from daemon.runbooks.runbook import load_runbooks

    cfg = settings.agent
    runbooks = load_runbooks(cfg.runbooks_dir)
    for problem in runbooks.problems:
        _log.error("runbook skipped problem=%s", problem)
    tools = build_tools(settings, hosts=hosts)
    model = OpenAIChat(cfg.llm, resolve_secret(cfg.llm.api_key)) if cfg.llm else None
    blobs = BlobStore(ingestor.log, ingestor.writer)
    shadow = load_runbooks(cfg.shadow_runbooks_dir) if cfg.shadow_runbooks_dir else None
    for problem in shadow.problems if shadow else []:
        _log.error("shadow runbook skipped: %s", problem)
    investigator = Investigator(
        ingestor, runbooks, tools=tools, model=model, blobs=blobs, config=cfg, clock=clock,
        targets=settings.targets.rules(),
        shadow=shadow,
    )
    agent = AgentReaction(ingestor, runbooks, cfg, investigator, clock, shadow=shadow)
    if agent.problem:
        _log.error("agent cannot investigate problem=%s", agent.problem)
    return agent


def build_tools(
    settings: Settings, prometheus_url: str = "", hosts: HostRouter | None = None
) -> dict[str, Tool]:
    """The read-only tools (the agent's, and the actions stage's checks)."""
    from daemon.runbooks.context_tools import AlertContext, PastIncidents
    from handlers.tools.http_probe import HttpProbe
    from handlers.tools.prometheus import Prometheus, PromQLInstant, PromQLRange
    from handlers.tools.shell import ShellDiagnostic, ShellTemplateSpec

    t = settings.agent.tools
    tools: dict[str, Tool] = {"alert_context": AlertContext(), "past_incidents": PastIncidents()}
    url = prometheus_url or t.prometheus_url
    if url:
        # As many query threads as investigations may run at once; see handlers/tools/prometheus.py.
        prom = Prometheus(
            url, t.prometheus_timeout.total_seconds(), workers=settings.agent.concurrency
        )
        tools["promql_instant"] = PromQLInstant(prom)
        tools["promql_range"] = PromQLRange(prom)
    tools["http_probe"] = HttpProbe(t.http_probe_allow, t.http_probe_timeout.total_seconds())
    tools["shell_diagnostic"] = ShellDiagnostic(
        {n: ShellTemplateSpec(s.argv, s.timeout.total_seconds()) for n, s in t.shell.items()},
        t.shell_output_bytes,
        hosts,
    )
    return tools


def build_executors(
    settings: Settings,
    clock: Callable[[], datetime] | None = None,
    hosts: HostRouter | None = None,
) -> dict[str, ActionExecutor]:
    """One executor per action kind, with the allowlists of the `actions:` section."""
    from handlers.actions.alertmanager import AlertmanagerSilencer
    from handlers.actions.http import HttpExecutor, WebhookRunner
    from handlers.actions.shell import ShellExecutor
    from handlers.actions.systemd import SystemdExecutor

    a = settings.actions
    secret = resolve_secret(a.http.webhook_secret) if a.http.webhook_secret else ""
    http_timeout = a.http.timeout.total_seconds()
    silencer = AlertmanagerSilencer(
        a.alertmanager.url,
        a.alertmanager.timeout.total_seconds(),
        a.alertmanager.max_duration,
        a.alertmanager.created_by,
        clock=clock,
    )
    executors: list[ActionExecutor] = [
        ShellExecutor(
            a.shell.allow, a.shell.timeout.total_seconds(), a.shell.output_bytes, hosts
        ),
        HttpExecutor(a.http.allow_hosts, http_timeout),
        WebhookRunner(a.http.allow_hosts, http_timeout, secret),
        SystemdExecutor(
            a.systemd.units,
            list(a.systemd.operations),
            a.systemd.systemctl,
            a.systemd.timeout.total_seconds(),
            hosts=hosts,
        ),
        silencer,
    ]
    return {e.kind: e for e in executors}


def build_actions(
    settings: Settings,
    ingestor: Ingestor,
    clock: Callable[[], datetime],
    hosts: HostRouter | None = None,
) -> ActionsReaction:
    """The actions stage: policy, approvals, drift checks, executors, verification."""
    from daemon.actions.checks import WorldChecks
    from daemon.runbooks.runbook import load_runbooks

    runbooks = load_runbooks(settings.agent.runbooks_dir)
    hosts = hosts or build_hosts(settings)
    tools = build_tools(settings, settings.actions.prometheus_url, hosts)
    return ActionsReaction(
        ingestor,
        runbooks,
        build_executors(settings, clock, hosts),
        WorldChecks(tools, clock),
        settings.actions,
        clock=clock,
        drain_seconds=settings.http.drain_timeout.total_seconds(),
        hosts=hosts,
    )


def build_notifiers(config: NotificationsConfig) -> dict[str, ChatNotifier]:
    """One notifier per configured channel (secrets resolved now)."""
    from handlers.notifiers.mattermost import MattermostWebhook
    from handlers.notifiers.slack import SlackBot, SlackWebhook
    from handlers.notifiers.teams import TeamsWorkflow
    from handlers.notifiers.webhook import JsonWebhook

    timeout = config.retry.timeout.total_seconds()
    out: dict[str, ChatNotifier] = {}
    for name, ch in config.channels.items():
        url = resolve_secret(ch.url) if ch.url else ""
        if ch.type == "slack":
            out[name] = SlackBot(name, resolve_secret(ch.token), ch.channel, ch.api_url, timeout)
        elif ch.type == "slack_webhook":
            out[name] = SlackWebhook(name, url, timeout)
        elif ch.type == "mattermost":
            out[name] = MattermostWebhook(name, url, timeout, ch.username)
        elif ch.type == "teams":
            out[name] = TeamsWorkflow(name, url, timeout)
        else:
            secret = resolve_secret(ch.secret) if ch.secret else ""
            out[name] = JsonWebhook(name, url, timeout, secret)
    return out
