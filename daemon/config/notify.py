"""The `notifications:` section: channels, escalation policies, storm control, Slack app.

Everything has a default, so a config without this section stays valid and sends nothing.
Secret fields (webhook URLs, tokens, signing secrets) take `env:NAME`, `file:/path` or
`credential:NAME` like every other secret.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, model_validator

from daemon.config.secrets import unresolved
from daemon.config.types import Duration, Matchers, Section
from daemon.domain.escalation import EscalationLevel, EscalationPolicy
from daemon.domain.matchers import Matcher

ChannelType = Literal["slack", "slack_webhook", "mattermost", "teams", "webhook"]
Role = Literal["viewer", "responder", "approver", "admin"]

_NEEDS: dict[str, tuple[str, ...]] = {
    "slack": ("token", "channel"),
    "slack_webhook": ("url",),
    "mattermost": ("url",),
    "teams": ("url",),
    "webhook": ("url",),
}


class ChannelConfig(Section):
    """One destination. `slack` uses the bot API (messages are edited in place)."""

    type: ChannelType
    url: str = Field(default="", description="webhook URL; literal or env:/file:/credential:")
    token: str = Field(default="", description="Slack bot token (xoxb-…); a secret reference")
    channel: str = Field(default="", description="Slack channel id for the bot API")
    api_url: str = "https://slack.com/api"
    secret: str = Field(default="", description="webhook: HMAC-SHA256 signing secret")
    username: str = ""

    @model_validator(mode="after")
    def _required(self) -> ChannelConfig:
        missing = [f for f in _NEEDS[self.type] if not getattr(self, f)]
        if missing:
            raise ValueError(f"a {self.type} channel needs {' and '.join(missing)}")
        return self


class StormConfig(Section):
    """At most `max_messages` new messages per channel per `window`; the rest are summarized."""

    max_messages: int = Field(default=20, ge=1, le=1000)
    window: Duration = timedelta(minutes=5)


class RetryConfig(Section):
    """Retries of timeouts, 5xx and 429 answers, with jittered exponential backoff."""

    attempts: int = Field(default=4, ge=1, le=10)
    timeout: Duration = timedelta(seconds=10)
    backoff: Duration = timedelta(seconds=1)
    max_backoff: Duration = timedelta(minutes=1)


class LevelConfig(Section):
    """One escalation level."""

    channels: list[str] = Field(min_length=1)
    delay: Duration = timedelta(0)
    repeat: int = Field(default=0, ge=0, le=100)
    repeat_every: Duration | None = None


class PolicyConfig(Section):
    """An escalation policy, chosen for incidents whose labels match all of `match`."""

    name: str = Field(min_length=1)
    match: Matchers = []
    stop_on: list[Literal["acknowledged", "resolved"]] = ["acknowledged", "resolved"]
    levels: list[LevelConfig] = Field(min_length=1)

    def policy(self) -> EscalationPolicy:
        """The pure domain's view of this policy."""
        return EscalationPolicy(
            name=self.name,
            matchers=tuple(Matcher.parse(m) for m in self.match),
            stop_on=tuple(self.stop_on),
            levels=tuple(
                EscalationLevel(
                    channels=tuple(dict.fromkeys(lv.channels)),
                    delay=lv.delay,
                    repeat=lv.repeat,
                    repeat_every=lv.repeat_every,
                )
                for lv in self.levels
            ),
        )


class SlackUser(Section):
    """The watchkeeper identity and role a Slack user acts as."""

    name: str = Field(min_length=1)
    role: Role


class SlackAppConfig(Section):
    """Slack interactivity: the signing secret and who may press the buttons."""

    signing_secret: str = ""
    users: dict[str, SlackUser] = {}
    # Where a button's `response_url` may point (host globs; https, or http to loopback):
    # the reply carries refusal reasons and must not go wherever a payload says.
    response_hosts: list[str] = ["hooks.slack.com"]


class NotificationsConfig(Section):
    """Chat and webhook notifications with escalation."""

    console_url: str = ""
    channels: dict[str, ChannelConfig] = {}
    policies: list[PolicyConfig] = []
    storm: StormConfig = StormConfig()
    retry: RetryConfig = RetryConfig()
    slack_app: SlackAppConfig = SlackAppConfig()

    @model_validator(mode="after")
    def _consistent(self) -> NotificationsConfig:
        problems = []
        names = [p.name for p in self.policies]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"policies: duplicate names {', '.join(dupes)}")
        for i, p in enumerate(self.policies):
            for j, lv in enumerate(p.levels):
                unknown = [c for c in lv.channels if c not in self.channels]
                if unknown:
                    problems.append(
                        f"policies[{i}].levels[{j}].channels: unknown channel(s) "
                        f"{', '.join(unknown)}; define them under notifications.channels"
                    )
        problems += unresolved(self.secret_refs())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def secret_refs(self) -> list[tuple[str, str]]:
        """Every secret reference as (path in the file, reference)."""
        refs = []
        for name, ch in self.channels.items():
            for f in ("url", "token", "secret"):
                if getattr(ch, f):
                    refs.append((f"channels.{name}.{f}", getattr(ch, f)))
        if self.slack_app.signing_secret:
            refs.append(("slack_app.signing_secret", self.slack_app.signing_secret))
        return refs

    def escalation_policies(self) -> tuple[EscalationPolicy, ...]:
        """Policies in the order they are tried."""
        return tuple(p.policy() for p in self.policies)
