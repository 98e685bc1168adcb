"""`watchkeeper config check`, environment overrides and secret references."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.cli.main import app
from daemon.config.auth import Authenticator
from daemon.config.settings import ConfigError, load_config

runner = CliRunner()


def write(tmp_path: Path, text: str, name: str = "watchkeeper.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def check(path: Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["config", "check", str(path)])
    return result.exit_code, result.stdout, result.stderr


GOOD = """\
store: sqlite:///{tmp}/events.db
http:
  listen: 127.0.0.1:9898
  max_body_bytes: 65536
  ingest_auth: token
auth:
  tokens:
    - {{name: ops, role: admin, token: literal-secret}}
grouping:
  group_by: [alertname, cluster]
  resolve_timeout: 2m
  reopen_window: 1h
"""


def test_good_file_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.format(tmp=tmp_path))
    code, out, err = check(path)
    assert code == 0, err
    assert f"{path}: OK" in out
    assert "listening on 127.0.0.1:9898" in out
    s = load_config(path)
    assert s.grouping.group_by == ["alertname", "cluster"]
    assert s.grouping.resolve_timeout == timedelta(minutes=2)
    assert s.grouping.policy().reopen_window == timedelta(hours=1)
    assert s.http.ingest_auth == "token"


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "local.yaml"
    code, out, err = check(example)
    assert code == 0, err
    assert "listening on 127.0.0.1:9797" in out


def test_group_by_must_be_a_list(tmp_path: Path) -> None:
    code, out, err = check(write(tmp_path, "grouping:\n  group_by: alertname\n"))
    assert code == 1
    assert "grouping.group_by: expected a list of label names" in err
    assert out == ""


def test_every_error_is_reported_with_its_path(tmp_path: Path) -> None:
    text = """\
store: mysql://db/alerts
http:
  listen: nowhere
  max_body_bytes: 0
grouping:
  group_by: alertname
  resolve_timeout: 5 parsecs
auth:
  tokens:
    - {name: ops, role: superuser, token: x}
  colour: blue
"""
    code, _, err = check(write(tmp_path, text))
    assert code == 1
    lines = err.splitlines()
    for expected in [
        "store: expected a file path, sqlite:///path or postgresql://user@host/db",
        "http.listen: expected host:port, e.g. 127.0.0.1:9797",
        "http.max_body_bytes: Input should be greater than 0",
        "grouping.group_by: expected a list of label names",
        "grouping.resolve_timeout: expected a duration such as 30s, 5m, 1h30m, got '5 parsecs'",
        "auth.tokens[0].role: Input should be 'viewer', 'responder', 'approver' or 'admin'",
        "auth.colour: unknown setting; remove it or check its spelling",
    ]:
        assert any(line.endswith(expected) for line in lines), (expected, lines)
    assert "7 problem(s) found" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "grouping:\n  group_by: [alertname, 'not-a-label']\n",
            "grouping.group_by: not valid label names: not-a-label",
        ),
        ("http: [1, 2]\n", "http: Input should be a valid dictionary"),
        ("- just\n- a list\n", "(top level): expected a mapping of settings"),
        ("grouping:\n  group_by: [a\n", "not valid YAML"),
    ],
)
def test_other_mistakes(tmp_path: Path, text: str, expected: str) -> None:
    code, _, err = check(write(tmp_path, text))
    assert code == 1
    assert expected in err


def test_unreadable_file(tmp_path: Path) -> None:
    code, _, err = check(tmp_path / "missing.yaml")
    assert code == 1
    assert "cannot read the file: No such file or directory" in err


def test_environment_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, GOOD.format(tmp=tmp_path))
    monkeypatch.setenv("WATCHKEEPER_HTTP__LISTEN", "127.0.0.1:19797")
    monkeypatch.setenv("WATCHKEEPER_GROUPING__RESOLVE_TIMEOUT", "90s")
    s = load_config(path)
    assert s.http.listen == "127.0.0.1:19797"
    assert s.grouping.resolve_timeout == timedelta(seconds=90)
    # Settings the environment does not name still come from the file.
    assert s.http.max_body_bytes == 65536
    code, out, _ = check(path)
    assert code == 0
    assert "listening on 127.0.0.1:19797" in out


def test_bad_environment_value_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHKEEPER_HTTP__LISTEN", "everywhere")
    code, _, err = check(write(tmp_path, GOOD.format(tmp=tmp_path)))
    assert code == 1
    assert "http.listen: expected host:port" in err


def _token_config(tmp_path: Path, ref: str) -> Path:
    return write(
        tmp_path,
        f"auth:\n  tokens:\n    - {{name: ops, role: admin, token: '{ref}'}}\n"
        f"  ingest_token: '{ref}'\n",
    )


def _secrets(path: Path) -> set[str]:
    auth = Authenticator(load_config(path))
    return {*auth.tokens, auth.ingest_token or ""}


def test_secret_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WK_TEST_TOKEN", "from-the-environment")
    assert _secrets(_token_config(tmp_path, "env:WK_TEST_TOKEN")) == {"from-the-environment"}


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    assert _secrets(_token_config(tmp_path, f"file:{secret}")) == {"from-a-file"}


def test_secret_from_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "api-token").write_text("from-a-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert _secrets(_token_config(tmp_path, "credential:api-token")) == {"from-a-credential"}


def test_literal_secret(tmp_path: Path) -> None:
    assert _secrets(_token_config(tmp_path, "just-a-literal")) == {"just-a-literal"}


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (
            "env:WK_TEST_UNSET",
            "auth.tokens[0].token: environment variable WK_TEST_UNSET is not set",
        ),
        (
            "file:/nonexistent/wk-token",
            "auth.tokens[0].token: cannot read secret file /nonexistent/wk-token",
        ),
        (
            "credential:api-token",
            "auth.tokens[0].token: credential api-token requested"
            " but CREDENTIALS_DIRECTORY is not set",
        ),
    ],
)
def test_missing_secret_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref: str, expected: str
) -> None:
    monkeypatch.delenv("WK_TEST_UNSET", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = _token_config(tmp_path, ref)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems
    assert any(p.startswith("auth.ingest_token: ") for p in caught.value.problems)
    code, _, err = check(path)
    assert code == 1
    assert expected in err


def test_missing_credential_in_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        load_config(_token_config(tmp_path, "credential:absent"))
    assert caught.value.problems[0] == (
        "auth.tokens[0].token: cannot read credential absent: No such file or directory"
    )
