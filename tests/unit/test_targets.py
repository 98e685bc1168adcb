"""Targets, inventory and the host router: pure rules and parsing, as tables."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from daemon.actions.hosts import HostRouter, TargetError, remote_command
from daemon.config.inventory import (
    Inventory,
    InventoryError,
    InventoryHost,
    parse_inventory,
)
from daemon.config.settings import Settings
from daemon.domain import registry
from daemon.domain.action_model import ActionPlan
from daemon.domain.investigation_model import ActionProposed
from daemon.domain.policy import Dispatch, PolicyRules, Proposal, RateLimit, rate_limited
from daemon.domain.targets import TargetRules, derive_target, strip_port

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)
RULES = TargetRules()


@pytest.mark.parametrize(
    ("labels", "template", "target", "source"),
    [
        ({"instance": "web-3:9100"}, None, "web-3", "label instance=web-3:9100"),
        ({"instance": "10.0.0.7:9100", "host": "db-7"}, None, "10.0.0.7", "label instance"),
        ({"instance": "[::1]:9100"}, None, "::1", "label instance"),
        ({"instance": "::1"}, None, "::1", "label instance"),
        ({"host": "db-7", "hostname": "x"}, None, "db-7", "label host=db-7"),
        ({"nodename": "n1"}, None, "n1", "label nodename=n1"),
        ({"instance": " "}, None, "", "no label names a host"),
        ({}, None, "", "no label names a host"),
        ({"node": "k8s-2", "instance": "web-3:9100"}, "{labels.node}", "k8s-2", "runbook target"),
        ({"instance": "web-3:9100"}, "{labels.node}", "", "needs label 'node'"),
    ],
)
def test_derive_target(
    labels: dict[str, str], template: str | None, target: str, source: str
) -> None:
    got, why = derive_target(labels, RULES, template)
    assert got == target
    assert source in why


def test_target_rules_are_configurable() -> None:
    rules = TargetRules(labels=("node",), strip_port=False)
    assert derive_target({"instance": "a:1", "node": "b:2"}, rules) == ("b:2", "label node=b:2")
    assert strip_port("web-3:9100") == "web-3"
    assert strip_port("web-3") == "web-3"


INVENTORY = """
all:
  vars: {env: dev, team: ops}
  hosts:
    ops-1: {ansible_connection: local}
  children:
    web:
      vars: {env: prod, ansible_user: deploy}
      hosts:
        web[01:03]:
        node-a: {ansible_host: 127.0.0.1, ansible_port: 2222, env: staging, ansible_become: yes}
    db:
      hosts:
        db-7: {ansible_host: 10.0.0.7}
