"""`watchkeeper eval` on the shipped scenarios: histories loaded into a real Prometheus with
promtool, the deterministic path and a scripted model replayed against it, and the floors
the runbooks are designed to reach."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import realstack
from llmserver import ScriptedLLM, Turn, call
from typer.testing import CliRunner

from daemon.agent.evaluation import (
    SHIPPED_SCENARIOS,
    EvalReport,
    ScenarioError,
    evaluate,
    find_scenarios,
    load_scenario,
)
from daemon.cli.evaluate import promql_tools
from daemon.cli.main import app
from daemon.config.agent import LLMConfig
from daemon.runbooks.runbook import load_runbooks

pytestmark = pytest.mark.integration
RUNBOOKS = load_runbooks()


@pytest.fixture(scope="module")
def deterministic() -> EvalReport:
    realstack.require("prometheus")
    scenarios = find_scenarios([])
    return asyncio.run(evaluate(scenarios, RUNBOOKS, promql_tools, now=datetime.now(UTC)))


def designed(scenario: str) -> bool:
    """Whether the runbook's deterministic path is meant to get this scenario right."""
    sc = load_scenario(SHIPPED_SCENARIOS / scenario)
    rb = RUNBOOKS.get(sc.runbook)
    assert rb is not None
    default = rb.default_action.action if rb.default_action else None
    if not sc.expect.runbook_miss:
        # Then the expected outcome is something the runbook alone can reach.
        assert sc.expect.action in (None, default), scenario
    return not sc.expect.runbook_miss


def test_ships_enough_scenarios_of_every_kind() -> None:
    scenarios = find_scenarios([])
    assert len(scenarios) >= 30
    for rb in RUNBOOKS.runbooks:
        kinds = {s.expect.kind for s in scenarios if s.runbook == rb}
        assert kinds == {"fault", "red_herring", "control"}, rb


def test_deterministic_floors(deterministic: EvalReport) -> None:
    rep = deterministic
    assert rep.model == "deterministic"
    assert rep.totals.errors == 0, [s.error for s in rep.scores if s.error]
    assert len(rep.scores) >= 30
    for s in rep.scores:
        if s.kind == "control":
            assert s.proposed == [], f"{s.scenario}: a no-fault control got {s.proposed}"
        if designed(s.scenario):
            assert s.action_correct, f"{s.scenario}: proposed {s.proposed}"
            assert s.false_positives == 0, s.scenario
            if s.kind == "fault" and s.expected_action:
                assert s.cause_found, f"{s.scenario}: {s.probable_cause!r}"
        assert s.tokens == 0
        assert s.steps == 0
    # What the runbooks cannot tell apart on their own, measured rather than hidden.
    missed = sorted(s.scenario for s in rep.scores if not s.action_correct)
    assert missed == sorted(s.scenario for s in rep.scores if not designed(s.scenario))
    assert len(missed) <= 3


def _follow_the_facts(body: dict[str, Any]) -> Turn:
    """A model that reads the facts block: proposes the default action when it holds."""
    user = body["messages"][1]["content"]
    facts = user.split("Facts gathered before your first step", 1)[1]
    cited = sorted(set(re.findall(r"evidence id (d-[a-z0-9_]+)", facts)))[:3]
    if any(m["role"] == "tool" for m in body["messages"]):
        return Turn(
            tool_calls=[
                call("conclude", summary="done", probable_cause="see facts", evidence=cited)
            ]
        )
    m = re.search(
        r"Default action: ([a-z0-9_]+) (\{.*?\}) when .*?: on these facts it HOLDS", facts
    )
    if m is None:
        return Turn(
            tool_calls=[
                call(
                    "conclude",
                    summary="the default condition does not hold; nothing to do",
                    probable_cause="no fault the runbook can fix",
                    evidence=cited,
                )
            ]
        )
    return Turn(
        tool_calls=[
            call(
                "propose_action",
                action=m.group(1),
                params=json.loads(m.group(2)),
                rationale="the runbook's condition holds on the facts",
                evidence=cited,
            )
        ]
    )


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM(default=Turn())
    server.script = [_follow_the_facts] * 200
    yield server
    server.close()


