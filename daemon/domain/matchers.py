"""Label matchers with Alertmanager's four operators: =, !=, =~, !~."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

Op = Literal["=", "!=", "=~", "!~"]
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$')


class Matcher(BaseModel):
    """One label matcher; regexes are anchored like Alertmanager's."""

    model_config = ConfigDict(frozen=True)

    name: str
    op: Op = "="
    value: str

    @model_validator(mode="after")
    def _regex_compiles(self) -> Matcher:
        if self.op in ("=~", "!~"):
            try:
                re.compile(self.value)
            except re.error as e:
                raise ValueError(f"invalid regular expression {self.value!r}: {e}") from e
        return self

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        return re.compile(f"^(?:{self.value})$")

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return whether the labels satisfy this matcher (a missing label is the empty string)."""
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        hit = self._regex.match(got) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse `name=value`, `name!="v"`, `name=~"re.*"`; raise ValueError with the reason."""
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
