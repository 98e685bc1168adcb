"""The installed program is the tested one: a wheel in a fresh venv, run from elsewhere.

Every other test runs the editable install inside the checkout, where files next to the
source (runbooks/, the demo's runbooks) are found by accident. Here the wheel is built from a
copy of the tree, installed into a new venv outside it (dependencies pinned by
.ci/constraints.txt, so pip's cache serves them), and the daemon and the demo run from a
directory that has nothing of the checkout in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from realstack import REPO, Child, free_port, wait_for

_SKIP = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "var", "*.egg-info", "__pycache__", ".*_cache",
    ".hypothesis", "tests",
)


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, f"{argv[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin/` of a fresh venv outside the tree with the wheel installed.

    Installing ~80 dependencies takes minutes on a shared machine, so the new venv borrows
    the test venv's site-packages as a plain path (a .pth line: its editable-install hook
    is not run, so the checkout stays invisible) and `pip check` proves that what the
    wheel declares is what it gets. `WATCHKEEPER_TEST_FULL_INSTALL=1` installs them for real.
    """
    root = tmp_path_factory.mktemp("installed")
    src = root / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=_SKIP)
    dist = root / "dist"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
         root)
    [wheel] = dist.glob("watchkeeper-*.whl")
    venv = root / "venv"
    python = str(venv / "bin" / "python")
    if os.environ.get("WATCHKEEPER_TEST_FULL_INSTALL"):
        _run([sys.executable, "-m", "venv", str(venv)], root)
        _run([python, "-m", "pip", "install", "-q", "-c", str(REPO / ".ci/constraints.txt"),
              str(wheel)], root)
    else:
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
        purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       root).strip()
        (Path(purelib) / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        _run([*pip, "--python", python, "install", "-q", "--no-deps", str(wheel)], root)
        _run([*pip, "--python", python, "check"], root)
    shutil.rmtree(src)  # nothing of the tree left for the installed program to lean on
    return venv / "bin"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHKEEPER_", "PYTHON"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _elsewhere(tmp_path: Path) -> Path:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return cwd


def test_installed_cli_finds_its_runbooks_from_any_directory(
    installed: Path, tmp_path: Path
) -> None:
    cwd = _elsewhere(tmp_path)
    version = _run([str(installed / "watchkeeper"), "--version"], cwd)
    assert version.startswith("watchkeeper 0."), version
    listed = _run(
        [str(installed / "watchkeeper"), "runbooks", "list", "--json"], cwd
    )
    ids = {rb["id"] for rb in _json(listed)["runbooks"]}
    assert {"generic-triage", "disk-filling", "systemd-service-down"} <= ids
    where = _run([str(installed / "python"), "-c",
                  "import daemon, daemon.runbooks.runbook as r; print(daemon.__file__, r.SHIPPED)"],
                 cwd)
    assert str(REPO) not in where, f"the installed package points into the checkout: {where}"


def _json(text: str) -> Any:
    import json

    return json.loads(text)


def test_installed_daemon_investigates_an_alert(installed: Path, tmp_path: Path) -> None:
    cwd = _elsewhere(tmp_path)
    port = free_port()
    state = tmp_path / "state"
    config = tmp_path / "etc" / "watchkeeper.yaml"
    config.parent.mkdir()
    # Names nothing in the tree: no runbooks_dir, no store (it lives in state_dir).
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(state),
                "http": {"listen": f"127.0.0.1:{port}"},
                "grouping": {"group_by": ["alertname", "instance"]},
            }
        )
    )
    child = Child(
        "installed-daemon",
        [str(installed / "watchkeeper"), "run", "--config", str(config)],
        tmp_path / "daemon.log",
        _env(),
        cwd,
    )
    url = f"http://127.0.0.1:{port}"
    child.start()
    try:
        def ready() -> bool:
            child.check_alive()
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200

        wait_for(ready, timeout=60, what="installed daemon /readyz")
        assert (state / "events.db").exists(), "the default store belongs in state_dir"
        labels = {"alertname": "SomethingOdd", "instance": "web9", "severity": "warning"}
        alert = [{"labels": labels, "annotations": {"summary": "no runbook matches this"}}]
        assert httpx.post(f"{url}/api/v2/alerts", json=alert, timeout=10).status_code == 200
        [inc] = wait_for(lambda: httpx.get(f"{url}/api/v1/incidents", timeout=5)
                         .json()["incidents"], timeout=30, what="incident")

        def finished() -> dict[str, Any] | None:
            view = httpx.get(f"{url}/api/v1/incidents/{inc['id']}", timeout=5).json()
            inv = view.get("investigation")
            return inv if inv and inv["status"] == "concluded" else None

        inv = wait_for(finished, timeout=60, what="investigation concluded", interval=0.3)
        assert [r["runbook"] for r in inv["runs"]] == ["generic-triage"]
        status = httpx.get(f"{url}/api/v1/status", timeout=5).json()
        assert status["reactions"]["agent"]["problem"] is None
        assert status["reactions"]["agent"]["runbooks"] >= 9
    finally:
        child.stop()
    log = (tmp_path / "daemon.log").read_text()
    assert "unknown runbook" not in log, log[-3000:]
    assert "runbook skipped" not in log, log[-3000:]


