"""Draft a runbook change from its outcomes, as a diff for a person to review (never applied).

The one change drafted today: a default-action threshold that sent people proposals they
rejected. The deterministic path writes each check and the value it saw into the
proposal's rationale (`✓ free_ratio.value < 0.1 (got 0.08)`); when rejected proposals saw
values that approved ones did not, the threshold moves to just exclude them. Repeated
failed verifications are reported, not rewritten: what to do instead needs a person.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from daemon.domain.action_model import ActionEntry
from daemon.runbooks.outcomes import outcome_of
from daemon.runbooks.runbook import Runbook

_VERDICT = re.compile(
    r"✓ (?P<check>(?P<ref>[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*) "
    r"(?P<op><=|>=|<|>) (?P<limit>[-+0-9.eE]+)) \(got (?P<got>[-+0-9.eE]+)\)"
)
MIN_REJECTED = 2


@dataclass
class Suggestion:
    """The reasons found, and a unified diff when a change could be drafted."""

    reasons: list[str] = field(default_factory=list)
    diff: str = ""


def _seen(rationale: str) -> dict[tuple[str, str, str], float]:
    """(reference, op, limit) → the value the check saw, from a deterministic rationale."""
    out = {}
    for m in _VERDICT.finditer(rationale):
        try:
            out[(m["ref"], m["op"], m["limit"])] = float(m["got"])
        except ValueError:
            continue
    return out


def suggest(rb: Runbook, text: str, entries: list[ActionEntry]) -> Suggestion:
    """A suggested change of runbook `rb` (its file `text`) from its actions' outcomes."""
    s = Suggestion()
    mine = [a for a in entries if a.runbook_id == rb.id]
    if not mine:
        s.reasons.append(f"no recorded actions of runbook {rb.id}: nothing to learn from yet")
        return s
    for action in sorted({a.action_id for a in mine}):
        outs = [outcome_of(a) for a in mine if a.action_id == action]
        ran = [o for o in outs if o.ran]
        failed = [o for o in ran if o.verified is False]
        if len(failed) >= 2:
            s.reasons.append(
                f"{action} failed verification {len(failed)} of {len(ran)} times: its "
                "condition or the action itself needs a person's look (no change drafted)"
            )
    da = rb.default_action
    if da is None:
        return s
    proposals = [a for a in mine if a.action_id == da.action and a.proposed_by == "deterministic"]
    rejected = [a for a in proposals if outcome_of(a).approved is False]
    accepted = [
        a
        for a in proposals
        if outcome_of(a).approved is True and outcome_of(a).verified is not False
    ]
    if len(rejected) < MIN_REJECTED:
        s.reasons.append(
            f"{len(rejected)} of {len(proposals)} proposals of {da.action} were rejected: "
            "no threshold change drafted"
        )
        return s
    new_text = text
    for key in _seen(rejected[0].rationale):
        ref, op, limit = key
        bad = [v for a in rejected if (v := _seen(a.rationale).get(key)) is not None]
        good = [v for a in accepted if (v := _seen(a.rationale).get(key)) is not None]
        if len(bad) < MIN_REJECTED:
            continue
        if op in ("<", "<="):
            new = min(bad)
            separates = all(g < new for g in good)
            new_op = "<"
        else:
            new = max(bad)
            separates = all(g > new for g in good)
            new_op = ">"
        if not separates:
            continue
        old_check = next(
            (c for c in (*da.when.all, *da.when.any) if c.replace(" ", "").startswith(ref + op)),
            None,
        )
        if old_check is None:
            continue
        new_check = f"{ref} {new_op} {new:.4g}"
        new_text = new_text.replace(f'"{old_check}"', f'"{new_check}"', 1)
        s.reasons.append(
            f"{len(bad)} rejected proposals of {da.action} saw {ref} at "
            f"{', '.join(f'{v:.4g}' for v in sorted(bad))} (limit {op} {limit}); "
            f"{len(good)} approved ones saw {', '.join(f'{v:.4g}' for v in sorted(good)) or '-'}: "
            f"tighten to {new_check}"
        )
        break
    if new_text == text:
        s.reasons.append(
            f"{len(rejected)} proposals of {da.action} were rejected, but no threshold "
            "separates them from the approved ones: a person should read the rejections"
        )
        return s
    new_text = re.sub(
        r"^version: *(\d+)[ \t]*$",
        lambda m: f"version: {int(m[1]) + 1}",
        new_text,
        count=1,
        flags=re.MULTILINE,
    )
    s.diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=f"a/{rb.id}.md",
            tofile=f"b/{rb.id}.md (suggested)",
        )
    )
    return s
