"""The `sources:` section (Kafka, MQTT, Prometheus) and `rules:` (rules over metric streams).

Everything has a default, so a config without these sections stays valid and starts no
source. Each of `kafka`, `mqtt` and `prometheus` takes one mapping or a list of them.
Secret fields (SASL and MQTT passwords, Prometheus header values) take `env:NAME`,
`file:/path` or `credential:NAME` like every other secret.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from daemon.config.types import Duration, Matchers, Section
from daemon.domain.matchers import Matcher
from daemon.domain.rule_model import Comparison, MetricRule
from daemon.domain.topics import TopicTemplate

_CONDITION = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


# How a stream message is decoded (see daemon/intake/payloads.py).
PayloadFormat = Literal["webhook", "postable", "alert", "samples"]


def _one_or_many(v: Any) -> Any:
    return [v] if isinstance(v, dict) else v


def _servers(v: Any) -> Any:
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return v


class _Section(Section):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TlsConfig(_Section):
    """TLS for a broker connection; files are PEM."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _files_exist(self) -> TlsConfig:
        for name in ("ca_file", "cert_file", "key_file"):
            p = getattr(self, name)
            if p is not None and not p.is_file():
                raise ValueError(f"{name}: {p} does not exist or is not a file")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate)")
        return self


# --- Kafka -----------------------------------------------------------------------------


class KafkaTopic(_Section):
    """One topic and the payload format its records carry."""

    topic: str = Field(min_length=1)
    format: PayloadFormat


class KafkaConfig(_Section):
    """A Kafka (or Kafka-compatible) cluster to consume from, exactly once."""

    name: str = "kafka"
    bootstrap_servers: Annotated[list[str], BeforeValidator(_servers)] = Field(min_length=1)
    topics: list[KafkaTopic] = Field(min_length=1)
    # Several daemons split partitions through this consumer group. null: no group, this
    # daemon reads every partition (no rebalance wait after a restart; one daemon only).
    group_id: str | None = "watchkeeper"
    client_id: str = "watchkeeper"
    # Where to begin in a partition watchkeeper has never recorded a position for.
    start_from: Literal["earliest", "latest"] = "earliest"
    # Records per getmany() batch; each partition's share commits in one transaction.
    max_batch: int = Field(default=5000, gt=0)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = Field(
        default=None, description="literal, env:NAME, file:/path or credential:NAME"
    )
    tls: TlsConfig | None = None
    # Passed through to aiokafka's AIOKafkaConsumer as keyword arguments.
    options: dict[str, Any] = {}

    @model_validator(mode="after")
    def _security(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                    "sasl_username and sasl_password"
                )
        elif self.sasl_mechanism:
            raise ValueError("sasl_mechanism is set but security_protocol is not SASL_*")
        topics = [t.topic for t in self.topics]
        if len(set(topics)) != len(topics):
            raise ValueError("topics: each topic may be listed once")
        reserved = {"bootstrap_servers", "group_id", "client_id", "enable_auto_commit"}
        clash = sorted(reserved & set(self.options))
        if clash:
            raise ValueError(f"options: {', '.join(clash)} are set by watchkeeper itself")
        return self


# --- MQTT ------------------------------------------------------------------------------


class MqttSubscription(_Section):
    """A topic filter, how its topics map to labels, and what its payloads are."""

    filter: str = Field(min_length=1)
    format: PayloadFormat
    # Topic levels to labels, e.g. sites/{site}/{device}/{metric}; {metric} names the metric.
    template: str = ""
    # Metric name for bare-number payloads when the template has no {metric}.
    metric: str = ""
    labels: dict[str, str] = {}
    qos: Literal[0, 1, 2] = 1

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        if v:
            TopicTemplate.parse(v)
        return v

    @model_validator(mode="after")
    def _fits(self) -> MqttSubscription:
        if self.template:
            problem = TopicTemplate.parse(self.template).conflicts_with(self.filter)
            if problem:
                raise ValueError(problem)
        return self


