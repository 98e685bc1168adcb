"""Checks for the systemd packaging in systemd/ (unit, sysusers, polkit rule).

The systemd-analyze checks need systemd >= 250 (for `security --offline`). They are
skipped only when systemd-analyze is not installed. An older systemd-analyze fails them
with its own error message. The other checks read the files and need nothing else.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "watchkeeper.service"
SYSUSERS = SYSTEMD_DIR / "watchkeeper.sysusers"
POLKIT_RULES = SYSTEMD_DIR / "50-watchkeeper.rules"

# The unit starts the daemon from this venv path. Tests and build machines normally
# don't have it.
DAEMON_BIN = "/opt/watchkeeper/.venv/bin/watchkeeper"
MAX_EXPOSURE = 2.0
CREDENTIALS = ("llm-api-key", "slack-signing-secret", "slack-bot-token", "api-tokens")

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (package: systemd)"
)


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = dict(os.environ, SYSTEMD_PAGER="", SYSTEMD_COLORS="0", LC_ALL="C.UTF-8")
    return subprocess.run(
        [ANALYZE, "--no-pager", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        timeout=60,
        check=False,
    )


def _parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A minimal unit-file parser that keeps repeated keys, which configparser cannot."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return _parse_unit(UNIT.read_text())["Service"]


# (a) exposure ------------------------------------------------------------------------


@needs_analyze
def test_security_exposure_is_at_most_2() -> None:
    result = _analyze("security", "--offline=true", str(UNIT))
    output = result.stdout + result.stderr
    m = re.search(r"Overall exposure level for watchkeeper\.service: (\d+(?:\.\d+)?)", output)
    assert m, f"no overall exposure line (exit {result.returncode}):\n{output}"
    exposure = float(m.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{output}"


# (b) verify --------------------------------------------------------------------------
#
# `systemd-analyze verify` checks that every Exec*= binary exists. The daemon binary
# only exists on a host where the venv is installed, so verifying the shipped unit as
# it is prints "Command /opt/watchkeeper/.venv/bin/watchkeeper is not executable"
# and exits 1. Two checks follow.
#
# 1. The shipped, unmodified unit may print only that one message, and only when the
#    binary is really missing. Any other message fails the test.
# 2. A copy whose ExecStart points at a stub executable in tmp_path must verify with
#    exit 0 and no output at all. Only the path of that one binary changes. The
#    arguments, ExecReload's /bin/kill, every directive and the dependency targets are
#    still checked against this machine's systemd.
#
# Why not `--root=DIR` with a fake /opt/... inside it: verify then looks up everything
# else inside DIR too, such as sysinit.target, network-online.target, multi-user.target
# and /bin/kill. It reports "Unit sysinit.target not found" and similar unless the test
# builds a fake OS tree, and such a tree would prove less than the real one.


@needs_analyze
def test_verify_shipped_unit_only_misses_the_daemon_binary() -> None:
    result = _analyze("verify", str(UNIT))
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    missing_bin = (
        f"watchkeeper.service: Command {DAEMON_BIN} is not executable: No such file or directory"
    )
    tolerated = [] if os.access(DAEMON_BIN, os.X_OK) else [missing_bin]
    unexpected = [ln for ln in lines if ln not in tolerated]
    assert not unexpected, "systemd-analyze verify:\n" + "\n".join(lines)
    if result.returncode != 0:
        assert lines == tolerated, f"verify exited {result.returncode} with: {lines}"


@needs_analyze
def test_verify_is_clean_with_an_existing_exec_start(tmp_path: Path) -> None:
    stub = tmp_path / "bin" / "watchkeeper"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o700)

    text = UNIT.read_text()
    assert text.count(DAEMON_BIN) == 1, f"expected {DAEMON_BIN} exactly once in the unit"
    copy = tmp_path / "watchkeeper.service"  # verify and the unit name need this file name
    copy.write_text(text.replace(DAEMON_BIN, str(stub)))
    copy.chmod(0o644)

    result = _analyze("verify", str(copy))
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, f"verify exited {result.returncode}:\n{output}"
    assert output == "", f"verify printed:\n{output}"


# (c) required directives -------------------------------------------------------------


def test_unit_is_a_notify_service_with_watchdog(service: dict[str, list[str]]) -> None:
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert len(service["WatchdogSec"]) == 1
    assert re.fullmatch(r"[1-9]\d*(s|sec)?", service["WatchdogSec"][0])
    assert service["Restart"] == ["on-failure"]
    assert service["ExecStart"] == [f"{DAEMON_BIN} run --config /etc/watchkeeper/watchkeeper.yaml"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_unit_directories_and_user(service: dict[str, list[str]]) -> None:
    assert service["StateDirectory"] == ["watchkeeper"]
    assert service["ConfigurationDirectory"] == ["watchkeeper"]
    assert service["User"] == ["watchkeeper"]
    assert service["Group"] == ["watchkeeper"]
    # polkit matches the user by name; a DynamicUser= would break that.
    assert "DynamicUser" not in service
    assert "WATCHKEEPER_STATE_DIR=%S/watchkeeper" in service["Environment"]


def test_unit_loads_each_credential_from_etc(service: dict[str, list[str]]) -> None:
    loaded = dict(v.split(":", 1) for v in service["LoadCredential"])
    assert loaded == {name: f"/etc/watchkeeper/credentials/{name}" for name in CREDENTIALS}


# (d) sysusers ------------------------------------------------------------------------


def test_sysusers_declares_the_watchkeeper_user() -> None:
    entries = [
        shlex.split(line)
        for line in SYSUSERS.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    users = [e for e in entries if e[:2] == ["u", "watchkeeper"]]
    assert len(users) == 1, f"expected one 'u watchkeeper' line, got {entries}"
    # Type Name ID GECOS Home Shell
    assert len(users[0]) == 6, users[0]
    _, _, _, _, home, shell = users[0]
    assert home == "/var/lib/watchkeeper"
    assert shell.endswith("/nologin")


@pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is not installed"
)
def test_sysusers_creates_the_user_in_a_scratch_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text().splitlines()
    entry = next(ln for ln in passwd if ln.startswith("watchkeeper:"))
    assert entry.split(":")[5:] == ["/var/lib/watchkeeper", "/usr/sbin/nologin"]
    assert any(ln.startswith("watchkeeper:") for ln in (tmp_path / "etc" / "group").open())


# polkit rule -------------------------------------------------------------------------

_POLKIT_HARNESS = r"""
const fs = require("fs");
const rules = [];
const polkit = {
  Result: { YES: "yes", NO: "no", NOT_HANDLED: null },
  addRule: (f) => rules.push(f),
};
new Function("polkit", fs.readFileSync(process.argv[1], "utf8"))(polkit);
const out = JSON.parse(process.argv[2]).map(([id, user, unit, verb]) => {
  const details = { unit: unit, verb: verb };
  const action = { id: id, lookup: (k) => details[k] };
  const r = rules[0](action, { user: user });
  return r === undefined ? null : r;
});
console.log(JSON.stringify(out));
"""

_MANAGE = "org.freedesktop.systemd1.manage-units"
_POLKIT_CASES = [
    ((_MANAGE, "watchkeeper", "nginx.service", "restart"), "yes"),
    ((_MANAGE, "watchkeeper", "myapp.service", "reload"), "yes"),
    ((_MANAGE, "watchkeeper", "nginx.service", "start"), "yes"),
    ((_MANAGE, "watchkeeper", "nginx.service", "stop"), "yes"),
    ((_MANAGE, "watchkeeper", "ssh.service", "restart"), "no"),
    ((_MANAGE, "watchkeeper", "nginx.service", "reload-or-restart"), "no"),
    ((_MANAGE, "alice", "nginx.service", "restart"), None),
    (("org.freedesktop.systemd1.manage-unit-files", "watchkeeper", None, None), None),
]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_polkit_rule_allows_only_listed_units_and_verbs() -> None:
    result = subprocess.run(
        [
            "node",
            "-e",
            _POLKIT_HARNESS,
            str(POLKIT_RULES),
            json.dumps([list(case) for case, _ in _POLKIT_CASES]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    want = [expected for _, expected in _POLKIT_CASES]
    assert got == want
