"""Shadow runbooks: a candidate version investigates next to the active one; its proposals
are ShadowActionProposed (never an action entry, never executed) and are compared with what
people approved; promotion is a person's decision, recorded as RunbookPromoted."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentkit import CannedPromQL, harness

from daemon.actions.reaction import ActionsReaction
from daemon.agent.views import investigation_view, shadow_view
from daemon.domain import Rejected
from daemon.domain.investigation_model import (
    ActionProposed,
    PromoteRunbook,
    RunbookPromoted,
    ShadowActionProposed,
)
from daemon.runbooks.runbook import SHIPPED, load_runbooks

DISK = {
    "alertname": "DiskFull",
    "instance": "web1:9100",
    "mountpoint": "/var",
    "severity": "critical",
}


def tools() -> dict[str, CannedPromQL]:
    answers = {
        "node_filesystem_readonly": {"value": 0, "count": 1},
        'mountpoint=~"/|/var|/var/log"': {"value": 1e11, "count": 1},
        "node_filesystem_avail_bytes{": {"value": 0.04, "count": 1},
    }
    return {
        "promql_instant": CannedPromQL("promql_instant", answers),
        "promql_range": CannedPromQL("promql_range", {}),
    }


def candidate(tmp_path: Path, version: str, threshold: str) -> Path:
    d = tmp_path / "shadow"
    d.mkdir(exist_ok=True)
    text = (SHIPPED / "disk-filling.md").read_text()
    text = text.replace("version: 4\n", f"version: {version}\n", 1)
    text = text.replace('"free_ratio.value < 0.10"', f'"free_ratio.value < {threshold}"', 1)
    (d / "disk-filling.md").write_text(text)
    return d


async def test_a_shadow_run_proposes_but_nothing_can_execute_it(tmp_path: Path) -> None:
    shadow = load_runbooks(candidate(tmp_path, "5", "0.05"))
    assert not shadow.problems
    async with harness(tmp_path, tools=tools()) as h:
        inc = await h.fire(DISK)
        investigator = h.investigator(shadow=shadow)
        reaction = h.reaction()
        reaction.shadow = shadow
        cmds = reaction.starts_for(inc)
        assert [(c.runbook_version, c.shadow) for c in cmds] == [("4", False), ("5", True)]
        await h.ingestor.submit(cmds)
        active_id, shadow_id = (c.investigation_id for c in cmds)
        await investigator.investigate(active_id)
        run = await investigator.investigate(shadow_id)
        assert run.concluded is not None
        shadow_events = [e for e in h.stream(shadow_id) if "Proposed" in type(e).__name__]
        assert [type(e) for e in shadow_events] == [ShadowActionProposed]
        assert not isinstance(shadow_events[0], ActionProposed)
        assert "free_ratio.value < 0.05" in shadow_events[0].rationale
        # The actions stage follows the log but has no interest in shadow proposals.
        assert not ActionsReaction.interested(None, shadow_events[0])  # type: ignore[arg-type]
        [entry] = h.ingestor.world.actions.for_incident(inc)
        assert entry.investigation_id == active_id
        # The incident's view speaks for the active run; the shadow proposal is kept apart.
        view = investigation_view(h.ingestor.world, inc)
        assert view is not None
        assert len(view["proposals"]) == 1
        assert [p["runbook_version"] for p in view["shadow_proposals"]] == ["5"]
        assert [r["shadow"] for r in view["runs"]] == [False, True]
        [row] = shadow_view(h.ingestor.world)
        assert (row["shadow_version"], row["active_version"]) == ("5", "4")
        assert row["shadow_proposals"] == ["vacuum_journal {'max_size': '500M'}"]
        assert row["outcomes"][0]["status"] == entry.status


async def test_a_stricter_shadow_stays_quiet_and_same_version_runs_no_shadow(
    tmp_path: Path,
) -> None:
    async with harness(tmp_path, tools=tools()) as h:
        inc = await h.fire(DISK)
        reaction = h.reaction()
        reaction.shadow = load_runbooks(candidate(tmp_path, "4", "0.03"))
        assert [c.shadow for c in reaction.starts_for(inc)] == [False]
        reaction.shadow = load_runbooks(candidate(tmp_path, "6", "0.03"))
        cmds = reaction.starts_for(inc)
        await h.ingestor.submit(cmds)
        run = await h.investigator(shadow=reaction.shadow).investigate(cmds[1].investigation_id)
        assert run.proposals == []
        assert "condition does not hold" in (run.concluded.summary if run.concluded else "")


async def test_promotion_is_a_persons_recorded_decision(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        with pytest.raises(Rejected) as e:
            await h.ingestor.execute(
                PromoteRunbook("disk-filling", "5", "4", "vic", "viewer", "ok")
            )
        assert e.value.status == 403
        with pytest.raises(Rejected) as e:
            await h.ingestor.execute(
                PromoteRunbook("disk-filling", "5", "4", "al", "approver", " ")
            )
        assert e.value.status == 422
        [ev] = await h.ingestor.execute(
            PromoteRunbook("disk-filling", "5", "4", "alice", "approver", "agreed 12 of 12")
        )
        assert isinstance(ev, RunbookPromoted)
        assert (ev.version, ev.by, ev.reason) == ("5", "alice", "agreed 12 of 12")
        assert h.ingestor.world.investigations.promoted == {"disk-filling": "5"}
        with pytest.raises(Rejected) as e:
            await h.ingestor.execute(PromoteRunbook("disk-filling", "5", "4", "bob", "admin", "x"))
        assert e.value.status == 409


def test_the_consoles_tally_counts_agreement_per_runbook() -> None:
    from daemon.web.console_runbooks import tallies

    def row(rb: str, agrees: bool, outcomes: list[dict[str, object]]) -> dict[str, object]:
        return {
            "runbook": rb,
            "shadow_version": "5",
            "active_version": "4",
            "agrees_with_people": agrees,
            "shadow_proposals": ["vacuum_journal {}"] if agrees else [],
            "outcomes": outcomes,
            "promoted": "",
        }

    ok = {"approved": True, "verified": True}
    no = {"approved": False, "verified": False}
    [disk, other] = tallies(
        [row("disk-filling", True, [ok]), row("disk-filling", False, [no]), row("x", False, [])]
    )
    assert (disk.runbook, disk.runs, disk.agreed, disk.approved, disk.verified) == (
        "disk-filling",
        2,
        1,
        1,
        1,
    )
    assert (disk.shadow_version, disk.active_version, disk.shadow_proposed) == ("5", "4", 1)
    assert (other.runbook, other.runs, other.agreed) == ("x", 1, 0)
