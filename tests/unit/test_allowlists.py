"""`config check` finds runbook actions the `actions:` allowlists would refuse, with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.actions.allowlists import refusals
from daemon.cli.main import app
from daemon.config.actions import ActionsConfig
from daemon.runbooks.runbook import load_runbooks

SHIPPED = load_runbooks()


def _by_action(cfg: dict[str, object]) -> dict[str, str]:
    found = refusals(SHIPPED, ActionsConfig.model_validate(cfg))
    return {f"{r.runbook}/{r.action}": r.line() for r in found}


@pytest.mark.parametrize(
    ("cfg", "action", "expected"),
    [
        ({}, "disk-filling/vacuum_journal",
         'runbook disk-filling action vacuum_journal: /usr/bin/journalctl is not in '
         'actions.shell.allow; add "/usr/bin/journalctl" to actions.shell.allow'),
        ({}, "systemd-service-down/reset_failed",
         "operation reset-failed is not in actions.systemd.operations"),
        ({}, "tls-cert-expiring/renew_certificates",
         'add "certbot.service" to actions.systemd.units'),
        ({}, "http-endpoint-down/rollback_deploy",
         'add "deploy.internal.example" to actions.http.allow_hosts'),
        ({}, "generic-triage/silence_alert", "add actions.alertmanager.url"),
    ],
)
def test_refused_actions_name_the_setting_to_add(
    cfg: dict[str, object], action: str, expected: str
) -> None:
    assert expected in _by_action(cfg)[action]


def test_allowed_actions_are_not_reported() -> None:
    found = _by_action({
        "shell": {"allow": ["/usr/bin/journalctl", "/usr/bin/apt-get"]},
        "systemd": {"units": ["*.service"],
                    "operations": ["start", "stop", "restart", "reload", "reset-failed"]},
        "http": {"allow_hosts": ["*.internal.example"]},
        "alertmanager": {"url": "http://127.0.0.1:9093"},
    })
    assert found == {}, found


def test_config_check_warns_and_strict_fails(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("actions:\n  shell: {allow: [/usr/bin/apt-get]}\n")
    runner = CliRunner()
    loose = runner.invoke(app, ["config", "check", str(cfg)])
    assert loose.exit_code == 0, loose.output
    assert "warning: runbook disk-filling action vacuum_journal" in loose.output
    assert "clean_package_cache" not in loose.output
    strict = runner.invoke(app, ["config", "check", "--strict", str(cfg)])
    assert strict.exit_code == 1
    assert "error: runbook disk-filling action vacuum_journal" in strict.output
    off = tmp_path / "off.yaml"
    off.write_text("agent: {enabled: false}\n")
    assert runner.invoke(app, ["config", "check", "--strict", str(off)]).exit_code == 0


def test_runbooks_list_with_none_found_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["runbooks", "list", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no runbooks (*.md) found in" in result.output
    assert CliRunner().invoke(app, ["runbooks", "list", "--json"]).exit_code == 0
