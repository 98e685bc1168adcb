"""The Tool protocol, the typed arguments of every tool, and their structured results.

Tools are read-only. Each takes a pydantic model of arguments (whose JSON schema is what
the model sees) and returns a `ToolResult` with a status, the time it observed the world,
a short summary for the prompt, a few scalar facts for runbook conditions, and the data.
Implementations that do I/O live in handlers/tools/ and are built by daemon/wiring.py.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from daemon.domain.investigation_model import Fact, ToolStatus
from daemon.domain.state import World

log = logging.getLogger("watchkeeper.tools")


class ToolArgs(BaseModel):
    """Base of tool arguments: unknown fields are an error the model is told about."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PromQLInstantArgs(ToolArgs):
    """Evaluate a PromQL expression now."""

    query: str = Field(min_length=1, max_length=4000, description="PromQL expression")


class PromQLRangeArgs(ToolArgs):
    """Evaluate a PromQL expression over the last `range`, summarized per series."""

    query: str = Field(min_length=1, max_length=4000, description="PromQL expression")
    range: str = Field(default="1h", description="how far back, e.g. 30m, 6h (max 7d)")
    step: str = Field(default="", description="resolution, e.g. 1m (default: range/120)")


class AlertContextArgs(ToolArgs):
    """The incident and its alerts as they are now (labels and annotations are untrusted)."""


class PastIncidentsArgs(ToolArgs):
    """Earlier incidents with the same runbook or labels, and how they ended."""

    limit: int = Field(default=5, ge=1, le=20)


class HttpProbeArgs(ToolArgs):
    """GET an allowlisted URL and report status, latency and TLS expiry."""

    url: str = Field(min_length=1, max_length=2000)


class ShellDiagnosticArgs(ToolArgs):
    """Run one allowlisted diagnostic command (no shell; arguments are validated)."""

    command: str = Field(description="name of an allowlisted command template")
    args: dict[str, str] = Field(default_factory=dict, description="template parameters")


class ProposeActionArgs(ToolArgs):
    """Propose one of the runbook's actions; a person or policy decides whether it runs."""

    action: str = Field(description="id of one of the runbook's actions")
    params: dict[str, Any] = Field(default_factory=dict)
    rationale: str = Field(min_length=1, max_length=4000)
    evidence: list[str] = Field(default_factory=list, description="call ids of tool results")


class ConcludeArgs(ToolArgs):
    """Finish the investigation with a conclusion."""

    summary: str = Field(min_length=1, max_length=8000)
    probable_cause: str = Field(default="", max_length=4000)
    evidence: list[str] = Field(default_factory=list, description="call ids of tool results")


ARGS: dict[str, type[ToolArgs]] = {
    "promql_instant": PromQLInstantArgs,
    "promql_range": PromQLRangeArgs,
    "alert_context": AlertContextArgs,
    "past_incidents": PastIncidentsArgs,
    "http_probe": HttpProbeArgs,
    "shell_diagnostic": ShellDiagnosticArgs,
}
"""Read-only tools a runbook may allow, by name."""

CONTROL: dict[str, type[ToolArgs]] = {
    "propose_action": ProposeActionArgs,
    "conclude": ConcludeArgs,
}
"""Tools every LLM investigation has: the only way to change anything, and the way to stop."""


class ToolResult(BaseModel):
    """What a tool observed."""

    model_config = ConfigDict(frozen=True)

    status: ToolStatus
    observed_at: datetime
    summary: str
    facts: dict[str, Fact] = {}
    data: Any = None


@dataclass(frozen=True)
class ToolContext:
    """What a tool may read besides its arguments: the incident, the world, the time."""

    incident_id: Any
    runbook_id: str
    labels: dict[str, str]
    world: World
    now: datetime
    # The host the incident is about ("" means this host): where shell diagnostics run.
    target: str = ""


class Tool(Protocol):
    """A read-only tool: a name, typed arguments, and `run` returning a structured result."""

    @property
    def name(self) -> str:
        """The tool's name as the model calls it."""

    @property
    def args(self) -> type[ToolArgs]:
        """The pydantic model of its arguments."""

    async def run(self, args: Any, ctx: ToolContext) -> ToolResult:
        """Observe and report; never raise for an expected failure (return status=error)."""


def describe(name: str, args: type[ToolArgs]) -> dict[str, Any]:
    """The OpenAI tool definition (function name, description, JSON schema of arguments)."""
    schema = args.model_json_schema()
    schema.pop("title", None)
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": (args.__doc__ or name).strip().splitlines()[0],
            "parameters": schema,
        },
    }


def error(now: datetime, message: str, status: ToolStatus = "error") -> ToolResult:
    """A result reporting a failure the model (and the person reading) should see."""
    return ToolResult(status=status, observed_at=now, summary=message[:2000])


async def run_tool(tool: Tool, args: ToolArgs, ctx: ToolContext, seconds: float) -> ToolResult:
    """Run one read-only tool for at most `seconds`.

    A tool that raises or overruns is an error result the caller records, never a crash:
    the agent reads it as an observation, an action check as no evidence.
    """
    try:
        async with asyncio.timeout(seconds):
            return await tool.run(args, ctx)
    except Exception as e:
        log.warning(
            "tool failed tool=%s incident=%s: %s: %s",
            tool.name, ctx.incident_id, type(e).__name__, e, exc_info=True,
        )
        return error(ctx.now, f"{tool.name} failed: {type(e).__name__}: {e}")
