"""Each executor, for real: shell runs processes, http and webhook reach a local server,
systemd runs systemctl (the real one, and a stand-in that records its argv, since this
machine has no systemd as PID 1), alertmanager_silence creates a silence in a REAL
Alertmanager. Plans are checked for exactly what would run and for what is refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import realstack

from daemon.actions.executor import PlanError
from daemon.config.actions import SystemdConfig
from daemon.runbooks.runbook import (
    HttpAction,
    ShellAction,
    SilenceAction,
    SystemdAction,
    WebhookAction,
)
from handlers.actions.alertmanager import AlertmanagerSilencer
from handlers.actions.http import HttpExecutor, WebhookRunner
from handlers.actions.shell import ShellExecutor
from handlers.actions.systemd import SystemdExecutor

REPO = Path(__file__).resolve().parents[2]
ANY_PARAMS: dict[str, Any] = {"type": "object"}


def shell_action(argv: list[str], timeout: str = "30s") -> ShellAction:
    return ShellAction(
        id="fix", kind="shell", risk="low", argv=argv, timeout=timeout, params=ANY_PARAMS
    )


@pytest.fixture
def script(tmp_path: Path) -> Path:
    """A program that appends its argument count, its arguments and the key to a file."""
    path = tmp_path / "fix.sh"
    path.write_text(
        "#!/bin/sh\n"
        f'printf "%s|" "$#" "$@" >> {tmp_path}/ran.txt\n'
        f'echo "$WATCHKEEPER_IDEMPOTENCY_KEY" >> {tmp_path}/ran.txt\n'
        'echo "done with $1"\n'
    )
    path.chmod(0o755)
    return path


# --- shell ---------------------------------------------------------------------------------


async def test_shell_runs_the_argv_once_with_each_value_as_one_argument(
    script: Path, tmp_path: Path
) -> None:
    ex = ShellExecutor([str(script)], timeout=60, output_bytes=1024)
    action = shell_action([str(script), "--unit={params.unit}", "{params.host}"])
    evil = "web1; rm -rf / && echo $(id)"
    plan = ex.plan(action, {"unit": "nginx.service", "host": evil})
    assert plan.spec["argv"] == [str(script), "--unit=nginx.service", evil]
    assert plan.targets == ("nginx.service", evil)
    outcome = await ex.execute(plan, "key-1")
    assert outcome.outcome == "succeeded", outcome.detail
    assert outcome.detail == "exited 0: done with --unit=nginx.service"
    ran = (tmp_path / "ran.txt").read_text().splitlines()
    # Two arguments exactly: the metacharacters never reached a shell.
    assert ran == [f"2|--unit=nginx.service|{evil}|key-1"]


@pytest.mark.parametrize(
    ("argv", "params", "problem"),
    [
        (
            ["/bin/rm", "-rf", "{params.path}"],
            {"path": "x"},
            "/bin/rm is not in actions.shell.allow",
        ),
        (["{params.prog}", "x"], {"prog": "/bin/sh"}, "argv[0] must be a fixed program"),
        (["SCRIPT", "{params.flag}"], {"flag": "--force"}, "would be read as an option"),
        (["SCRIPT", "{params.x}"], {}, "needs params.x, which was not given"),
        (["SCRIPT", "{params.x}"], {"x": "a\nb"}, "params.x contains control characters"),
        (["SCRIPT", "{params.x}"], {"x": {"a": 1}}, "params.x must be a string or number"),
        (["no-such-program-here"], {}, "no-such-program-here is not on PATH"),
    ],
)
def test_shell_plan_refusals(
    script: Path, argv: list[str], params: dict[str, Any], problem: str
) -> None:
    ex = ShellExecutor([str(script)], timeout=60, output_bytes=1024)
    argv = [str(script) if a == "SCRIPT" else a for a in argv]
    with pytest.raises(PlanError, match=re.escape(problem)):
        ex.plan(shell_action(argv), params)


async def test_shell_list_params_become_one_argument_and_one_target_each(
    script: Path, tmp_path: Path
) -> None:
    ex = ShellExecutor([str(script)], timeout=60, output_bytes=1024)
    plan = ex.plan(shell_action([str(script), "{params.hosts}"]), {"hosts": ["a", "b", "c"]})
    assert plan.spec["argv"] == [str(script), "a", "b", "c"]
    assert plan.targets == ("a", "b", "c")


async def test_shell_failure_timeout_and_output_cap(tmp_path: Path) -> None:
    sh = "/bin/sh"
    ex = ShellExecutor([sh], timeout=60, output_bytes=300)
    failing = ex.plan(shell_action([sh, "-c", "echo broken >&2; exit 3"]), {})
    outcome = await ex.execute(failing, "k")
    assert (outcome.outcome, outcome.detail) == ("failed", "exited 3: broken")

    chatty = ex.plan(shell_action([sh, "-c", "yes line | head -n 10000"]), {})
    outcome = await ex.execute(chatty, "k")
    assert outcome.outcome == "succeeded"
    assert outcome.output.endswith("[output truncated]")
    assert len(outcome.output) < 400

    marker = tmp_path / "still-running"
    slow = ex.plan(shell_action([sh, "-c", f"sleep 1; sleep 30; touch {marker}"], timeout="1s"), {})
    outcome = await ex.execute(slow, "k")
    assert outcome.outcome == "unknown"
    assert outcome.detail.startswith("timed out after 1s and was killed")
    assert not marker.exists()


def test_shell_dry_run_through_the_cli_shows_the_argv(tmp_path: Path, script: Path) -> None:
    from typer.testing import CliRunner

    from daemon.cli.main import app

    rb = tmp_path / "rb"
    rb.mkdir()
    (rb / "app.md").write_text(
        "---\nid: app\nversion: 1\ntitle: App\ntools: [alert_context]\nactions:\n"
        f"  - id: fix\n    kind: shell\n    argv: [{script}, '{{params.svc}}']\n    risk: low\n"
        "    params: {type: object, properties: {svc: {type: string}}, required: [svc]}\n---\n"
    )
    cfg = tmp_path / "wk.yaml"
    cfg.write_text(f"agent: {{runbooks_dir: {rb}}}\nactions: {{shell: {{allow: [{script}]}}}}\n")
    result = CliRunner().invoke(
        app, ["--json", "actions", "dry-run", "app", "fix", "-p", "svc=web; id", "-c", str(cfg)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["plan"]["spec"]["argv"] == [str(script), "web; id"]
    assert data["policy"]["outcome"] == "approve"
    refused = CliRunner().invoke(app, ["actions", "dry-run", "app", "fix", "-c", str(cfg)])
    assert refused.exit_code == 1
    assert "params for fix are invalid" in refused.output
    assert not (tmp_path / "ran.txt").exists()


# --- http and webhook ------------------------------------------------------------------------


class Recorder:
    """A local HTTP server that records requests and answers with a scripted status."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        rec = self

        class _H(BaseHTTPRequestHandler):
            def _any(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                rec.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(n),
                    }
                )
                body = b'{"execution": 42}'
                self.send_response(rec.status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_GET = _any  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


async def test_http_sends_typed_json_with_an_idempotency_key(recorder: Recorder) -> None:
    ex = HttpExecutor([recorder.host], timeout=10)
    action = HttpAction(
        id="scale",
        kind="http",
        risk="medium",
        method="PUT",
        url=f"http://{recorder.host}/apps/{{params.app}}/replicas",
        body={"replicas": "{params.n}", "note": "scale {params.app} to {params.n}"},
        params=ANY_PARAMS,
    )
    plan = ex.plan(action, {"app": "api/v2", "n": 4})
    assert plan.spec["url"] == f"http://{recorder.host}/apps/api%2Fv2/replicas"
    assert plan.spec["body"] == {"replicas": 4, "note": "scale api/v2 to 4"}
    outcome = await ex.execute(plan, "key-7")
    assert (outcome.outcome, outcome.detail) == ("succeeded", "HTTP 200")
    [req] = recorder.requests
    assert (req["method"], req["path"]) == ("PUT", "/apps/api%2Fv2/replicas")
    assert json.loads(req["body"]) == {"replicas": 4, "note": "scale api/v2 to 4"}
    assert req["headers"]["Idempotency-Key"] == "key-7"
    recorder.status = 503
    outcome = await ex.execute(plan, "key-8")
    assert outcome.outcome == "failed"
    assert outcome.detail.startswith("HTTP 503")


def test_http_refuses_hosts_outside_the_allowlist(recorder: Recorder) -> None:
    ex = HttpExecutor(["deploy.example.internal"], timeout=10)
    action = HttpAction(
        id="x", kind="http", risk="low", url="http://{params.host}/x", params=ANY_PARAMS
    )
    with pytest.raises(PlanError, match=re.escape("is not in actions.http.allow_hosts")):
        ex.plan(action, {"host": "127.0.0.1:9"})
    # A value is quoted: it cannot add credentials, a port or a path to the URL.
    with pytest.raises(
        PlanError, match=re.escape("host u%3Ap%40deploy.example.internal is not in")
    ):
        ex.plan(action, {"host": "u:p@deploy.example.internal"})
    with_creds = action.model_copy(update={"url": "http://u:p@deploy.example.internal/x"})
    with pytest.raises(PlanError, match="credentials in the URL are refused"):
        ex.plan(with_creds, {})


async def test_webhook_hands_the_action_over_signed(recorder: Recorder) -> None:
    ex = WebhookRunner([recorder.host], timeout=10, secret="s3cret")
    action = WebhookAction(
        id="runbook_job",
        kind="webhook",
        risk="medium",
        url=f"http://{recorder.host}/api/v1/execution",
        payload={"job": "restart-consumer", "group": "{params.group}", "count": "{params.n}"},
        params=ANY_PARAMS,
    )
    plan = ex.plan(action, {"group": "billing", "n": 2})
    outcome = await ex.execute(plan, "key-9")
    assert outcome.outcome == "succeeded"
    assert outcome.output == '{"execution": 42}'
    [req] = recorder.requests
    doc = json.loads(req["body"])
    assert doc == {
        "action": "runbook_job",
        "idempotency_key": "key-9",
        "payload": {"job": "restart-consumer", "group": "billing", "count": 2},
    }
    mac = hmac.new(b"s3cret", req["body"], hashlib.sha256).hexdigest()
    assert req["headers"]["X-Watchkeeper-Signature"] == f"sha256={mac}"


# --- systemd -------------------------------------------------------------------------------


def systemd_action(unit: str = "{params.unit}", op: str = "restart") -> SystemdAction:
    return SystemdAction(
        id="restart_service",
        kind="systemd",
        risk="medium",
        unit=unit,
        operation=op,  # type: ignore[arg-type]
        params=ANY_PARAMS,
    )


async def test_systemd_runs_systemctl_for_allowlisted_units(tmp_path: Path) -> None:
    fake = tmp_path / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.log\n')
    fake.chmod(0o755)
    ex = SystemdExecutor(["nginx.service", "myapp@*.service"], ["restart"], str(fake))
    plan = ex.plan(systemd_action(), {"unit": "myapp@blue.service"})
    assert plan.summary == "systemctl restart myapp@blue.service"
    assert plan.spec["argv"] == [
        str(fake),
        "--no-ask-password",
        "restart",
        "--",
        "myapp@blue.service",
    ]
    assert (plan.targets, plan.verb) == (("myapp@blue.service",), "restart")
    outcome = await ex.execute(plan, "k")
    assert outcome.outcome == "succeeded", outcome.detail
    assert (
        tmp_path / "systemctl.log"
    ).read_text() == "--no-ask-password restart -- myapp@blue.service\n"
    with pytest.raises(PlanError, match=re.escape("ssh.service is not in actions.systemd.units")):
        ex.plan(systemd_action(), {"unit": "ssh.service"})
    with pytest.raises(
        PlanError, match=re.escape("operation stop is not in actions.systemd.operations")
    ):
        ex.plan(systemd_action(op="stop"), {"unit": "nginx.service"})
    with pytest.raises(PlanError, match="is not a unit name"):
        ex.plan(systemd_action(), {"unit": "nginx.service --now"})
    # A glob is planned so that policy refuses it as a wildcard, with its reason …
    wild = ex.plan(systemd_action(), {"unit": "myapp@*.service"})
    assert wild.targets == ("myapp@*.service",)
    # … and the executor never hands a glob to systemctl.
    assert (await ex.execute(wild, "k")).outcome == "failed"


async def test_systemd_with_the_real_systemctl_reports_its_failure() -> None:
    real = "/usr/bin/systemctl"
    if not os.path.exists(real):  # noqa: ASYNC240 - a one-off check before the test
        pytest.skip("no /usr/bin/systemctl on this machine")
    ex = SystemdExecutor(["nginx.service"], ["restart"], real, timeout=30)
    outcome = await ex.execute(ex.plan(systemd_action(), {"unit": "nginx.service"}), "k")
    # No systemd as PID 1 here (a container): systemctl says so and exits non-zero.
    assert outcome.outcome == "failed"
    assert outcome.detail.startswith("exited 1")


def test_the_polkit_rule_allows_the_same_verbs_as_the_executor() -> None:
    rule = (REPO / "systemd" / "50-watchkeeper.rules").read_text()
    verbs = re.search(r"var allowedVerbs = \[([^\]]*)\]", rule)
    assert verbs is not None
    allowed = set(re.findall(r'"([a-z-]+)"', verbs.group(1)))
    assert allowed == set(SystemdConfig().operations)
    assert 'action.id !== "org.freedesktop.systemd1.manage-units"' in rule
    assert 'subject.user !== "watchkeeper"' in rule


# --- alertmanager_silence ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[realstack.Alertmanager]:
    config = {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}
    try:
        am = realstack.start_alertmanager(tmp_path_factory.mktemp("am"), config)
    except realstack.Unavailable as e:
        pytest.skip(str(e))
    yield am
    am.child.stop()


@pytest.mark.integration
async def test_alertmanager_silence_is_created_once_in_a_real_alertmanager(
    alertmanager: realstack.Alertmanager,
) -> None:
    ex = AlertmanagerSilencer(alertmanager.url, timeout=10)
    action = SilenceAction(
        id="silence_alert",
        kind="alertmanager_silence",
        risk="low",
        matchers=['alertname="{params.alertname}"', 'instance="{params.instance}"'],
        duration="{params.duration}",
        comment="accepted by on-call after triage",
        params=ANY_PARAMS,
    )
    params = {"alertname": "HostHighCpuLoad", "instance": "web1:9100", "duration": "2h"}
    plan = ex.plan(action, params)
    assert plan.targets == ('alertname="HostHighCpuLoad"', 'instance="web1:9100"')
    first = await ex.execute(plan, "act-1:dispatch")
    assert first.outcome == "succeeded", first.detail
    again = await ex.execute(plan, "act-1:dispatch")
    assert again.detail.endswith("already exists for this action")
    async with httpx.AsyncClient(timeout=10) as c:
        silences = (await c.get(f"{alertmanager.url}/api/v2/silences")).json()
    mine = [s for s in silences if "[watchkeeper act-1:dispatch]" in s["comment"]]
    assert len(mine) == 1
    s = mine[0]
    assert s["status"]["state"] == "active"
    assert s["createdBy"] == "watchkeeper"
    assert sorted((m["name"], m["value"], m["isRegex"]) for m in s["matchers"]) == [
        ("alertname", "HostHighCpuLoad", False),
        ("instance", "web1:9100", False),
    ]
    with pytest.raises(PlanError, match=re.escape("outside 0..1d")):
        ex.plan(action, {**params, "duration": "3d"})
    with pytest.raises(PlanError, match="quotes and backslashes are refused"):
        ex.plan(action, {**params, "instance": 'x", alertname=~".*'})
    everything = SilenceAction(
        id="all",
        kind="alertmanager_silence",
        risk="low",
        matchers=['alertname=~"{params.re}"'],
        params=ANY_PARAMS,
    )
    with pytest.raises(PlanError, match="would match every alert"):
        ex.plan(everything, {"re": ".*"})


async def test_a_command_cut_at_the_output_cap_ends_at_once_however_much_it_wrote() -> None:
    # The cap stops reading; the pipe then still held what the command wrote, and Python's
    # Process.wait() returns only at stdout's EOF: without draining, wait() sat out the
    # whole timeout (seen as a flaky "timed out after 20s" for `yes` on a loaded machine).
    import time

    from handlers.actions.process import run_argv

    argv = ["/usr/bin/yes"]
    for _ in range(40):
        started = time.monotonic()
        out = await run_argv(argv, 30, 500, {}, drain=False)
        assert out.outcome == "failed", out.detail  # killed at the cap, not timed out
        assert time.monotonic() - started < 10
