"""Every line the daemon writes is logfmt or JSON that a log shipper reads, with its priority.

A daemon runs under a pretend systemd (`JOURNAL_STREAM` set) through start-up, a broken
runbook (an error), an alert, an investigation and a dead letter; then every line of its
output is parsed, in both formats.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import realstack
from realstack import REPO

from daemon.runtime.logs import PRIORITY, split_fields

_PAIR = re.compile(r'([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s+|$)')
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def parse_logfmt(line: str) -> dict[str, str]:
    """A strict logfmt parser: the whole line must be `key=value` pairs."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        m = _PAIR.match(line, pos)
        assert m, f"not logfmt at column {pos}: {line!r}"
        key, value = m.group(1), m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), "\\" + e.group(1)),
                           value[1:-1])
        assert key not in out, f"duplicate key {key}: {line!r}"
        out[key] = value
        pos = m.end()
    return out


def _priority(line: str) -> tuple[int, str]:
    m = re.match(r"<([0-7])>(.*)", line)
    assert m, f"no syslog priority prefix: {line!r}"
    return int(m.group(1)), m.group(2)


def _run_daemon(tmp_path: Path, fmt: str) -> list[str]:
    books = tmp_path / "runbooks"
    books.mkdir()
    shutil.copy(REPO / "runbooks" / "generic-triage.md", books)
    (books / "broken.md").write_text("---\nid: broken\n---\nno version, no title\n")
    wk = realstack.Watchkeeper(
        tmp_path / "wk",
        f"sqlite:///{tmp_path}/wk/events.db",
        settings={
            "logging": {"format": fmt, "level": "debug"},
            "grouping": {"group_by": ["alertname", "instance"]},
            "agent": {"runbooks_dir": str(books),
                      "tools": {"prometheus_url": f"http://127.0.0.1:{realstack.free_port()}"}},
        },
    )
    assert wk.child is not None
    assert wk.child.env is not None
    wk.child.env["JOURNAL_STREAM"] = "8:12345"
    try:
        wk.start()
        alert = [{"labels": {"alertname": 'Odd "quoted"\\name', "instance": "web 1\nx"},
                  "annotations": {"summary": "spaces, = signs and \"quotes\""}}]
        assert httpx.post(f"{wk.url}/api/v2/alerts", json=alert, timeout=10).status_code == 200
        [inc] = realstack.wait_for(lambda: wk.incidents() or None, timeout=30, what="incident")

        def finished() -> Any:
            inv = wk.get(f"/api/v1/incidents/{inc['id']}").get("investigation")
            return inv if inv and inv["status"] in ("concluded", "escalated") else None

        realstack.wait_for(finished, timeout=60, what="investigation finished", interval=0.3)
        bad = httpx.post(f"{wk.url}/api/v2/alerts", content=b"{not json", timeout=10)
        assert bad.status_code == 400
        realstack.wait_for(lambda: wk.get("/api/v1/dead-letters").get("dead_letters"),
                           timeout=10, what="dead letter")
    finally:
        assert wk.stop() == 0
    text = (tmp_path / "wk" / "watchkeeper.log").read_text()
    return [x for x in text.splitlines() if x and not x.startswith("--- start ")]


def _check_common(lines: list[str], parse: Any) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        prio, rest = _priority(line)
        rec = parse(rest)
        assert PRIORITY[rec["level"]] == prio, line
        for head in ("ts", "level", "logger", "msg"):
            assert head in rec, line
        assert "UUID(" not in rest, line
        assert "datetime.datetime(" not in rest, line
        records.append(rec)
    levels = {r["level"] for r in records}
    assert {"error", "info"} <= levels, levels
    errors = [r for r in records if r["level"] == "error"]
    assert any(r["msg"] == "runbook skipped" and "broken.md" in r["problem"] for r in errors)
    return records


def test_every_line_is_logfmt_with_journald_priority(tmp_path: Path) -> None:
    records = _check_common(_run_daemon(tmp_path, "keyvalue"), parse_logfmt)
    opened = next(r for r in records if r["msg"] == "IncidentOpened")
    assert re.fullmatch(r"\d+", opened["position"]), opened
    assert re.fullmatch(r"[0-9a-f-]{36}", opened["stream"]), opened
    assert 'Odd "quoted"\\name' in opened["group_key"], opened
    assert "web 1\nx" in opened["group_key"], opened
    assert any(r["msg"] == "DeadLetterRecorded" for r in records)


def test_every_line_is_json_with_fields_as_keys(tmp_path: Path) -> None:
    records = _check_common(_run_daemon(tmp_path, "json"), json.loads)
    opened = next(r for r in records if r["msg"] == "IncidentOpened")
    assert isinstance(opened["position"], int)
    assert re.fullmatch(r"[0-9a-f-]{36}", opened["stream"]), opened


@pytest.mark.parametrize(
    ("fmt", "args", "msg", "fields"),
    [
        ("plain", (), "plain", {}),
        ("route names runbook=%s incident=%s", ("a", 7), "route names", {"runbook": "a",
                                                                          "incident": 7}),
        ("%s position=%d done", ("Opened", 3), "Opened done", {"position": 3}),
        ("100%% of n=%d", (3,), "100% of", {"n": 3}),
        ("ratio=%.2f", (0.456,), "", {"ratio": "0.46"}),
        ("mismatched %s %s", (1,), "", None),
    ],
)
def test_split_fields(fmt: str, args: tuple[Any, ...], msg: str, fields: Any) -> None:
    if fields is None:
        with pytest.raises(TypeError):
            split_fields(fmt, args)
        return
    assert split_fields(fmt, args) == (msg, fields)
