"""One YAML file, validated by pydantic; `WATCHKEEPER_...` environment variables override it.

Secrets are never written in the file itself unless you want to: any secret field takes
`env:NAME`, `file:/path` or `credential:NAME` (from systemd's $CREDENTIALS_DIRECTORY).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from daemon.config.actions import ActionsConfig
from daemon.config.agent import AgentConfig
from daemon.config.inventory import (
    HostIdentityConfig,
    InventoryConfig,
    InventoryError,
    TargetsConfig,
)
from daemon.config.limits import LimitsConfig
from daemon.config.notify import NotificationsConfig
from daemon.config.problems import problems
from daemon.config.secrets import resolve_secret, unresolved
from daemon.config.situations import InhibitRuleConfig, SituationsConfig
from daemon.config.sources import RuleConfig, SourcesConfig, rule_name_problems
from daemon.config.types import Duration, Section
from daemon.domain.limits import StateLimits
from daemon.domain.state import GroupingPolicy

Role = Literal["viewer", "responder", "approver", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 1, "responder": 2, "approver": 3, "admin": 4}
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists `path: what is wrong` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


class HttpConfig(Section):
    """Where the API listens and how intake is protected."""

    listen: str = "127.0.0.1:9797"
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # open: anyone may post alerts; loopback: only 127.0.0.0/8 and ::1 without a token;
    # token: an ingest (or admin) token is required.
    ingest_auth: Literal["open", "loopback", "token"] = "loopback"
    external_url: str = ""
    drain_timeout: Duration = timedelta(seconds=10)
    # A request (headers and body) must be in this soon after its connection opens or its
    # previous response ends; then 408 and the connection closes (slow clients hold fds).
    read_timeout: Duration = timedelta(seconds=10)
    # An idle keep-alive connection closes after this.
    keep_alive: Duration = timedelta(seconds=5)
    # Connections and requests at once; past it a new request gets 503 at once.
    max_connections: int = Field(default=1000, gt=0)
    # Reverse proxies (addresses or networks) whose X-Forwarded-For and single-sign-on
    # headers (auth.sso) are believed; from anyone else those headers are ignored.
    trusted_proxies: list[str] = []

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        bad = []
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                bad.append(net)
        if bad:
            raise ValueError(f"not IP addresses or networks: {', '.join(bad)} (no '*')")
        return v

    # Swagger UI at /api/docs (it loads from a CDN: blank on offline hosts). Off by default.
    api_docs: bool = False
    # Replicas (a PostgreSQL store): the URL other replicas reach this one's API at, to
    # forward intake while this one leads. Default: http://<listen> (a wildcard listen
    # address becomes this host's name).
    advertise_url: str = ""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("expected host:port, e.g. 127.0.0.1:9797")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if host != "localhost":
                raise ValueError("expected an IP address or localhost before the port") from None
        return v

    @property
    def host(self) -> str:
        """The host part of `listen`."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return int(self.listen.rpartition(":")[2])

    def advertised(self) -> str:
        """The URL other replicas forward intake to (`advertise_url`, else from `listen`)."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming a wildcard, not binding one
            host = socket.getfqdn()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


# Shortest bearer token accepted (tokens are compared whole; long random ones are best).
MIN_TOKEN_CHARS = 8


class TokenConfig(Section):
    """A bearer token and the identity and role it grants."""

    name: str = Field(min_length=1)
    role: Role
    token: str = Field(min_length=1, description="literal, env:NAME, file:/path or credential:NAME")


class SsoConfig(Section):
    """Single sign-on by a reverse proxy (oauth2-proxy and the like) that sets who is calling."""

    enabled: bool = False
    user_header: str = "X-Forwarded-User"
    email_header: str = "X-Forwarded-Email"
    groups_header: str = "X-Forwarded-Groups"
    # Group -> role; a person gets the highest role of their groups.
    roles: dict[str, Role] = {}
    # The role of a signed-in person in no mapped group; none: refused.
    default_role: Role | None = None


class AuthConfig(Section):
    """Bearer tokens with roles; an optional token for ingestion; proxy single sign-on."""

    tokens: list[TokenConfig] = []
    ingest_token: str | None = None
    sso: SsoConfig = SsoConfig()


class GroupingConfig(Section):
    """How alerts become incidents."""

    group_by: list[str] = ["alertname"]
    resolve_timeout: Duration = timedelta(minutes=5)
    reopen_window: Duration = timedelta(minutes=30)
    resolve_grace: Duration = timedelta(minutes=5)

    @field_validator("group_by", mode="before")
    @classmethod
    def _label_names(cls, v: Any) -> Any:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ValueError("expected a list of label names")
        bad = [x for x in v if x != "..." and not _LABEL.match(x)]
        if bad:
            raise ValueError(f"not valid label names: {', '.join(bad)}")
        return v

    def policy(self, limits: StateLimits | None = None) -> GroupingPolicy:
        """The pure domain's view of these settings (and of the hot set's `limits`)."""
        return GroupingPolicy(
            group_by=tuple(self.group_by),
            resolve_timeout=self.resolve_timeout,
            reopen_window=self.reopen_window,
            limits=limits or StateLimits(),
            resolve_grace=self.resolve_grace,
        )


class LoggingConfig(Section):
    """Log format and level (logs go to stdout for journald)."""

    format: Literal["keyvalue", "json"] = "keyvalue"
    level: Literal["debug", "info", "warning", "error"] = "info"


class StoreTuning(Section):
    """Event store knobs."""

    checkpoint_every: int = Field(default=20_000, gt=0)
    # Serialize checkpoints in a forked child process, so intake goes on meanwhile and the
    # work lands on another core (daemon/snapshot.py); false writes them on the event loop.
    checkpoint_in_child: bool = True
    max_batch: int = Field(default=4096, gt=0)
    dead_letters_kept: int = Field(default=1000, gt=0)
    tick_interval: Duration = timedelta(seconds=1)
    # Young-generation threshold of Python's cyclic collector (default 700). Intake allocates
    # many short-lived containers; at 700 the collector runs hundreds of times a second under
    # load and costs a third of ingest throughput. Refcounting frees nearly everything.
    gc_threshold: int = Field(default=50_000, gt=0)
    # How often the daemon runs a full garbage collection and hands freed heap memory back to
    # the OS (glibc malloc_trim), in daemon time; 0 turns it off. See daemon/memory.py.
    memory_interval: Duration = timedelta(minutes=10)
    # Store outages (README "When the event store goes away"). How long a request waits
    # for its commit before it is answered 503 with Retry-After.
    commit_timeout: Duration = timedelta(seconds=5)
    # Bounds on each store call: connecting (and waiting for a pooled connection or the
    # SQLite lock), and one statement on the PostgreSQL server.
    store_connect_timeout: Duration = timedelta(seconds=5)
    store_statement_timeout: Duration = timedelta(seconds=30)
    # While the store is down: the first probe after this, doubling up to the maximum.
    reconnect_backoff: Duration = timedelta(milliseconds=500)
    reconnect_max_backoff: Duration = timedelta(seconds=5)
    # Replicas (a PostgreSQL store): how often a follower tries for the lead and reads the
    # log's new events. Bounds both the takeover time and a follower's lag.
    replica_poll: Duration = timedelta(milliseconds=300)

    @field_validator(
        "commit_timeout", "store_connect_timeout", "store_statement_timeout",
        "reconnect_backoff", "reconnect_max_backoff", "replica_poll",
    )
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v.total_seconds() <= 0:
            raise ValueError("must be longer than 0s")
        return v


def default_state_dir() -> Path:
    """systemd's StateDirectory= (the first, if several), else ./var for local runs."""
    given = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(given) if given else Path("./var")


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="WATCHKEEPER_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    # Empty: an SQLite file in state_dir, which is $STATE_DIRECTORY under systemd.
    store: str = ""
    state_dir: Path = Field(default_factory=default_state_dir)
    http: HttpConfig = HttpConfig()
    auth: AuthConfig = AuthConfig()
    grouping: GroupingConfig = GroupingConfig()
    logging: LoggingConfig = LoggingConfig()
    tuning: StoreTuning = StoreTuning()
    limits: LimitsConfig = LimitsConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    sources: SourcesConfig = SourcesConfig()
    rules: list[RuleConfig] = []
    agent: AgentConfig = AgentConfig()
    actions: ActionsConfig = ActionsConfig()
    host: HostIdentityConfig = HostIdentityConfig()
    targets: TargetsConfig = TargetsConfig()
    inventory: InventoryConfig = InventoryConfig()
    # Alertmanager's inhibit rules, pasted as they are; and correlation into situations.
    inhibit_rules: list[InhibitRuleConfig] = []
    situations: SituationsConfig = SituationsConfig()

    def policy(self) -> GroupingPolicy:
        """The pure domain's view: grouping, the hot set's limits, inhibit rules and correlation."""
        return self.grouping.policy(self.limits.state_limits()).model_copy(
            update={
                "inhibit_rules": tuple(r.rule() for r in self.inhibit_rules),
                "correlation": self.situations.correlation(),
            }
        )

    @model_validator(mode="after")
    def _default_store(self) -> Settings:
        if not self.store:
            self.store = f"sqlite:///{self.state_dir / 'events.db'}"
        return self

    @field_validator("store")
    @classmethod
    def _store_url(cls, v: str) -> str:
        if not v or v.startswith(("postgresql://", "postgres://", "sqlite://")) or "://" not in v:
            return v
        raise ValueError("expected a file path, sqlite:///path or postgresql://user@host/db")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (the file arrives as init kwargs).
        return env_settings, init_settings

    def _token_refs(self) -> list[tuple[str, str]]:
        """The bearer tokens' references by their path in the file."""
        refs = [(f"auth.tokens[{i}].token", t.token) for i, t in enumerate(self.auth.tokens)]
        if self.auth.ingest_token:
            refs.append(("auth.ingest_token", self.auth.ingest_token))
        return refs

    def secret_refs(self) -> list[tuple[str, str]]:
        """Every secret reference by its path in the file, but those under `notifications`
        (that section checks its own while it is validated)."""
        refs = self._token_refs()
        refs += (self.agent.secret_refs() | self.actions.secret_refs()).items()
        refs += self.sources.secret_refs().items()
        if self.inventory.ssh.key:
            refs.append(("inventory.ssh.key", self.inventory.ssh.key))
        return refs

    def secrets_problems(self) -> list[str]:
        """Check that every secret reference resolves; return `path: reason` lines."""
        problems = unresolved(self.secret_refs())
        for path, ref in self._token_refs():
            with contextlib.suppress(ValueError):  # one that does not resolve is listed above
                if len(value := resolve_secret(ref)) < MIN_TOKEN_CHARS:
                    # A token one can guess is no token: `openssl rand -hex 32` makes a good one.
                    problems.append(
                        f"{path}: {len(value)} characters; a token needs at least "
                        f"{MIN_TOKEN_CHARS} (e.g. openssl rand -hex 32)"
                    )
        # Not secrets, but files read now so a bad one is refused (also on SIGHUP).
        try:
            self.inventory.load()
        except InventoryError as e:
            problems.append(f"inventory.file: {e}")
        kh = self.inventory.ssh.known_hosts
        if kh and not Path(kh).is_file():
            problems.append(f"inventory.ssh.known_hosts: {kh} is not a readable file")
        # Not a secret, but like secrets it is checked across sections after validation.
        problems += rule_name_problems(self.rules, self.sources)
        return problems


def format_errors(exc: ValidationError) -> list[str]:
    """Every validation error as `path.in.file: what is wrong`."""
    return problems(exc.errors(), empty="(top level)", noun="setting")


def load_config(path: str | Path | None) -> Settings:
    """Read, validate and return the settings; raise ConfigError listing every problem."""
    data: Any = {}
    source = str(path) if path else "(defaults)"
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(source, [f"cannot read the file: {e.strerror}"]) from e
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
            raise ConfigError(source, [f"{where}: not valid YAML ({e})"]) from e
        if not isinstance(data, dict):
            raise ConfigError(source, ["(top level): expected a mapping of settings"])
    try:
        settings = Settings(**data)
    except ValidationError as e:
        raise ConfigError(source, format_errors(e)) from e
    problems = settings.secrets_problems()
    if problems:
        raise ConfigError(source, problems)
    return settings
