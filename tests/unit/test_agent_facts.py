"""The model starts from facts: the runbook's diagnostics run before its first step and are
its first evidence (with the rendered queries, the default action's condition and the verify
query); refused proposals and conclusions without evidence end the run escalated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentkit import CannedPromQL, harness
from llmserver import ScriptedLLM, Turn, call

DISK = {
    "alertname": "DiskFull",
    "instance": "web1:9100",
    "mountpoint": "/var",
    "severity": "critical",
}
FREE = "node_filesystem_avail_bytes"


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM()
    yield server
    server.close()


def cfg(llm: ScriptedLLM) -> dict[str, Any]:
    return {"llm": {"base_url": llm.url, "model": "scripted-1", "api_key": "k", "max_retries": 0}}


def tools() -> dict[str, Any]:
    return {
        "promql_instant": CannedPromQL(
            "promql_instant",
            {
                "node_filesystem_readonly": {"value": 0, "count": 1},
                'mountpoint=~"/|/var|/var/log"': {"value": 1e11, "count": 1},
                f"{FREE}{{": {"value": 0.04, "count": 1},
            },
        ),
        "promql_range": CannedPromQL("promql_range", {FREE: {"last": 4e8, "trend": "falling"}}),
    }


async def test_diagnostics_are_the_first_evidence(tmp_path: Path, llm: ScriptedLLM) -> None:
    llm.script = [
        Turn(
            tool_calls=[
                call(
                    "conclude",
                    summary="/var 96% full",
                    probable_cause="journal",
                    evidence=["d-free_ratio"],
                )
            ]
        )
    ]
    t = tools()
    async with harness(tmp_path, agent=cfg(llm), tools=t) as h:
        [iid] = await h.start(await h.fire(DISK))
        run = await h.investigator().investigate(iid)
        # Every diagnostic ran before the model was asked, with the labels filled in.
        assert len(llm.requests) == 1
        assert any(
            'instance="web1:9100", mountpoint="/var"' in q for q in t["promql_instant"].queries
        )
        user = llm.requests[0]["messages"][1]["content"]
        facts = user.split("Facts gathered before your first step")[1]
        assert "evidence id d-free_ratio" in facts
        assert 'mountpoint=\\"/var\\"' in facts  # the rendered query, as JSON
        assert "Default action: vacuum_journal" in facts
        assert "HOLDS" in facts or "does NOT hold" in facts
        assert "verified by query" in facts
        assert run.escalated is None
        assert [e.call_id for e in run.concluded.evidence] == ["d-free_ratio"]  # type: ignore[union-attr]


async def test_a_conclusion_without_evidence_is_escalated(tmp_path: Path, llm: ScriptedLLM) -> None:
    llm.script = [Turn(content="done")]
    async with harness(tmp_path, agent=cfg(llm), tools=tools()) as h:
        [iid] = await h.start(await h.fire(DISK))
        run = await h.investigator().investigate(iid)
        assert run.escalated is not None
        assert "cites no evidence" in run.escalated.reason
        assert h.entity(iid).escalated


async def test_refused_proposals_are_escalated(tmp_path: Path, llm: ScriptedLLM) -> None:
    bad = [
        call("propose_action", action="reboot", params={}, rationale="x"),
        call("propose_action", action="vacuum_journal", params={"max_size": "lots"}, rationale="x"),
    ]
    llm.script = [
        Turn(tool_calls=bad),
        Turn(tool_calls=bad[:1]),
        Turn(tool_calls=[call("conclude", summary="fine", evidence=["d-free_ratio"])]),
    ]
    async with harness(tmp_path, agent=cfg(llm), tools=tools()) as h:
        [iid] = await h.start(await h.fire(DISK))
        run = await h.investigator().investigate(iid)
        assert run.escalated is not None
        assert "3 proposal(s) were refused" in run.escalated.reason
        assert not run.proposals


async def test_an_escalated_run_is_flagged_to_chat(tmp_path: Path, llm: ScriptedLLM) -> None:
    from daemon.config.notify import NotificationsConfig
    from daemon.domain.investigation_model import InvestigationEscalated
    from daemon.notify.reaction import NotifyReaction

    llm.script = [Turn(content="done")]
    async with harness(tmp_path, agent=cfg(llm), tools=tools()) as h:
        [iid] = await h.start(await h.fire(DISK))
        await h.investigator().investigate(iid)
        [escalated] = [e for e in h.stream(iid) if isinstance(e, InvestigationEscalated)]
        notify = NotifyReaction(h.ingestor, {}, NotificationsConfig(), h.clock)
        assert notify.interested(escalated)
        assert "cites no evidence" in escalated.reason


async def test_the_prompt_carries_the_runbooks_success_record(
    tmp_path: Path, llm: ScriptedLLM
) -> None:
    from dataclasses import replace

    from daemon.domain.action_model import (
        ActionPlan,
        ApproveAction,
        DecidePolicy,
        DispatchAction,
        RecordOutcome,
        RecordVerification,
        VerifySpec,
    )
    from daemon.domain.policy import PolicyRules

    llm.script = [Turn(tool_calls=[call("conclude", summary="s", evidence=["d-free_ratio"])])]
    async with harness(tmp_path, agent=cfg(llm), tools=tools()) as h:
        # An earlier incident: the deterministic path proposed, a person approved, it worked.
        first = await h.fire(DISK)
        [cmd] = h.reaction().starts_for(first)
        await h.ingestor.submit([replace(cmd, mode="deterministic")])
        run = await h.investigator().investigate(cmd.investigation_id)
        [p] = run.proposals
        plan = ActionPlan(
            kind="shell",
            action_id="vacuum_journal",
            summary="journalctl",
            targets=("web1",),
            spec={},
            verb="run",
        )
        verify = VerifySpec(query="x", expect="value > 0.15", window_seconds=600)
        for c in (
            DecidePolicy(p.proposal_id, PolicyRules(), plan, labels=DISK, verify=verify),
            ApproveAction(p.proposal_id, "alice", "approver", "api"),
            DispatchAction(p.proposal_id, PolicyRules(), "k1"),
            RecordOutcome(p.proposal_id, "succeeded", "freed 30G"),
            RecordVerification(p.proposal_id, True, "value > 0.15 held"),
        ):
            await h.ingestor.execute(c)
        # Now a new incident of the same runbook, investigated by the model.
        second = await h.fire({**DISK, "alertname": "DiskSpaceLow"})
        [iid] = await h.start(second)
        await h.investigator().investigate(iid)
        user = llm.requests[0]["messages"][1]["content"]
        assert "Success record of runbook disk-filling's actions:" in user
        assert "- vacuum_journal: 1 of 1 verified in 30 days (1 proposed)" in user
