"""The small holes of issue 17's Low list, each a table or a request."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from test_api import running

from daemon.actions.executor import PlanError
from daemon.config.settings import ConfigError, load_config
from daemon.domain.durations import parse_duration
from daemon.domain.investigation_decide import params_problems
from daemon.engine.store import EventLog
from daemon.runbooks.runbook import HttpAction, ShellAction
from handlers.actions.http import HttpExecutor
from handlers.actions.shell import ShellExecutor
from handlers.tools.http_probe import UrlAllowlist

ANY: dict[str, Any] = {"type": "object"}


def shell(*argv: str) -> ShellAction:
    return ShellAction(id="fix", kind="shell", risk="low", argv=list(argv), params=ANY)


@pytest.mark.parametrize(
    ("argv", "params", "refusal"),
    [
        (["/bin/echo", "{params.x}@prod"], {"x": "--force"}, "would start with '-'"),
        (["/bin/echo", "{params.x}"], {"x": "-rf"}, "would be read as an option"),
        (["/bin/echo", "/var/log/{params.x}"], {"x": "../../etc/shadow"}, "'..' path segment"),
        (["/bin/echo", "/var/log/{params.x}"], {"x": "nginx/../../../etc"}, "'..' path segment"),
        (["/bin/echo", "{params.x}"], {"x": ".."}, "'..' path segment"),
    ],
)
def test_the_shell_executor_refuses_options_and_climbing_in_any_element(
    argv: list[str], params: dict[str, Any], refusal: str
) -> None:
    ex = ShellExecutor(["/bin/echo"], timeout=10, output_bytes=100)
    with pytest.raises(PlanError, match=re.escape(refusal)):
        ex.plan(shell(*argv), params)


def test_the_shell_executor_still_fills_plain_values() -> None:
    ex = ShellExecutor(["/bin/echo"], timeout=10, output_bytes=100)
    plan = ex.plan(
        shell("/bin/echo", "{params.x}@prod", "/var/log/{params.f}", "-n"),
        {"x": "db1", "f": "nginx/access.log"},
    )
    assert plan.spec["argv"] == ["/bin/echo", "db1@prod", "/var/log/nginx/access.log", "-n"]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://svc.example/health/ok", True),
        ("https://svc.example/health/../admin/delete", False),
        ("https://svc.example/health/%2e%2e/admin/delete", False),
        ("https://svc.example/health/./x", False),
        ("https://svc.example/health/..%2fadmin", False),
    ],
)
def test_url_allowlists_refuse_dot_segments(url: str, allowed: bool) -> None:
    assert UrlAllowlist(["https://svc.example/health/*"]).allows(url) is allowed


def test_http_actions_refuse_dot_segments_from_parameters() -> None:
    ex = HttpExecutor(["deploy.example.internal"], timeout=10)
    action = HttpAction(
        id="x",
        kind="http",
        risk="low",
        url="http://deploy.example.internal/api/apps/{params.app}/restart",
        params=ANY,
    )
    assert ex.plan(action, {"app": "web"})
    with pytest.raises(PlanError, match=re.escape("'..' segment")):
        ex.plan(action, {"app": ".."})


@pytest.mark.parametrize(
    ("pattern", "value", "ok"),
    [
        ("^[a-z]+$", "nginx", True),
        ("^[a-z]+$", "nginx\n", False),
        ("^[a-z]+$", "nginx\n--force", False),
        ("^(?!-)[a-z-]+$", "ab\n", False),  # lookahead: RE2 cannot, Python's engine does
        ("^(?!-)[a-z-]+$", "ab", True),
        ("[0-9]", "a1\n", True),  # no `$`: a search, as JSON Schema says
    ],
)
def test_parameter_patterns_anchor_dollar_at_the_very_end(
    pattern: str, value: str, ok: bool
) -> None:
    schema = {"type": "object", "properties": {"p": {"type": "string", "pattern": pattern}}}
    assert (params_problems(schema, {"p": value}) == []) is ok


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["99999999999h", "1e300", 1e300, float("inf")])
def test_absurd_durations_are_value_errors(text: Any) -> None:
    with pytest.raises(ValueError, match=r"longer than 100 years|expected a duration"):
        parse_duration(text)


async def test_a_silence_of_99999999999h_is_a_422(tmp_path: Path) -> None:
    async with running(tmp_path) as d:
        for body in (
            {"matchers": ['alertname="X"'], "duration": "99999999999h"},
            {"matchers": ['alertname="X"'], "startsAt": "9999-12-31T00:00:00Z", "duration": "2d"},
        ):
            r = await d.http.post("/api/v1/silences", json=body)
            assert r.status_code == 422, r.text


# --- tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["x", "env:SHORT_TOKEN", "1234567"])
def test_short_tokens_are_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    monkeypatch.setenv("SHORT_TOKEN", "ab")
    path = tmp_path / "watchkeeper.yaml"
    path.write_text(
        f"store: {tmp_path}/e.db\nauth:\n  tokens:\n"
        f"    - {{name: ops, role: admin, token: '{token}'}}\n  ingest_token: 'k'\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    text = "\n".join(refused.value.problems)
    assert "auth.tokens[0].token:" in text
    assert "a token needs at least 8" in text
    assert "auth.ingest_token:" in text
    path.write_text(
        f"store: {tmp_path}/e.db\nauth:\n  tokens:\n"
        "    - {name: ops, role: admin, token: tok-admin}\n"
    )
    assert load_config(path).auth.tokens[0].token == "tok-admin"


# --- the store file -------------------------------------------------------------------------


def test_a_new_sqlite_store_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        log = EventLog(f"sqlite:///{tmp_path}/store/events.db")
        log.append([], None)
        log.close()
    finally:
        os.umask(old)
    made = sorted((tmp_path / "store").iterdir())
    assert made
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


async def test_huge_or_odd_log_positions_are_4xx(tmp_path: Path) -> None:
    # events?after=1e20 was a 500 (an SQLite integer overflow).
    async with running(tmp_path) as d:
        for after in ("1e20", "100000000000000000000", "-5", "x"):
            r = await d.http.get("/api/v1/events", params={"after": after})
            assert r.status_code < 500, (after, r.text)
        r = await d.http.get("/api/v1/events", params={"after": "100000000000000000000"})
        assert 400 <= r.status_code < 500, r.text


async def test_the_pattern_cap_and_go_flags_hold_on_every_matcher_intake(tmp_path: Path) -> None:
    long = "x" * 1025
    async with running(tmp_path) as d:
        r = await d.http.post("/api/v1/silences", json={"matchers": [f'a=~"{long}"']})
        assert r.status_code in (400, 422), r.text
        silence = {
            "matchers": [{"name": "a", "value": long, "isRegex": True}],
            "startsAt": "2026-11-28T23:27:06Z", "endsAt": "2026-11-29T01:00:00Z",
        }
        r = await d.http.post("/api/v2/silences", json=silence)
        assert r.status_code == 400, r.text
        assert "1024" in r.text
        r = await d.http.get("/api/v2/alerts", params={"filter": f'a=~"{long}"'})
        assert r.status_code == 400, r.text
        r = await d.http.get("/api/v2/silences", params={"filter": f'a=~"{long}"'})
        assert r.status_code == 400, r.text
        # Go's (?i) is accepted everywhere a regex is.
        silence["matchers"] = [{"name": "a", "value": "(?i)disk.*", "isRegex": True}]
        r = await d.http.post("/api/v2/silences", json=silence)
        assert r.status_code == 200, r.text
        r = await d.http.post(
            "/api/v1/silences", json={"matchers": ['a=~"(?i)disk.*"'], "duration": "1h"}
        )
        assert r.status_code == 200, r.text
        r = await d.http.get("/api/v2/alerts", params={"filter": 'a=~"(?i)x"'})
        assert r.status_code == 200, r.text
