"""Shipped runbooks validate; `runbooks validate` reports file, field and reason; conditions
evaluate as written; and the deterministic path of EVERY shipped runbook runs against a
real Prometheus scraping node_exporter/blackbox/kafka/MQTT-shaped metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import realstack
import yaml
from agentkit import CannedPromQL, harness
from metriczoo import CASES, zoo_prometheus
from typer.testing import CliRunner

from daemon.cli.main import app
from daemon.config.settings import load_config
from daemon.domain.conditions import Check, Condition
from daemon.runbooks.runbook import (
    load_runbooks,
    parse_runbook,
    promql_string,
    render,
)
from handlers.tools.prometheus import Prometheus, PromQLInstant, PromQLRange
from handlers.tools.shell import ShellDiagnostic, ShellTemplateSpec

REPO = Path(__file__).resolve().parents[2]
NAMED = {
    "host-high-cpu",
    "disk-filling",
    "memory-pressure",
    "systemd-service-down",
    "http-endpoint-down",
    "tls-cert-expiring",
    "kafka-consumer-lag",
    "mqtt-device-silent",
}
SHIPPED = load_runbooks()


def test_every_shipped_runbook_validates() -> None:
    assert SHIPPED.problems == []
    assert set(SHIPPED.runbooks) >= NAMED
    for rb in SHIPPED.runbooks.values():
        assert rb.body.startswith("# "), rb.id
        assert rb.diagnostics, rb.id
        if rb.id in NAMED:
            assert rb.default_action is not None, rb.id
            assert rb.verify is not None, rb.id
            assert rb.match, rb.id
            assert all(a.risk in ("low", "medium", "high") for a in rb.actions)


def test_cli_validate_shipped_and_broken(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["runbooks", "validate"])
    assert ok.exit_code == 0, ok.output
    assert f"{len(SHIPPED.runbooks)} runbook(s) valid" in ok.output
    (tmp_path / "bad.md").write_text(
        "---\nid: bad\nversion: 1\ntitle: Bad\ntools: [promql_instant]\n"
        "diagnostics:\n  - id: a\n    tool: promql_range\n    args: {querry: up}\n"
        "actions:\n  - id: wipe\n    kind: shell\n    argv: [rm, '{labels.path}']\n    risk: low\n"
        "default_action:\n  action: nope\n  when: {all: ['zz.value < 1']}\n---\nbody\n"
    )
    (tmp_path / "typo.md").write_text(
        "---\nid: typo\nversion: 1\ntitle: T\ntools: [promql_instant]\nfrobnicate: 1\n---\n"
    )
    (tmp_path / "nofront.md").write_text("# just markdown\n")
    (tmp_path / "renamed.md").write_text(
        "---\nid: other\nversion: 1\ntitle: T\ntools: [alert_context]\n---\n"
    )
    bad = runner.invoke(app, ["runbooks", "validate", str(tmp_path)])
    assert bad.exit_code == 1
    lines = bad.output.splitlines()
    expected = [
        f"{tmp_path}/bad.md: diagnostics[0].tool: 'promql_range' is not listed under tools",
        f"{tmp_path}/bad.md: diagnostics[0].args.querry: Extra inputs are not permitted",
        f"{tmp_path}/bad.md: default_action.action: no action 'nope'",
        f"{tmp_path}/bad.md: default_action.when: no diagnostic 'zz'",
        f"{tmp_path}/typo.md: frobnicate: unknown field; remove it or check its spelling",
        f"{tmp_path}/nofront.md: (file): no YAML front matter: "
        "the file must start with a line '---'",
        f"{tmp_path}/renamed.md: id: 'other' must match the file name 'renamed'",
    ]
    for line in expected:
        assert line in lines, f"{line!r} not in:\n{bad.output}"
    assert any("bad.md: actions[0]: {labels.path}" in line for line in lines)


def test_cli_list_and_show() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["runbooks", "list", "--json"])
    assert listed.exit_code == 0
    import json

    ids = {r["id"] for r in json.loads(listed.output)["runbooks"]}
    assert ids == set(SHIPPED.runbooks)
    shown = runner.invoke(app, ["runbooks", "show", "disk-filling"])
    assert shown.exit_code == 0
    assert "vacuum_journal" in shown.output
    assert "Triage" in shown.output
    missing = runner.invoke(app, ["runbooks", "show", "nope"])
    assert missing.exit_code == 1
    assert "no runbook 'nope'" in missing.output


@pytest.mark.parametrize(
    ("check", "facts", "holds"),
    [
        ("a.value < 0.1", {"a": {"value": 0.05}}, True),
        ("a.value < 0.1", {"a": {"value": 0.1}}, False),
        ("a.value <= 0.1", {"a": {"value": 0.1}}, True),
        ("a.value == 1", {"a": {"value": 1.0}}, True),
        ("a.value != 1", {"a": {"value": 1.0}}, False),
        ("a.value > 3", {"a": {}}, False),  # missing fact: no evidence, no action
        ("a.value > 3", {}, False),  # failed diagnostic
        ("a.trend == rising", {"a": {"trend": "rising"}}, True),
        ("a.trend == rising", {"a": {"trend": "flat"}}, False),
        ("a.status == ok", {"a": {"status": "ok"}}, True),
        ("a.output contains OOM", {"a": {"output": "kernel: OOM killer"}}, True),
        ("a.output matches ^kernel", {"a": {"output": "kernel: x"}}, True),
        ("a.value < 10", {"a": {"value": float("nan")}}, False),
        ("a.count > 0", {"a": {"count": 0}}, False),
    ],
)
def test_checks(check: str, facts: dict[str, Any], holds: bool) -> None:
    assert Check.parse(check).holds(facts) is holds


def test_conditions_all_and_any() -> None:
    c = Condition(all=("a.value < 1",), any=("b.value > 5", "c.value > 5"))
    assert c.explain({"a": {"value": 0}, "b": {"value": 9}})[0] is True
    ok, lines = c.explain({"a": {"value": 0}, "b": {"value": 1}, "c": {"value": 1}})
    assert ok is False
    assert lines[0].startswith("✓ a.value < 1")
    assert "got 1" in lines[1]
    with pytest.raises(ValueError, match=r"expected <diagnostic>\.<fact>"):
        Check.parse("value < 1")


def test_label_templates_are_escaped_for_promql() -> None:
    q = 'up{instance="{labels.instance}"}'
    got = render(q, {"instance": 'x"} or vector(1) #'}, promql_string)
    assert got == 'up{instance="x\\"} or vector(1) #"}'
    assert render({"u": "{labels.unit}"}, {"unit": "a.service"}) == {"u": "a.service"}


def test_example_agent_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHKEEPER_LLM_KEY", "sk-test")
    s = load_config(REPO / "examples" / "agent.yaml")
    assert s.agent.llm is not None
    assert s.agent.concurrency == 8
    used = {
        d.args["command"]
        for rb in SHIPPED.runbooks.values()
        for d in rb.diagnostics
        if d.tool == "shell_diagnostic"
    }
    assert used <= set(s.agent.tools.shell), "every shell diagnostic has an example template"


def test_a_runbook_without_default_action_still_parses() -> None:
    rb = parse_runbook(
        "---\nid: x\nversion: 1\ntitle: X\ntools: [alert_context]\n"
        "diagnostics: [{id: c, tool: alert_context}]\n---\n# X\n"
    )
    assert rb.default_action is None
    assert rb.actions == []


# --- the deterministic path against a real Prometheus ------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[realstack.Prometheus]:
    try:
        with zoo_prometheus(tmp_path_factory.mktemp("prom")) as prom:
            yield prom
    except realstack.Unavailable as e:
        pytest.skip(str(e))


def real_tools(url: str) -> dict[str, Any]:
    example = yaml.safe_load((REPO / "examples" / "agent.yaml").read_text())
    templates = example["agent"]["tools"]["shell"]
    prom = Prometheus(url, 10)
    return {
        "promql_instant": PromQLInstant(prom),
        "promql_range": PromQLRange(prom),
        "shell_diagnostic": ShellDiagnostic(
            {n: ShellTemplateSpec(t["argv"], 5) for n, t in templates.items()}, 4096
        ),
    }


@pytest.mark.integration
@pytest.mark.parametrize("runbook_id", sorted(CASES))
async def test_deterministic_path_on_real_prometheus(
    runbook_id: str, prometheus: realstack.Prometheus, tmp_path: Path
) -> None:
    labels, action, params = CASES[runbook_id]
    async with harness(tmp_path, tools=real_tools(prometheus.url)) as h:
        [iid] = await h.start(await h.fire(labels))
        assert h.entity(iid).runbook_id == runbook_id
        assert h.entity(iid).mode == "deterministic"
        run = await h.investigator().investigate(iid)
        rb = SHIPPED.runbooks[runbook_id]
        facts = run.facts()
        for d in rb.diagnostics:
            r = run.calls[f"d-{d.id}"].result
            assert r is not None, d.id
            if d.tool.startswith("promql"):
                # Every query is valid PromQL against a real server (no 'error' status).
                assert r.status in ("ok", "no_data"), f"{d.id}: {r.summary}"
        if rb.default_action is not None:
            for diag in rb.default_action.when.diagnostics():
                assert facts[diag]["status"] == "ok", f"{diag}: {run.calls['d-' + diag].result}"
        assert run.concluded is not None
        assert run.concluded.concluded_by == "deterministic"
        assert run.escalated is None
        if action is None:
            assert run.proposals == []
            assert "no default action" in run.concluded.summary
        else:
            assert len(run.proposals) == 1, run.concluded.summary
            [p] = run.proposals
            assert (p.action_id, p.params, p.proposed_by) == (action, params, "deterministic")
            assert p.evidence, "a proposal cites the diagnostics its condition read"
            assert f"Default action {action} proposed" in run.concluded.summary
            assert "✓" in p.rationale
            assert "✗" not in p.rationale
        if rb.verify and rb.verify.query:
            query = render(rb.verify.query, labels, promql_string)
            res = await PromQLInstant(Prometheus(prometheus.url, 10)).run(
                PromQLInstant.args(query=query), _ctx(h)
            )
            assert res.status in ("ok", "no_data"), f"verify query: {res.summary}"


def _ctx(h: Any) -> Any:
    from daemon.runbooks.tools import ToolContext

    return ToolContext(
        incident_id=None, runbook_id="", labels={}, world=h.ingestor.world, now=h.clock()
    )


@pytest.mark.parametrize("runbook_id", sorted(CASES))
async def test_deterministic_path_without_evidence_proposes_nothing(
    runbook_id: str, tmp_path: Path
) -> None:
    # A fake tool layer where every query finds nothing: no evidence, no action.
    labels, _, _ = CASES[runbook_id]
    tools = {
        "promql_instant": CannedPromQL("promql_instant"),
        "promql_range": CannedPromQL("promql_range"),
    }
    async with harness(tmp_path, tools=tools) as h:
        [iid] = await h.start(await h.fire(labels))
        run = await h.investigator().investigate(iid)
        assert run.concluded is not None
        assert run.proposals == []
        rb = SHIPPED.runbooks[runbook_id]
        if rb.default_action is not None:
            assert (
                f"Default action {rb.default_action.action} not proposed" in run.concluded.summary
            )
            assert "✗" in run.concluded.summary
            assert "no data" in run.concluded.summary


async def test_deterministic_path_with_healthy_values_and_missing_labels(tmp_path: Path) -> None:
    healthy = {
        "node_filesystem_avail_bytes": {"value": 0.6, "count": 1},
        "node_filesystem_readonly": {"value": 0, "count": 1},
    }
    tools = {
        "promql_instant": CannedPromQL("promql_instant", healthy),
        "promql_range": CannedPromQL("promql_range"),
    }
    async with harness(tmp_path, tools=tools) as h:
        labels = dict(CASES["disk-filling"][0])
        [iid] = await h.start(await h.fire(labels))
        run = await h.investigator().investigate(iid)
        assert run.proposals == []
        assert run.concluded is not None
        assert "✗ free_ratio.value < 0.1 (got 0.6)" in run.concluded.summary
        # Without a mountpoint label the queries cannot be built: they are not run at all.
        labels = {k: v for k, v in labels.items() if k != "mountpoint"} | {"instance": "db1:9100"}
        [iid2] = await h.start(await h.fire(labels))
        run2 = await h.investigator().investigate(iid2)
        r = run2.calls["d-free_ratio"].result
        assert r is not None
        assert r.status == "no_data"
        assert "needs label 'mountpoint'" in r.summary
        assert run2.proposals == []
        assert all("mountpoint" not in q for q in tools["promql_instant"].queries if "db1" in q)


async def test_default_action_with_a_label_failing_its_schema_is_refused(tmp_path: Path) -> None:
    tools = {
        "promql_instant": CannedPromQL(
            "promql_instant",
            {
                "node_systemd_unit_state": {"value": 1, "count": 1},
                'state="active"': {"value": 0, "count": 1},
                "count by": {"value": 1, "count": 1},
            },
        ),
        "promql_range": CannedPromQL("promql_range"),
    }
    tools["promql_instant"].answers = {
        'state="active"': {"value": 0, "count": 1},
        'state="failed"}': {"value": 1, "count": 1},
        "count by": {"value": 1, "count": 1},
    }
    async with harness(tmp_path, tools=tools) as h:
        labels = {**CASES["systemd-service-down"][0], "name": "nginx; rm -rf /"}
        [iid] = await h.start(await h.fire(labels))
        run = await h.investigator().investigate(iid)
        assert run.proposals == []
        assert run.concluded is not None
        assert "could not be proposed" in run.concluded.summary
        assert "does not match" in run.concluded.summary