class MqttConfig(_Section):
    """An MQTT broker to subscribe to (reconnects and resubscribes on its own)."""

    name: str = "mqtt"
    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = Field(
        default=None, description="literal, env:NAME, file:/path or credential:NAME"
    )
    # Empty: watchkeeper-<hostname>. Two clients with one id disconnect each other.
    client_id: str = ""
    # False keeps the session (and QoS 1 messages queued for us) while we are away.
    clean_session: bool = False
    keepalive: Duration = timedelta(seconds=30)
    tls: TlsConfig | None = None
    subscriptions: list[MqttSubscription] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
            raise ValueError("expected mqtt://host:port or mqtts://host:port")
        return v

    @property
    def host(self) -> str:
        """Broker host."""
        return urlparse(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """Broker port (1883, or 8883 for mqtts)."""
        u = urlparse(self.url)
        return u.port or (8883 if self.secure else 1883)

    @property
    def secure(self) -> bool:
        """Whether the connection uses TLS."""
        return urlparse(self.url).scheme in ("mqtts", "ssl") or self.tls is not None


# --- Prometheus ------------------------------------------------------------------------


class PromQLRule(_Section):
    """An alerting rule as PromQL; every series in the result is an alert."""

    alert: str = Field(min_length=1)
    name: str = ""
    expr: str = Field(min_length=1)
    for_: Duration = Field(default=timedelta(0), alias="for")
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class PrometheusConfig(_Section):
    """A Prometheus to evaluate PromQL rules against, and optionally import alerts from."""

    name: str = "prometheus"
    url: str = "http://127.0.0.1:9090"
    # Header values may be secret references, e.g. Authorization: env:PROM_AUTH.
    headers: dict[str, str] = {}
    interval: Duration = timedelta(seconds=30)
    timeout: Duration = timedelta(seconds=10)
    insecure_skip_verify: bool = False
    # Also import the alerts Prometheus evaluates itself (GET /api/v1/alerts).
    import_alerts: bool = False
    rules: list[PromQLRule] = []

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("expected http://host:port or https://host:port")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _work(self) -> PrometheusConfig:
        if not self.rules and not self.import_alerts:
            raise ValueError("nothing to do: add rules or set import_alerts: true")
        if self.timeout > self.interval:
            raise ValueError("timeout must not be longer than interval")
        return self


class SourcesConfig(_Section):
    """Every stream source, plus how they back off when a broker is away."""

    kafka: Annotated[list[KafkaConfig], BeforeValidator(_one_or_many)] = []
    mqtt: Annotated[list[MqttConfig], BeforeValidator(_one_or_many)] = []
    prometheus: Annotated[list[PrometheusConfig], BeforeValidator(_one_or_many)] = []
    reconnect_min: Duration = timedelta(seconds=1)
    reconnect_max: Duration = timedelta(seconds=60)

    @model_validator(mode="after")
    def _unique_names(self) -> SourcesConfig:
        names = [k.name for k in self.kafka] + [m.name for m in self.mqtt]
        names += [p.name for p in self.prometheus]
        dupes = ", ".join(sorted({n for n in names if names.count(n) > 1}))
        if dupes:
            raise ValueError(f"source names must be unique (set name:); repeated: {dupes}")
        if self.reconnect_min <= timedelta(0) or self.reconnect_max < self.reconnect_min:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        # Positions are recorded as kafka:<topic>:<partition>: two sources reading a topic of
        # the same name (say on two clusters) would share, and so skip, each other's offsets.
        topics = [(t.topic, k.name) for k in self.kafka for t in k.topics]
        seen: dict[str, str] = {}
        for topic, source in topics:
            if topic in seen:
                raise ValueError(
                    f"kafka topic {topic!r} is read by both {seen[topic]!r} and {source!r}: "
                    "positions are kept per topic name, so each topic may be read by one "
                    "source only (list it once)"
                )
            seen[topic] = source
        return self

    def secret_refs(self) -> dict[str, str]:
        """Every secret reference by its path in the file."""
        refs: dict[str, str | None] = {}
        for i, k in enumerate(self.kafka):
            refs[f"sources.kafka[{i}].sasl_password"] = k.sasl_password
        for i, m in enumerate(self.mqtt):
            refs[f"sources.mqtt[{i}].password"] = m.password
        for i, p in enumerate(self.prometheus):
            refs.update({f"sources.prometheus[{i}].headers.{h}": v for h, v in p.headers.items()})
        return {path: ref for path, ref in refs.items() if ref}


# --- rules over metric streams -----------------------------------------------------------


class RuleConfig(_Section):
    """A rule over a metric stream: a threshold (`condition:`) or an absence (`absent_for:`)."""

    alert: str = Field(min_length=1)
    name: str = ""
    metric: str = Field(min_length=1)
    match: Matchers = []
    # A comparison and a number, quoted in YAML (> starts a YAML block): "> 80".
    condition: str | None = None
    # Hysteresis: once firing, it stays firing until the value passes this threshold.
    clear: float | None = None
    for_: Duration = Field(default=timedelta(0), alias="for")
    absent_for: Duration | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @field_validator("condition", mode="before")
    @classmethod
    def _condition(cls, v: Any) -> Any:
        if v is not None and not _CONDITION.match(str(v)):
            raise ValueError(
                f'expected a comparison and a number such as "> 80", got {v!r} '
                '(quote it in YAML: a bare > starts a block)'
            )
        return v

    @field_validator("labels")
    @classmethod
    def _label_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not _LABEL.match(k)]
        if bad:
            raise ValueError(f"not valid label names: {', '.join(bad)}")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> RuleConfig:
        if (self.condition is None) == (self.absent_for is None):
            raise ValueError("a rule needs exactly one of condition: (threshold) or absent_for:")
        if self.absent_for is not None and (self.clear is not None or self.for_):
            raise ValueError("clear: and for: apply to condition: rules, not absent_for:")
        self.to_rule()  # the domain's own checks (clear on the right side of the threshold)
        return self

    def to_rule(self) -> MetricRule:
        """The pure domain's view of this rule."""
        common: dict[str, Any] = {
            "name": self.name or self.alert,
            "alert": self.alert,
            "metric": self.metric,
            "matchers": tuple(Matcher.parse(m) for m in self.match),
            "labels": self.labels,
            "annotations": self.annotations,
        }
        if self.absent_for is not None:
            return MetricRule(kind="absence", absent_for=self.absent_for, **common)
        m = _CONDITION.match(self.condition or "")
        assert m is not None
        op: Comparison = m.group(1)  # type: ignore[assignment]
        return MetricRule(
            kind="threshold",
            op=op,
            threshold=float(m.group(2)),
            clear=self.clear,
            for_duration=self.for_,
            **common,
        )


