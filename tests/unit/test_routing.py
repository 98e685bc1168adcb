"""Routing incidents to runbooks: tables over the pure route tree."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from daemon.config.agent import AgentConfig
from daemon.domain.matchers import Matcher
from daemon.domain.routing import Route, RouteTree, route, with_runbook_matches

TREE = RouteTree.model_validate(
    yaml.safe_load(
        """
routes:
  - match: ['team="payments"']
    routes:
      - match: ['alertname=~"Kafka.*"']
        runbook: kafka-consumer-lag
      - match: ['severity="critical"']
        runbook: payments-critical
        continue: true
      - match: ['severity=~"critical|warning"']
        runbook: payments-triage
  - match: ['alertname="DiskFull"']
    runbook: disk-filling
    continue: true
  - match: ['alertname="DiskFull"', 'instance!~"db.*"']
    runbook: generic-triage
  - match: ['alertname="DiskFull"']
    runbook: never-reached
  - match: {alertname: Maintenance}
default: generic-triage
"""
    )
)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        # First match wins among siblings.
        ({"team": "payments", "alertname": "KafkaLag"}, ("kafka-consumer-lag",)),
        # continue: true lets later siblings match too.
        (
            {"team": "payments", "alertname": "X", "severity": "critical"},
            ("payments-critical", "payments-triage"),
        ),
        ({"team": "payments", "alertname": "X", "severity": "warning"}, ("payments-triage",)),
        # A matching parent with no matching child and no runbook of its own: the default.
        ({"team": "payments", "alertname": "X", "severity": "info"}, ("generic-triage",)),
        # continue at the top level; the second route stops the walk (never-reached).
        ({"alertname": "DiskFull", "instance": "web1"}, ("disk-filling", "generic-triage")),
        # != / !~ exclude; after disk-filling (continue) the third route matches.
        ({"alertname": "DiskFull", "instance": "db1"}, ("disk-filling", "never-reached")),
        # Nothing matches: the default runbook.
        ({"alertname": "Other"}, ("generic-triage",)),
        ({}, ("generic-triage",)),
        # A matching route without a runbook also falls back to the default.
        ({"alertname": "Maintenance"}, ("generic-triage",)),
    ],
)
def test_route_table(labels: dict[str, str], expected: tuple[str, ...]) -> None:
    assert route(TREE, labels) == expected


@pytest.mark.parametrize(
    ("configured", "labels", "expected"),
    [
        # Runbooks' own matchers come after configured routes and act as first-match routes.
        ([], {"alertname": "HostOutOfDiskSpace"}, ("disk-filling",)),
        ([], {"alertname": "KafkaConsumerLag"}, ("kafka-consumer-lag",)),
        ([], {"alertname": "Nope"}, ("generic-triage",)),
        # An operator's route overrides what a runbook claims.
        (
            [{"match": ['alertname="HostOutOfDiskSpace"'], "runbook": "custom-disk"}],
            {"alertname": "HostOutOfDiskSpace"},
            ("custom-disk",),
        ),
        (
            [
                {
                    "match": ['alertname="HostOutOfDiskSpace"'],
                    "runbook": "custom-disk",
                    "continue": True,
                }
            ],
            {"alertname": "HostOutOfDiskSpace"},
            ("custom-disk", "disk-filling"),
        ),
    ],
)
def test_runbook_matchers_follow_configured_routes(
    configured: list[dict[str, Any]], labels: dict[str, str], expected: tuple[str, ...]
) -> None:
    from daemon.runbooks.runbook import load_runbooks

    lib = load_runbooks()
    cfg = AgentConfig.model_validate({"routes": configured})
    tree = with_runbook_matches(cfg.tree(), {rid: rb.match for rid, rb in lib.runbooks.items()})
    assert route(tree, labels) == expected


@pytest.mark.parametrize(
    ("raw", "matchers"),
    [
        ('alertname="X"', [Matcher(name="alertname", op="=", value="X")]),
        (
            ["a!=b", 'c=~"d.*"', "e!~f"],
            [
                Matcher(name="a", op="!=", value="b"),
                Matcher(name="c", op="=~", value="d.*"),
                Matcher(name="e", op="!~", value="f"),
            ],
        ),
        ({"severity": "critical"}, [Matcher(name="severity", op="=", value="critical")]),
    ],
)
def test_matcher_forms(raw: Any, matchers: list[Matcher]) -> None:
    assert list(Route.model_validate({"match": raw, "runbook": "r"}).match) == matchers


def test_bad_routes_are_config_errors() -> None:
    with pytest.raises(ValidationError, match="bad matcher"):
        Route.model_validate({"match": ["not a matcher"], "runbook": "r"})
    with pytest.raises(ValidationError, match="invalid regular expression"):
        Route.model_validate({"match": ['a=~"("'], "runbook": "r"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        Route.model_validate({"match": [], "runbok": "r"})


def test_agent_config_errors_name_their_path(tmp_path: Any) -> None:
    from daemon.config.settings import ConfigError, load_config

    f = tmp_path / "bad.yaml"
    f.write_text(
        "agent:\n  concurrency: 0\n  llm: {base_url: 'ftp://x', model: m}\n"
        "  tools:\n    http_probe_allow: ['not a url']\n    shell:\n      bad: {argv: ['{prog}']}\n"
        "  routes:\n    - match: ['???']\n      runbook: x\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert sorted(p.split(":")[0] for p in e.value.problems) == [
        "agent.concurrency",
        "agent.llm.base_url",
        "agent.routes[0].match",
        "agent.tools.http_probe_allow",
        "agent.tools.shell.bad.argv",
    ]


def test_defaults_keep_existing_configs_valid() -> None:
    cfg = AgentConfig()
    assert cfg.llm is None
    assert cfg.concurrency == 8
    assert cfg.default_runbook == "generic-triage"
