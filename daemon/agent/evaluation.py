"""Replay evaluation: run the agent on recorded incidents and score what it found and proposed.

A scenario is a directory: `scenario.yaml` (the alerts with their times, recorded outputs
of shell diagnostics and HTTP probes, the expected outcome) and `history.om` (the metric
history around the incident, OpenMetrics text). The history is loaded into a real
Prometheus (see `replay`), the agent's PromQL tools query it at the scenario's time, and
each run ends in a `ScenarioScore`: cause found, action correct, false-positive actions,
escalation, steps, tokens, cost, wall time.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon.agent.llm import OpenAIChat
from daemon.agent.loop import Investigator
from daemon.agent.reaction import AgentReaction
from daemon.agent.replay import ReplayPrometheus, history_window, windows_overlap
from daemon.agent.run import InvestigationRun
from daemon.config.agent import AgentConfig, LLMConfig
from daemon.config.settings import Settings
from daemon.domain import Alert, ReceiveAlert, fingerprint
from daemon.domain.durations import parse_duration
from daemon.engine.blobs import BlobStore
from daemon.engine.ingest import Ingestor
from daemon.engine.store import EventLog
from daemon.runbooks.context_tools import AlertContext, PastIncidents
from daemon.runbooks.runbook import RunbookLibrary
from daemon.runbooks.tools import (
    HttpProbeArgs,
    ShellDiagnosticArgs,
    Tool,
    ToolContext,
    ToolResult,
)

SHIPPED_SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SCENARIO_FILE = "scenario.yaml"
HISTORY_FILE = "history.om"
# Histories closer than this share no Prometheus: a 24h range query would see both.
HISTORY_MARGIN = 36 * 3600.0

Kind = Literal["fault", "red_herring", "control"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expected(_Strict):
    """What a good responder concludes: the cause's keywords and the right action, or none."""

    kind: Kind
    cause: list[str] = []
    action: str | None = None
    params: dict[str, Any] = {}
    # Why the runbook's own default condition gets this scenario wrong (a known limit, so
    # the deterministic path is not held to it); empty when it is designed to get it right.
    runbook_miss: str = ""


class RecordedAlert(_Strict):
    """One alert, firing since `since` before the scenario's time."""

    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = {}
    since: str = "10m"


class RecordedProbe(_Strict):
    """What an HTTP probe of a URL saw."""

    http_status: int = 200
    latency_seconds: float = 0.05
    cert_days_left: float | None = None
    error: str = ""