def domain_rules(rules: list[RuleConfig], sources: SourcesConfig) -> tuple[MetricRule, ...]:
    """Every rule the domain tracks: metric-stream rules and Prometheus (PromQL) rules."""
    out = [r.to_rule() for r in rules]
    for p in sources.prometheus:
        for r in p.rules:
            out.append(
                MetricRule(
                    name=r.name or r.alert,
                    alert=r.alert,
                    kind="query",
                    expr=r.expr,
                    for_duration=r.for_,
                    labels=r.labels,
                    annotations=r.annotations,
                )
            )
    return tuple(out)


def rule_name_problems(rules: list[RuleConfig], sources: SourcesConfig) -> list[str]:
    """Rule names must be unique across `rules:` and every Prometheus source's rules."""
    seen: dict[str, str] = {}
    problems = []
    where = [(f"rules[{i}]", r.name or r.alert) for i, r in enumerate(rules)]
    for i, p in enumerate(sources.prometheus):
        for j, pr in enumerate(p.rules):
            where.append((f"sources.prometheus[{i}].rules[{j}]", pr.name or pr.alert))
    for path, name in where:
        if name in seen:
            problems.append(
                f"{path}.name: rule name {name!r} is already used by {seen[name]}; "
                "give one of them a distinct name:"
            )
        else:
            seen[name] = path
    return problems