def test_installed_daemon_without_runbooks_says_it_is_not_ready(
    installed: Path, tmp_path: Path
) -> None:
    cwd = _elsewhere(tmp_path)
    port = free_port()
    empty = tmp_path / "no-runbooks"
    empty.mkdir()
    config = tmp_path / "watchkeeper.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "http": {"listen": f"127.0.0.1:{port}"},
        "agent": {"runbooks_dir": str(empty)},
    }))
    child = Child("installed-daemon", [str(installed / "watchkeeper"), "run", "--config",
                                       str(config)], tmp_path / "daemon.log", _env(), cwd)
    url = f"http://127.0.0.1:{port}"
    child.start()
    try:
        def answered() -> httpx.Response | None:
            child.check_alive()
            r = httpx.get(f"{url}/readyz", timeout=2)
            return r if r.status_code != 404 else None

        r = wait_for(answered, timeout=60, what="/readyz")
        assert r.status_code == 503
        assert "no usable runbook" in r.text
        for i in range(3):
            alert = [{"labels": {"alertname": f"A{i}", "instance": "x"}}]
            assert httpx.post(f"{url}/api/v2/alerts", json=alert, timeout=10).status_code == 200
        wait_for(lambda: len(httpx.get(f"{url}/api/v1/incidents", timeout=5)
                             .json()["incidents"]) == 3, timeout=30, what="3 incidents")
        shown = subprocess.run(
            [str(installed / "watchkeeper"), "--url", url, "status"],
            cwd=cwd, capture_output=True, text=True, timeout=30, env=_env(), check=False,
        ).stdout
        assert "no usable runbook" in shown, shown
    finally:
        child.stop()
    log = (tmp_path / "daemon.log").read_text()
    assert log.count("no usable runbook") == 1, log[-3000:]
    assert log.count("unknown runbook") <= 1, log[-3000:]


def test_installed_demo_proposes_an_action(installed: Path, tmp_path: Path) -> None:
    cwd = _elsewhere(tmp_path)
    port, sim_port = free_port(), free_port()
    child = Child(
        "installed-demo",
        [str(installed / "watchkeeper"), "demo", "--state-dir", str(tmp_path / "demo"),
         "--port", str(port), "--sim-port", str(sim_port)],
        tmp_path / "demo.log",
        _env(),
        cwd,
    )
    child.start()
    try:
        def proposed() -> list[dict[str, Any]]:
            child.check_alive()
            try:
                acts = httpx.get(f"http://127.0.0.1:{port}/api/v1/actions", timeout=5)
            except httpx.HTTPError:
                return []
            return [a for a in acts.json()["actions"] if a["status"] == "pending_approval"]

        [action] = wait_for(proposed, timeout=90, what="the demo proposing an action")
        assert action["action_id"] == "clean_tmp"
    finally:
        child.stop()