def test_scripted_model_replays_on_the_same_history(
    llm: ScriptedLLM, deterministic: EvalReport
) -> None:
    picks = [
        "disk-filling/journal-fills-var",
        "disk-filling/already-cleaned",
        "systemd-service-down/crashed-once",
        "kafka-consumer-lag/stalled-producer",
        "host-high-cpu/batch-finished",
        "tls-cert-expiring/already-renewed",
    ]
    scenarios = [load_scenario(SHIPPED_SCENARIOS / p) for p in picks]
    cfg = LLMConfig(base_url=llm.url, model="scripted-1", max_retries=0, price_prompt_per_1k=0.5)
    rep = asyncio.run(
        evaluate(scenarios, RUNBOOKS, promql_tools, llm=cfg, api_key="k", now=datetime.now(UTC))
    )
    assert rep.model == "scripted-1"
    assert rep.totals.errors == 0
    det = {s.scenario: s for s in deterministic.scores}
    for s in rep.scores:
        assert s.steps >= 1, s.scenario
        assert s.tokens > 0, s.scenario
        assert s.cost > 0, s.scenario
        assert s.concluded_by == "agent:scripted-1"
        # Same facts, same decision as the deterministic path.
        assert s.action_correct == det[s.scenario].action_correct, s.scenario
        assert s.escalated == "", s.escalated
        if s.kind == "control":
            assert s.proposed == []
    # The model saw the rendered diagnostics before its first step.
    first = llm.requests[0]["messages"][1]["content"]
    assert "evidence id d-free_ratio" in first
    assert 'mountpoint=\\"/var\\"' in first


def test_cli_json_and_compare(tmp_path: Path, deterministic: EvalReport) -> None:
    runner = CliRunner()
    one = str(SHIPPED_SCENARIOS / "memory-pressure" / "leak-thrashing")
    res = runner.invoke(app, ["eval", one, "-o", "json"])
    assert res.exit_code == 0, res.output
    rep = EvalReport.model_validate_json(res.stdout)
    [s] = rep.scores
    assert s.action_correct
    assert s.proposed == ["restart_service unit=reportgen.service"]
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(deterministic.model_dump_json())
    b.write_text(rep.model_dump_json())
    res = runner.invoke(app, ["eval", "--compare", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "total" in res.stdout
    assert "A = " in res.stdout
    res = runner.invoke(app, ["eval", "--compare", str(a), str(b), "-o", "json"])
    both = json.loads(res.stdout)
    assert both["a"]["totals"]["scenarios"] >= 30
    assert both["b"]["scores"][0]["scenario"] == "memory-pressure/leak-thrashing"


def test_a_broken_scenario_is_refused_with_the_reason(tmp_path: Path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "scenario.yaml").write_text("name: bad\nruntime: 3\n")
    with pytest.raises(ScenarioError, match="runbook"):
        load_scenario(d)
    res = CliRunner().invoke(app, ["eval", str(d)])
    assert res.exit_code == 2


def test_the_shadow_candidate_fixes_the_restart_loop_without_regressions(
    tmp_path: Path, deterministic: EvalReport
) -> None:
    # v4 of systemd-service-down (examples/shadow-runbooks) reads the restart count.
    lib_dir = tmp_path / "runbooks"
    lib_dir.mkdir()
    for f in (Path(__file__).parents[2] / "runbooks").glob("*.md"):
        (lib_dir / f.name).write_text(f.read_text())
    candidate = Path(__file__).parents[2] / "examples" / "shadow-runbooks"
    (lib_dir / "systemd-service-down.md").write_text(
        (candidate / "systemd-service-down.md").read_text()
    )
    lib = load_runbooks(lib_dir)
    assert not lib.problems
    scenarios = find_scenarios([SHIPPED_SCENARIOS / "systemd-service-down"])
    rep = asyncio.run(evaluate(scenarios, lib, promql_tools, now=datetime.now(UTC)))
    assert rep.runbooks["systemd-service-down"] == "4"
    assert all(s.action_correct for s in rep.scores), [(s.scenario, s.proposed) for s in rep.scores]
    before = {s.scenario: s for s in deterministic.scores}
    assert not before["systemd-service-down/restart-loop-bad-config"].action_correct
    assert rep.totals.false_positives == 0


def test_a_history_promtool_cannot_read_is_refused_with_its_words(tmp_path: Path) -> None:
    src = SHIPPED_SCENARIOS / "generic-triage" / "noisy-rule"
    d = tmp_path / "broken"
    d.mkdir()
    (d / "scenario.yaml").write_text((src / "scenario.yaml").read_text())
    (d / "history.om").write_text('up{job="x"} 1 1772431200\nup{job="x"} oops 1772431260\n')
    res = CliRunner().invoke(app, ["eval", str(d)])
    assert res.exit_code == 2
    assert "cannot replay: promtool could not read" in res.output
