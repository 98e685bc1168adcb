"""`watchkeeper runbooks suggest`: a threshold that sent people proposals they rejected
becomes a drafted diff; nothing is ever written to the runbook."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from typer.testing import CliRunner

from daemon.cli.main import app
from daemon.domain.action_model import ActionEntry
from daemon.runbooks.runbook import SHIPPED, load_runbooks
from daemon.runbooks.suggest import suggest

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RB = load_runbooks().runbooks["disk-filling"]


def entry(got: float, status: str, n: int) -> ActionEntry:
    inc = uuid4()
    return ActionEntry(
        id=uuid4(),
        incident_id=inc,
        investigation_id=uuid4(),
        runbook_id="disk-filling",
        runbook_version="4",
        action_id="vacuum_journal",
        kind="shell",
        risk="low",
        params={"max_size": "500M"},
        rationale=(
            "Less than 10% is free\n"
            f"✓ free_ratio.value < 0.1 (got {got})\n"
            "✓ holds_journal.count > 0 (got 1)\n"
            "✓ readonly.value == 0 (got 0)"
        ),
        proposed_by="deterministic",
        proposed_at=T0 + timedelta(days=n),
        updated_at=T0 + timedelta(days=n),
        status=status,  # type: ignore[arg-type]
        dispatched_at=T0 if status == "verified" else None,
        decided_by="alice",
        labels={"instance": "web1:9100"},
    )


HISTORY = [
    entry(0.03, "verified", 1),
    entry(0.02, "verified", 2),
    entry(0.08, "rejected", 3),
    entry(0.09, "rejected", 4),
    entry(0.07, "rejected", 5),
]


def test_rejected_proposals_tighten_the_threshold_in_a_diff() -> None:
    text = Path(RB.path).read_text()
    s = suggest(RB, text, HISTORY)
    assert '-      - "free_ratio.value < 0.10"' in s.diff
    assert '+      - "free_ratio.value < 0.07"' in s.diff
    assert "-version: 4" in s.diff
    assert "+version: 5" in s.diff
    assert (
        "3 rejected proposals of vacuum_journal saw free_ratio.value at 0.07, 0.08, 0.09"
        in (s.reasons[0])
    )


def test_no_change_without_enough_rejections_or_when_nothing_separates() -> None:
    text = Path(RB.path).read_text()
    assert suggest(RB, text, HISTORY[:3]).diff == ""
    mixed = [*HISTORY, entry(0.095, "verified", 6)]
    s = suggest(RB, text, mixed)
    assert s.diff == ""
    assert "no threshold separates them" in s.reasons[-1]


def test_cli_prints_the_diff_and_never_writes_the_runbook(tmp_path: Path) -> None:
    rb_dir = tmp_path / "runbooks"
    rb_dir.mkdir()
    original = (SHIPPED / "disk-filling.md").read_text()
    (rb_dir / "disk-filling.md").write_text(original)
    actions = tmp_path / "actions.json"
    actions.write_text(json.dumps({"actions": [a.model_dump(mode="json") for a in HISTORY]}))
    res = CliRunner().invoke(
        app, ["runbooks", "suggest", "disk-filling", "--dir", str(rb_dir), "--from", str(actions)]
    )
    assert res.exit_code == 0, res.output
    assert '+      - "free_ratio.value < 0.07"' in res.stdout
    assert (rb_dir / "disk-filling.md").read_text() == original