"""


def test_ansible_inventory_hosts_groups_vars_and_ranges() -> None:
    inv = parse_inventory(INVENTORY, "inv.yml")
    assert sorted(inv.hosts) == ["db-7", "node-a", "ops-1", "web01", "web02", "web03"]
    web2 = inv.hosts["web02"]
    assert (web2.address, web2.port, web2.user, web2.connection) == ("web02", 22, "deploy", "ssh")
    assert web2.labels == {"env": "prod", "team": "ops"}  # the child group's vars win
    a = inv.hosts["node-a"]
    assert (a.address, a.port, a.become) == ("127.0.0.1", 2222, True)
    assert a.labels["env"] == "staging"  # host vars win over group vars
    assert inv.hosts["ops-1"].connection == "local"
    assert inv.hosts["db-7"].groups == ("all", "db")
    assert inv.find("10.0.0.7") == inv.hosts["db-7"]  # an instance label may be an address
    assert inv.find("WEB01") == inv.hosts["web01"]
    assert inv.find("web-9") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("all: [1, 2]", "expected a mapping"),
        ("all:\n  hostz: {}", "unknown key(s) hostz"),
        ("all:\n  hosts:\n    a: {ansible_port: many}", "ansible_port must be a number"),
        ("all:\n  hosts:\n    a: {ansible_connection: winrm}", "not supported"),
        ("all:\n  hosts:\n    web[9:1]:", "backwards"),
        ("all: {", "not valid YAML"),
    ],
)
def test_bad_inventories_say_why(text: str, problem: str) -> None:
    with pytest.raises(InventoryError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_inventory(text, "inv.yml")


def test_a_bad_inventory_is_a_config_problem(tmp_path: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "inv.yml"
    bad.write_text("all:\n  hostz: {}\n")
    problems = Settings(inventory={"file": str(bad)}).secrets_problems()  # type: ignore[arg-type]
    assert any(p.startswith("inventory.file: ") and "hostz" in p for p in problems)


class _Reach:
    def __init__(self, name: str, problem: str | None = None) -> None:
        self.name = name
        self._problem = problem

    def problem(self, host: InventoryHost) -> str | None:
        return self._problem

    async def probe(self, host: InventoryHost) -> str | None:
        return self._problem

    async def run(self, *a: object) -> object:
        raise AssertionError("not in these tests")

    async def close(self) -> None:
        return None


def _router(ssh_problem: str | None = None, missing: str = "this_host") -> HostRouter:
    inv = parse_inventory(INVENTORY, "inv.yml")
    transports = {"local": _Reach("local"), "ssh": _Reach("ssh", ssh_problem)}
    return HostRouter(
        "ops-1", frozenset({"localhost"}), inv, transports, missing  # type: ignore[arg-type]
    )


def _plan(kind: str = "systemd") -> ActionPlan:
    argv = ["/usr/bin/systemctl", "--no-ask-password", "restart", "--", "nginx.service"]
    return ActionPlan(
        kind=kind, action_id="restart", summary="systemctl restart nginx.service",
        targets=("nginx.service",), spec={"argv": argv},
    )


def test_router_places_plans_on_their_host_or_says_why_not() -> None:
    r = _router()
    placed = r.place(_plan(), "node-a")
    assert (placed.host, placed.transport) == ("node-a", "ssh")
    assert placed.address == "deploy@127.0.0.1:2222"  # ansible_user from the group's vars
    assert placed.spec["argv"][:2] == ["sudo", "-n"]  # ansible_become
    assert r.place(_plan(), "web01").spec["argv"][0] == "/usr/bin/systemctl"
    here = r.place(_plan(), "localhost")
    assert (here.host, here.transport, here.address) == ("ops-1", "local", "")
    assert r.place(_plan(), "").host == "ops-1"  # no label names a host: this host
    with pytest.raises(TargetError, match="target db-9 is not in the inventory"):
        r.place(_plan(), "db-9")
    with pytest.raises(TargetError, match="no target host"):
        _router(missing="refuse").place(_plan(), "", "no label names a host")
    with pytest.raises(TargetError, match="ssh cannot reach node-a: no key"):
        _router("no key").place(_plan(), "node-a")
    bare = HostRouter("ops-1", frozenset(), Inventory(), {"local": _Reach("local")})  # type: ignore[dict-item]
    with pytest.raises(TargetError, match="db-9 is not this host and no inventory is configured"):
        bare.place(_plan(), "db-9")
    # A URL action only records its target.
    http = r.place(_plan("http"), "db-9")
    assert (http.host, http.transport) == ("db-9", "")


def test_remote_command_quotes_each_argument_and_carries_the_key() -> None:
    argv = ["/usr/local/bin/fix", "a b", "it's", "$(reboot)"]
    line = remote_command(argv, {"WATCHKEEPER_IDEMPOTENCY_KEY": "k"}, 9.2)
    assert shlex.split(line) == [
        "timeout", "-s", "KILL", "10", "env", "--", "WATCHKEEPER_IDEMPOTENCY_KEY=k",
        "/usr/local/bin/fix", "a b", "it's", "$(reboot)",
    ]
    with pytest.raises(TargetError):
        remote_command(["A=b"], {}, 1)


def test_rate_limits_count_per_host() -> None:
    limit = RateLimit(kind="systemd", max=1, per=timedelta(hours=1))
    per_host = RateLimit(kind="systemd", max=2, per=timedelta(hours=1), scope="host")
    rules = PolicyRules(rate_limits=(limit,))
    past = [
        Dispatch(action_id="restart", kind="systemd", target="nginx.service", host="web01",
                 at=NOW - timedelta(minutes=5)),
        Dispatch(action_id="restart", kind="systemd", target="php.service", host="web01",
                 at=NOW - timedelta(minutes=5)),
    ]

    def p(host: str, target: str = "nginx.service") -> Proposal:
        return Proposal(action_id="restart", kind="systemd", risk="low", runbook_id="r",
                        targets=(target,), host=host, verb="restart")

    assert rate_limited(p("web01"), rules, past, NOW) == [
        "rate limit: 1 restart of nginx.service on web01 in the last 1h (at most 1)"
    ]
    assert rate_limited(p("web02"), rules, past, NOW) == []  # another host, its own count
    host_rules = PolicyRules(rate_limits=(per_host,))
    assert rate_limited(p("web01", "redis.service"), host_rules, past, NOW) == [
        "rate limit: 2 restarts on web01 in the last 1h (at most 2 per host)"
    ]
    assert rate_limited(p("web02", "redis.service"), host_rules, past, NOW) == []
    # Blast radius across the fleet: at most 2 different hosts per hour.
    fleet = PolicyRules(rate_limits=(RateLimit(kind="systemd", max=2, per=timedelta(hours=1),
                                               scope="fleet"),))
    two = [*past, past[0].model_copy(update={"host": "web02"})]
    assert rate_limited(p("web01"), fleet, two, NOW) == []  # no new host
    assert rate_limited(p("web03"), fleet, two, NOW) == [
        "blast radius: restarts already touched 2 hosts in the last 1h (at most 2); "
        "web03 would be one more"
    ]
    assert rate_limited(p("web03"), fleet, past, NOW) == []


def test_action_proposed_v1_is_upcast_with_no_target() -> None:
    v1 = {
        "originator_id": str(uuid4()), "originator_version": 3, "timestamp": NOW.isoformat(),
        "proposal_id": str(uuid4()), "incident_id": str(uuid4()), "runbook_id": "r",
        "runbook_version": "1", "action_id": "a", "kind": "shell", "params": {},
        "risk": "low", "rationale": "why", "call_id": "c1", "proposed_by": "agent",
    }
    event = registry.decode("ActionProposed", json.dumps(v1).encode())
    assert isinstance(event, ActionProposed)
    assert event.target == ""
    assert event.target_source == "proposed before targets existed"
    now = ActionProposed.model_validate({**v1, "target": "web-3", "target_source": "label"})
    assert registry.topic_of(now) == "ActionProposed@2"
    again = registry.decode("ActionProposed@2", now.model_dump_json().encode())
    assert isinstance(again, ActionProposed)
    assert again.target == "web-3"


def test_inventory_model_defaults() -> None:
    assert Inventory().find("x") is None


def test_the_shipped_sudoers_rule_allows_exactly_what_a_become_host_is_sent() -> None:
    """systemd/contrib/sudoers.d/watchkeeper: valid for visudo, and its lines match our argv."""
    import shutil
    import subprocess
    from pathlib import Path

    from daemon.runbooks.runbook import SystemdAction
    from handlers.actions.systemd import SystemdExecutor

    path = Path(__file__).resolve().parents[2] / "systemd/contrib/sudoers.d/watchkeeper"
    text = path.read_text()
    visudo = shutil.which("visudo") or "/usr/sbin/visudo"
    if Path(visudo).exists():  # Debian `sudo`, in SYSTEM_PACKAGES
        subprocess.run([visudo, "-cf", str(path)], check=True, capture_output=True)
    ex = SystemdExecutor(["nginx.service"], ["restart", "reload"])
    action = SystemdAction(
        id="restart_nginx", kind="systemd", unit="nginx.service", operation="restart",
        risk="low",
    )
    placed = _router().place(ex.plan(action, {}), "node-a")  # node-a has ansible_become
    sudo, flag, *command = placed.spec["argv"]
    assert (sudo, flag) == ("sudo", "-n")
    assert " ".join(command) + "," in text


def test_the_examples_load() -> None:
    """examples/hosts.yaml validates and examples/inventory.yml parses into its hosts."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2] / "examples"
    data = yaml.safe_load((root / "hosts.yaml").read_text())
    data["inventory"]["file"] = str(root / "inventory.yml")
    settings = Settings(**data)
    inv = settings.inventory.load()
    assert sorted(inv.hosts) == ["db-7", "ops-1", "web-1", "web-2", "web-3", "web-stg-1"]
    assert inv.hosts["web-2"].become
    assert inv.hosts["web-2"].labels["env"] == "prod"
    assert settings.targets.rules() == TargetRules()
    assert settings.actions.rules().rate_limits[1].scope == "host"


def test_label_modes_make_a_host_stricter_never_looser() -> None:
    from daemon.config.actions import ActionsConfig

    rules = ActionsConfig.model_validate(
        {
            "mode": "autonomous",
            "label_modes": [
                {"matchers": ['env="prod"'], "mode": "review"},
                {"matchers": ['env="lab"'], "mode": "autonomous"},
            ],
        }
    ).rules()
    assert rules.mode_for("r", {"env": "prod"}) == "review"
    assert rules.mode_for("r", {"env": "staging"}) == "autonomous"
    strict = rules.model_copy(update={"mode": "observe"})
    assert strict.mode_for("r", {"env": "lab"}) == "observe"
    p = Proposal(action_id="a", kind="shell", risk="low", runbook_id="r", targets=("x",),
                 labels={"env": "prod"}, host="web-3")
    from daemon.domain.policy import evaluate

    verdict = evaluate(p, rules, [], NOW)
    assert (verdict.outcome, verdict.mode) == ("approve", "review")
