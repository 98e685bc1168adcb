"""kubectl and amtool habits: global options after the subcommand, -o, completion, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from realstack import free_port

from daemon.cli.argv import hoist_globals
from daemon.cli.main import app

CMD = typer.main.get_command(app)
WK = str(Path(sys.executable).with_name("watchkeeper"))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["incidents", "list", "--url", "http://x", "-o", "json"],
         ["--url", "http://x", "-o", "json", "incidents", "list"]),
        (["status", "--token=abc", "--json"], ["--token=abc", "--json", "status"]),
        # Options a subcommand has itself stay with it.
        (["events", "export", "-o", "f.jsonl", "--url", "u"],
         ["--url", "u", "events", "export", "-o", "f.jsonl"]),
        (["runbooks", "list", "--json"], ["runbooks", "list", "--json"]),
        # Before any subcommand, and after `--`, nothing moves.
        (["--url", "u", "status"], ["--url", "u", "status"]),
        (["silence", "add", "--", "--url"], ["silence", "add", "--", "--url"]),
    ],
)
def test_hoist_globals(given: list[str], expected: list[str]) -> None:
    assert hoist_globals(CMD, given) == expected


def _wk(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WATCHKEEPER_")}
    return subprocess.run([WK, *args], capture_output=True, text=True, timeout=60,
                          env={**full, **(env or {})}, check=False)


def test_exit_codes_and_options_after_the_subcommand() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = _wk("incidents", "list", "--url", dead, "-o", "yaml")
    assert unreachable.returncode == 3, unreachable.stderr
    assert f"cannot reach watchkeeper at {dead}" in unreachable.stderr
    usage = _wk("incidents", "--output", "xml")
    assert usage.returncode == 2, usage.stderr
    assert _wk("no-such-command").returncode == 2
    assert "Exit codes: 0 done, 1 refused" in _wk("--help").stdout


def test_shell_completion() -> None:
    done = _wk(env={"_WATCHKEEPER_COMPLETE": "complete_bash", "COMP_WORDS": "watchkeeper inc",
                    "COMP_CWORD": "1"})
    assert done.stdout.split() == ["incidents"], done.stdout + done.stderr
    script = _wk("--show-completion", "bash")
    assert "_WATCHKEEPER_COMPLETE" in script.stdout, script.stdout + script.stderr
