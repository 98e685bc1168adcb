"""Conditions over diagnostic results, written the way a runbook author reads them.

A check is `<diagnostic>.<fact> <op> <literal>`, e.g. `root_free.value < 0.10` or
`unit_state.status == ok`. Facts are the small scalars each tool result carries (value,
last, min, max, count, trend, status, exit_code, http_status…). A check on a fact that is
missing, or on a diagnostic that failed, is false: no evidence, no action.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

Fact = float | int | str | bool | None
Op = Literal["<", "<=", ">", ">=", "==", "!=", "contains", "matches"]
_CHECK = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(<=|>=|==|!=|<|>|contains|matches)\s*(.+?)\s*$"
)


class Check(BaseModel):
    """One parsed check: which diagnostic, which fact, an operator and a literal."""

    model_config = ConfigDict(frozen=True)

    diagnostic: str
    fact: str
    op: Op
    value: float | int | str | bool

    @classmethod
    def parse(cls, text: str) -> Check:
        """Parse `id.fact op literal`; raise ValueError saying what is expected."""
        m = _CHECK.match(text)
        if not m:
            raise ValueError(
                f"bad check {text!r}: expected <diagnostic>.<fact> <op> <value>, "
                "e.g. 'root_free.value < 0.1' (ops: < <= > >= == != contains matches)"
            )
        diag, fact, op, raw = m.groups()
        literal = yaml.safe_load(raw)
        if not isinstance(literal, float | int | str | bool):
            raise ValueError(f"bad check {text!r}: {raw!r} is not a number, string or boolean")
        if op == "matches":
            try:
                re.compile(str(literal))
            except re.error as e:
                raise ValueError(f"bad check {text!r}: invalid regular expression: {e}") from e
        return cls(diagnostic=diag, fact=fact, op=op, value=literal)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.diagnostic}.{self.fact} {self.op} {self.value}"

    def holds(self, facts: Mapping[str, Mapping[str, Fact]]) -> bool:
        """Whether the check is true on these facts (by diagnostic id)."""
        got = facts.get(self.diagnostic, {}).get(self.fact)
        if got is None:
            return False
        if self.op in ("contains", "matches"):
            text = str(got)
            if self.op == "contains":
                return str(self.value) in text
            return re.search(str(self.value), text) is not None
        if isinstance(self.value, str) or isinstance(got, str):
            if self.op == "==":
                return str(got) == str(self.value)
            if self.op == "!=":
                return str(got) != str(self.value)
            return False
        a, b = float(got), float(self.value)
        if math.isnan(a):
            return False
        return {
            "<": a < b,
            "<=": a <= b,
            ">": a > b,
            ">=": a >= b,
            "==": a == b,
            "!=": a != b,
        }[self.op]


class Condition(BaseModel):
    """`all:` checks that must all hold, and/or `any:` checks of which one must hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    all: tuple[str, ...] = ()
    any: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _checks_parse(self) -> Condition:
        if not self.all and not self.any:
            raise ValueError("a condition needs at least one check under all: or any:")
        for text in (*self.all, *self.any):
            Check.parse(text)
        return self

    def checks(self) -> list[Check]:
        """Every check, parsed."""
        return [Check.parse(t) for t in (*self.all, *self.any)]

    def diagnostics(self) -> set[str]:
        """Ids of the diagnostics this condition reads."""
        return {c.diagnostic for c in self.checks()}

    def explain(self, facts: Mapping[str, Mapping[str, Fact]]) -> tuple[bool, list[str]]:
        """Evaluate, and say per check whether it held and on what value."""
        lines: list[str] = []
        all_ok = True
        for text in self.all:
            c = Check.parse(text)
            ok = c.holds(facts)
            all_ok &= ok
            lines.append(f"{'✓' if ok else '✗'} {c} (got {_show(facts, c)})")
        any_ok = not self.any
        for text in self.any:
            c = Check.parse(text)
            ok = c.holds(facts)
            any_ok |= ok
            lines.append(f"{'✓' if ok else '✗'} any: {c} (got {_show(facts, c)})")
        return all_ok and any_ok, lines


def _show(facts: Mapping[str, Mapping[str, Fact]], c: Check) -> str:
    got = facts.get(c.diagnostic, {}).get(c.fact)
    if got is None:
        return "no data"
    if isinstance(got, float):
        return f"{got:.4g}"
    return str(got)