class Scenario(_Strict):
    """One recorded incident."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    runbook: str
    description: str = ""
    time: datetime
    alerts: list[RecordedAlert] = Field(min_length=1)
    shell: dict[str, str] = {}
    probes: dict[str, RecordedProbe] = {}
    expect: Expected
    directory: str = ""

    @property
    def history(self) -> Path:
        """The OpenMetrics history file."""
        return Path(self.directory) / HISTORY_FILE

    @property
    def key(self) -> str:
        """`runbook/name`, unique across the shipped scenarios."""
        return f"{self.runbook}/{self.name}"


class ScenarioError(Exception):
    """A scenario directory is unusable; the message names the file and the problem."""


def load_scenario(directory: Path) -> Scenario:
    """Read and validate one scenario directory."""
    spec = directory / SCENARIO_FILE
    try:
        data = yaml.safe_load(spec.read_text())
    except OSError as e:
        raise ScenarioError(f"{spec}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ScenarioError(f"{spec}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{spec}: expected a mapping")
    try:
        sc = Scenario.model_validate({**data, "directory": str(directory)})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in e.errors(include_url=False)
        )
        raise ScenarioError(f"{spec}: {problems}") from None
    if sc.time.tzinfo is None:
        raise ScenarioError(f"{spec}: time: give a timezone (e.g. 2026-06-01T12:00:00Z)")
    if not sc.history.is_file():
        raise ScenarioError(f"{directory}: no {HISTORY_FILE} (the metric history)")
    return sc


def find_scenarios(paths: list[Path]) -> list[Scenario]:
    """Every scenario under the given directories (a scenario directory or a tree of them)."""
    found: list[Scenario] = []
    for root in paths or [SHIPPED_SCENARIOS]:
        if (root / SCENARIO_FILE).is_file():
            found.append(load_scenario(root))
            continue
        specs = sorted(root.rglob(SCENARIO_FILE))
        if not specs:
            raise ScenarioError(f"{root}: no {SCENARIO_FILE} found under it")
        found += [load_scenario(s.parent) for s in specs]
    return found


# --- recorded tools ------------------------------------------------------------------------


class RecordedShell:
    """`shell_diagnostic` answered from the scenario's recorded outputs."""

    name = "shell_diagnostic"
    args = ShellDiagnosticArgs

    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs

    async def run(self, args: ShellDiagnosticArgs, ctx: ToolContext) -> ToolResult:
        """The recorded output of the named command, or no_data."""
        out = self.outputs.get(args.command)
        if out is None:
            return ToolResult(
                status="no_data",
                observed_at=ctx.now,
                summary=f"{args.command}: no output recorded in this scenario",
            )
        lines = out.splitlines()
        return ToolResult(
            status="ok",
            observed_at=ctx.now,
            summary=f"$ {args.command} (exit 0)\n{out[:3000]}",
            facts={"exit_code": 0, "lines": len(lines), "truncated": False},
        )


class RecordedHttpProbe:
    """`http_probe` answered from the scenario's recorded probes."""

    name = "http_probe"
    args = HttpProbeArgs

    def __init__(self, probes: dict[str, RecordedProbe]) -> None:
        self.probes = probes

    async def run(self, args: HttpProbeArgs, ctx: ToolContext) -> ToolResult:
        """The recorded probe of the URL, or a refusal as for a URL not allowlisted."""
        p = self.probes.get(args.url)
        if p is None:
            return ToolResult(
                status="refused",
                observed_at=ctx.now,
                summary=f"{args.url} is not in agent.tools.http_probe_allow",
            )
        facts: dict[str, Any] = {
            "ok": not p.error and p.http_status < 400,
            "http_status": p.http_status,
            "latency_seconds": p.latency_seconds,
        }
        summary = (
            f"GET {args.url} failed: {p.error}"
            if p.error
            else f"GET {args.url} -> {p.http_status} in {p.latency_seconds:.3f}s"
        )
        if p.cert_days_left is not None:
            facts["cert_days_left"] = p.cert_days_left
            summary += f"; certificate expires in {p.cert_days_left:.1f} days"
        return ToolResult(status="ok", observed_at=ctx.now, summary=summary, facts=facts)


# --- scores --------------------------------------------------------------------------------


class ScenarioScore(BaseModel):
    """How one replay went."""

    scenario: str
    kind: Kind
    runbook: str
    runbook_version: str = ""
    expected_action: str | None = None
    proposed: list[str] = []
    cause_found: bool | None = None
    action_correct: bool = False
    false_positives: int = 0
    escalated: str = ""
    concluded_by: str = ""
    probable_cause: str = ""
    steps: int = 0
    tool_calls: int = 0
    tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    error: str = ""


class Totals(BaseModel):
    """The overall figures of one eval run."""

    scenarios: int = 0
    cause_found: int = 0
    cause_expected: int = 0
    action_correct: int = 0
    false_positives: int = 0
    escalated: int = 0
    errors: int = 0
    steps: int = 0
    tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0


class EvalReport(BaseModel):
    """One eval run: what was run with what, per-scenario scores and totals."""

    model: str
    runbooks: dict[str, str] = {}
    started_at: datetime
    scores: list[ScenarioScore] = []
    totals: Totals = Totals()


