"""Label matchers with Alertmanager's four operators: =, !=, =~, !~.

Regexes run on RE2 (linear time, Go's syntax, as Alertmanager does): a pattern cannot
backtrack for minutes, `(?i)` and the other Go flags work, and a pattern is anchored at
both ends. Patterns longer than `MAX_PATTERN` characters are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

import re2
from pydantic import BaseModel, ConfigDict, model_validator

Op = Literal["=", "!=", "=~", "!~"]
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$')
# Longer than any real matcher; keeps compile time and RE2's program memory small.
MAX_PATTERN = 1024
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 8 << 20  # a pattern whose program needs more is refused
_RE2_OPTIONS.log_errors = False


def compile_anchored(pattern: str) -> Any:
    """RE2 program for `^(?:pattern)$`; ValueError naming the problem."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"regular expression longer than {MAX_PATTERN} characters")
    try:
        return re2.compile(f"^(?:{pattern})$", _RE2_OPTIONS)
    except re2.error as e:
        raise ValueError(f"invalid regular expression {pattern!r}: {e}") from e


class Matcher(BaseModel):
    """One label matcher; regexes are anchored like Alertmanager's."""

    model_config = ConfigDict(frozen=True)

    name: str
    op: Op = "="
    value: str

    @model_validator(mode="after")
    def _regex_compiles(self) -> Matcher:
        if self.op in ("=~", "!~"):
            compile_anchored(self.value)
        elif len(self.value) > MAX_PATTERN:
            raise ValueError(f"matcher value longer than {MAX_PATTERN} characters")
        return self

    @cached_property
    def _regex(self) -> Any:
        return compile_anchored(self.value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return whether the labels satisfy this matcher (a missing label is the empty string)."""
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        hit = self._regex.search(got) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse `name=value`, `name!="v"`, `name=~"re.*"`; raise ValueError with the reason."""
        if len(text) > MAX_PATTERN + 300:
            raise ValueError(f"matcher longer than {MAX_PATTERN + 300} characters")
        m = _MATCHER.match(text)
        if not m:
            raise ValueError(
                f"bad matcher {text!r}: "
                "expected name=value, name!=value, name=~regex or name!~regex"
            )
        name, op, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        # Validated, not cast: the regex only lets the four operators through anyway.
        return cls.model_validate({"name": name, "op": op, "value": value})


def matches_all(matchers: tuple[Matcher, ...] | list[Matcher], labels: Mapping[str, str]) -> bool:
    """Return whether every matcher matches (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)


_PROBES = ("wk-probe-7f3a9c", "0")


def silences_everything(matchers: tuple[Matcher, ...] | list[Matcher]) -> bool:
    """Whether these matchers would match (nearly) any alert, e.g. `alertname=~".+"`."""
    names = {m.name for m in matchers}
    return any(matches_all(matchers, dict.fromkeys(names, probe)) for probe in _PROBES)
