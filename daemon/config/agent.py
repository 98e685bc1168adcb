"""The `agent:` section of the config: model endpoint, routes, concurrency, tool allowlists.

With no `agent.llm` configured the agent takes the deterministic path: it runs each
runbook's diagnostics in order and proposes the default action when its condition holds.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from daemon.config.types import Duration, Section
from daemon.domain.routing import Route, RouteTree

_TEMPLATE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class LLMConfig(Section):
    """An OpenAI-compatible chat-completions endpoint."""

    base_url: str = Field(min_length=1, description="e.g. http://127.0.0.1:11434/v1")
    model: str = Field(min_length=1)
    api_key: str = Field(
        default="none", description="literal, env:NAME, file:/path or credential:NAME"
    )
    timeout: Duration = timedelta(seconds=60)
    connect_timeout: Duration = timedelta(seconds=5)
    max_retries: int = Field(default=3, ge=0, le=10)
    temperature: float | None = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=1500, gt=0)
    # Estimated price in your currency per 1000 tokens, for the per-incident cost figure.
    price_prompt_per_1k: float = Field(default=0.0, ge=0.0)
    price_completion_per_1k: float = Field(default=0.0, ge=0.0)
    # After this many failed calls in a row the run finishes on the deterministic path.
    max_failures: int = Field(default=2, ge=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https"):
            raise ValueError("expected an http:// or https:// URL")
        return v

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Estimated cost of one call."""
        return round(
            prompt_tokens / 1000 * self.price_prompt_per_1k
            + completion_tokens / 1000 * self.price_completion_per_1k,
            6,
        )


class ShellTemplate(Section):
    """An allowlisted diagnostic command: an argv with `{param}` slots, never a shell."""

    argv: list[str] = Field(min_length=1)
    timeout: Duration = timedelta(seconds=10)
    description: str = ""

    @field_validator("argv")
    @classmethod
    def _absolute_or_plain(cls, v: list[str]) -> list[str]:
        if _TEMPLATE_PARAM.search(v[0]):
            raise ValueError("the program (argv[0]) cannot be a template parameter")
        return v

    def params(self) -> list[str]:
        """Names of the `{param}` slots."""
        return sorted({m.group(1) for a in self.argv for m in _TEMPLATE_PARAM.finditer(a)})


class ToolsConfig(Section):
    """What the read-only tools may touch."""

    prometheus_url: str = ""
    prometheus_timeout: Duration = timedelta(seconds=10)
    # URL patterns the HTTP probe may fetch: scheme://host-glob[:port]/path-glob
    http_probe_allow: list[str] = []
    http_probe_timeout: Duration = timedelta(seconds=10)
    shell: dict[str, ShellTemplate] = {}
    shell_output_bytes: int = Field(default=16_384, ge=256)
    # Tool results larger than this are stored once as a blob and referenced by hash.
    blob_threshold_bytes: int = Field(default=4096, ge=256)

    @field_validator("http_probe_allow")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            u = urlsplit(p)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError(f"{p!r}: expected scheme://host[:port]/path (globs allowed)")
        return v


class AgentConfig(Section):
    """Runbooks, routing, the model, budgets and the concurrency cap."""

    enabled: bool = True
    runbooks_dir: Path | None = None
    # Candidate runbook versions that run in shadow next to the active ones (proposals
    # recorded as ShadowActionProposed, never executed) until a person promotes them.
    shadow_runbooks_dir: Path | None = None
    routes: list[Route] = []
    default_runbook: str | None = "generic-triage"
    llm: LLMConfig | None = None
    concurrency: int = Field(default=8, ge=1, le=256)
    tools: ToolsConfig = ToolsConfig()
    # Tool results kept in full in the prompt; older ones are summarized to one line.
    recent_results_in_full: int = Field(default=6, ge=1)

    def tree(self) -> RouteTree:
        """The configured route tree (runbooks' own matchers are added by the agent)."""
        return RouteTree(routes=tuple(self.routes), default=self.default_runbook)

    def secret_refs(self) -> dict[str, str]:
        """Secret references by config path, for `Settings.secrets_problems`."""
        return {"agent.llm.api_key": self.llm.api_key} if self.llm else {}