def _matches(params: dict[str, Any], expected: dict[str, Any]) -> bool:
    return all(params.get(k) == v for k, v in expected.items())


def score_run(sc: Scenario, run: InvestigationRun, seconds: float) -> ScenarioScore:
    """Score a finished investigation against the scenario's expected outcome."""
    exp = sc.expect
    right = [
        p for p in run.proposals if p.action_id == exp.action and _matches(p.params, exp.params)
    ]
    wrong = [p for p in run.proposals if p not in right]
    correct = not run.proposals if exp.action is None else bool(right) and not wrong
    c = run.concluded
    cause_text = ""
    if c is not None:
        # A deterministic summary lists every diagnostic, so only its stated cause counts.
        cause_text = c.probable_cause
        if c.concluded_by != "deterministic":
            cause_text += "\n" + c.summary
    found = all(k.lower() in cause_text.lower() for k in exp.cause) if exp.cause else None
    return ScenarioScore(
        scenario=sc.key,
        kind=exp.kind,
        runbook=sc.runbook,
        runbook_version=run.started.runbook_version,
        expected_action=exp.action,
        proposed=[f"{p.action_id} {_params(p.params)}".strip() for p in run.proposals],
        cause_found=found,
        action_correct=correct,
        false_positives=len(wrong) if exp.kind == "fault" else len(run.proposals) - len(right),
        escalated=run.escalated.reason if run.escalated else "",
        concluded_by=c.concluded_by if c else "",
        probable_cause=(c.probable_cause if c else "")[:300],
        steps=len(run.responded),
        tool_calls=len(run.calls),
        tokens=run.usage.total,
        cost=round(run.cost, 6),
        seconds=round(seconds, 3),
    )


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()))


def totals(scores: list[ScenarioScore]) -> Totals:
    """Sum the per-scenario scores."""
    return Totals(
        scenarios=len(scores),
        cause_found=sum(1 for s in scores if s.cause_found),
        cause_expected=sum(1 for s in scores if s.cause_found is not None),
        action_correct=sum(1 for s in scores if s.action_correct),
        false_positives=sum(s.false_positives for s in scores),
        escalated=sum(1 for s in scores if s.escalated),
        errors=sum(1 for s in scores if s.error),
        steps=sum(s.steps for s in scores),
        tokens=sum(s.tokens for s in scores),
        cost=round(sum(s.cost for s in scores), 6),
        seconds=round(sum(s.seconds for s in scores), 3),
    )


# --- running ---------------------------------------------------------------------------------

PromQLTools = Callable[[str], dict[str, Tool]]
"""Builds the PromQL tools for a Prometheus URL (the composition root owns the client)."""


class ScenarioClock:
    """The scenario's time, moving on with the wall clock from the start of the replay."""

    def __init__(self, at: datetime) -> None:
        self.at = at
        self.started = time.monotonic()

    def __call__(self) -> datetime:
        return self.at + timedelta(seconds=time.monotonic() - self.started)


