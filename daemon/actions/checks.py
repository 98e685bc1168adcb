"""Checks against the world outside: the runbook's precondition re-evaluated now, and `verify`.

Both run the runbook's read-only tools (PromQL, HTTP probe, alert context) with the
incident's labels, exactly as the investigation did, but at this moment. A tool that is
missing or fails yields no facts, and a check on no facts is false: no evidence, no action.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from daemon.domain.action_model import ActionEntry, VerifySpec
from daemon.domain.conditions import Check
from daemon.domain.state import World
from daemon.runbooks.runbook import (
    MissingLabel,
    Runbook,
    promql_string,
    render,
)
from daemon.runbooks.tools import (
    Tool,
    ToolContext,
    ToolResult,
    error,
    run_tool,
)


class WorldChecks:
    """Runs precondition and verify checks through the read-only tools."""

    def __init__(
        self, tools: Mapping[str, Tool], clock: Callable[[], datetime], timeout: float = 30.0
    ) -> None:
        self.tools = tools
        self.clock = clock
        self.timeout = timeout

    async def run_tool(
        self,
        name: str,
        args: Mapping[str, Any],
        labels: dict[str, str],
        entry: ActionEntry,
        world: World,
        *,
        rendered: bool = False,
    ) -> ToolResult:
        """One tool call with `{labels.X}` filled (escaped for PromQL) unless already `rendered`."""
        now = self.clock()
        tool = self.tools.get(name)
        if tool is None:
            return error(now, f"tool {name} is not available on this daemon", status="refused")
        try:
            escape = promql_string if name.startswith("promql_") else None
            raw = dict(args) if rendered else render(dict(args), labels, escape)
            parsed = tool.args.model_validate(raw)
        except (MissingLabel, ValidationError) as e:
            return error(now, f"{name}: {e}", status="refused")
        ctx = ToolContext(entry.incident_id, entry.runbook_id, labels, world, now, entry.target)
        return await run_tool(tool, parsed, ctx, self.timeout)

    async def precondition(
        self, entry: ActionEntry, rb: Runbook, labels: dict[str, str], world: World
    ) -> tuple[bool | None, tuple[str, ...]]:
        """The default action's condition re-evaluated now (None when this action has none)."""
        da = rb.default_action
        if da is None or da.action != entry.action_id:
            return None, ()
        facts: dict[str, dict[str, Any]] = {}
        lines: list[str] = []
        for diag_id in sorted(da.when.diagnostics()):
            d = next(d for d in rb.diagnostics if d.id == diag_id)
            result = await self.run_tool(d.tool, d.args, labels, entry, world)
            facts[diag_id] = dict(result.facts)
            first = result.summary.splitlines()[0][:200] if result.summary else ""
            lines.append(
                f"- {diag_id} re-run at {result.observed_at.isoformat(timespec='seconds')} "
                f"[{result.status}]: {first}"
            )
        held, verdict = da.when.explain(facts)
        return held, (*lines, *verdict)

    async def verify(
        self, entry: ActionEntry, spec: VerifySpec, labels: dict[str, str], world: World
    ) -> tuple[bool, str]:
        """Whether the verify check holds now, and what was seen."""
        if spec.query:
            result = await self.run_tool(
                "promql_instant", {"query": spec.query}, labels, entry, world, rendered=True
            )
        else:
            result = await self.run_tool(
                "http_probe", {"url": spec.probe}, labels, entry, world, rendered=True
            )
        check = Check.parse(f"verify.{spec.expect}")
        held = check.holds({"verify": dict(result.facts)})
        got = result.facts.get(check.fact)
        seen = "no data" if got is None else (f"{got:.4g}" if isinstance(got, float) else str(got))
        first = result.summary.splitlines()[0][:200] if result.summary else result.status
        return held, f"{spec.expect} {'held' if held else 'did not hold'} (got {seen}; {first})"