async def replay(
    sc: Scenario,
    runbooks: RunbookLibrary,
    tools: dict[str, Tool],
    llm: LLMConfig | None = None,
    api_key: str = "",
) -> ScenarioScore:
    """Replay one scenario on a fresh in-memory watchkeeper; score the investigation."""
    started = time.monotonic()
    clock = ScenarioClock(sc.time)
    with tempfile.TemporaryDirectory(prefix="watchkeeper-replay-") as tmp:
        settings = Settings(
            store=f"sqlite:///{tmp}/events.db",
            state_dir=Path(tmp),
            grouping={"group_by": ["alertname", "instance"]},  # type: ignore[arg-type]
            agent=AgentConfig(llm=llm),
        )
        log = EventLog(settings.store)
        ing = Ingestor(log, settings.grouping.policy(), clock, checkpoint_in_child=False)
        await ing.start()
        model = OpenAIChat(llm, api_key) if llm else None
        try:
            cfg = settings.agent
            investigator = Investigator(
                ing,
                runbooks,
                tools={
                    "alert_context": AlertContext(),
                    "past_incidents": PastIncidents(),
                    **tools,
                    "shell_diagnostic": RecordedShell(sc.shell),
                    "http_probe": RecordedHttpProbe(sc.probes),
                },
                model=model,
                blobs=BlobStore(log, ing.writer),
                config=cfg,
                clock=clock,
                failure_pause=lambda n: 0.0,
            )
            incident = None
            for a in sc.alerts:
                since = parse_duration(a.since)
                alert = Alert(
                    fingerprint=fingerprint(a.labels),
                    labels=a.labels,
                    annotations=a.annotations,
                    starts_at=sc.time - since,
                    ends_at=sc.time + timedelta(hours=1),
                    source="replay",
                )
                await ing.submit([ReceiveAlert(alert)])
                incident = incident or ing.world.alerts[alert.fingerprint].incident_id
            reaction = AgentReaction(ing, runbooks, cfg, investigator, clock)
            starts = [c for c in reaction.starts_for(incident) if c.runbook_id == sc.runbook]
            if not starts:
                return ScenarioScore(
                    scenario=sc.key,
                    kind=sc.expect.kind,
                    runbook=sc.runbook,
                    expected_action=sc.expect.action,
                    error=f"the alerts are not routed to runbook {sc.runbook}",
                )
            await ing.submit(starts[:1])
            run = await investigator.investigate(starts[0].investigation_id)
            return score_run(sc, run, time.monotonic() - started)
        finally:
            if model is not None:
                await model.close()
            await ing.close()
            log.close()


def history_groups(scenarios: list[Scenario]) -> list[list[Scenario]]:
    """Split scenarios so no two in a group have histories within HISTORY_MARGIN."""
    groups: list[tuple[list[Scenario], list[tuple[float, float]]]] = []
    for sc in scenarios:
        w = history_window(sc.history)
        for members, windows in groups:
            if not any(windows_overlap(w, o, HISTORY_MARGIN) for o in windows):
                members.append(sc)
                windows.append(w)
                break
        else:
            groups.append(([sc], [w]))
    return [m for m, _ in groups]


async def evaluate(
    scenarios: list[Scenario],
    runbooks: RunbookLibrary,
    promql_tools: PromQLTools,
    *,
    llm: LLMConfig | None = None,
    api_key: str = "",
    now: datetime,
    progress: Callable[[ScenarioScore], None] | None = None,
) -> EvalReport:
    """Replay every scenario (one real Prometheus per group of non-overlapping histories)."""
    report = EvalReport(
        model=llm.model if llm else "deterministic",
        runbooks={
            sc.runbook: rb.version
            for sc in scenarios
            if (rb := runbooks.get(sc.runbook)) is not None
        },
        started_at=now,
    )
    for group in history_groups(scenarios):
        prom = await asyncio.to_thread(_start_prometheus, [sc.history for sc in group])
        try:
            tools = promql_tools(prom.url)
            for sc in group:
                if runbooks.get(sc.runbook) is None:
                    score = ScenarioScore(
                        scenario=sc.key,
                        kind=sc.expect.kind,
                        runbook=sc.runbook,
                        expected_action=sc.expect.action,
                        error=f"no runbook {sc.runbook} in the library",
                    )
                else:
                    score = await replay(sc, runbooks, tools, llm, api_key)
                report.scores.append(score)
                if progress is not None:
                    progress(score)
        finally:
            await asyncio.to_thread(prom.close)
    order = {sc.key: i for i, sc in enumerate(scenarios)}
    report.scores.sort(key=lambda s: order.get(s.scenario, 0))
    report.totals = totals(report.scores)
    return report


def _start_prometheus(histories: list[Path]) -> ReplayPrometheus:
    return ReplayPrometheus(histories).__enter__()
