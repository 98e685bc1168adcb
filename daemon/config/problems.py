"""Pydantic validation errors as `path: reason` lines, the one way every refusal names a problem.

Config files, runbooks, alert payloads, request bodies and the agent's tool arguments all
report through here, so a user reads the same shape everywhere: `alerts[0].labels: ...`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

_PREFIX = re.compile(r"^(Value error|Assertion failed), ")


def where(loc: Iterable[int | str], prefix: str = "", skip: Collection[str] = ()) -> str:
    """A pydantic error location as a path: `prefix.field[0].name` (parts in `skip` left out)."""
    out = prefix
    for part in loc:
        if isinstance(part, str) and part in skip:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def reason(err: Mapping[str, Any], noun: str | None = None) -> str:
    """What is wrong, without pydantic's `Value error, ` prefix.

    With a `noun` ("field", "setting"), a missing or unknown one is said in plain words with
    what to do; without, pydantic's own message stays.
    """
    kind, msg = err["type"], str(err["msg"])
    if kind == "json_invalid":
        return f"malformed JSON ({err.get('ctx', {}).get('error', 'invalid')})"
    if noun and kind == "extra_forbidden":
        return f"unknown {noun}; remove it or check its spelling"
    if noun and kind == "missing":
        return f"required {noun} is missing"
    return _PREFIX.sub("", msg)


def located(
    errors: Iterable[Mapping[str, Any]],
    *,
    prefix: str = "",
    empty: str = "body",
    noun: str | None = None,
    skip: Collection[str] = (),
) -> list[tuple[str, str]]:
    """Each error as (path, reason); `empty` names the path of an error about the whole input."""
    return [(where(e["loc"], prefix, skip) or empty, reason(e, noun)) for e in errors]


def problems(
    errors: Iterable[Mapping[str, Any]],
    *,
    prefix: str = "",
    empty: str = "body",
    noun: str | None = None,
    skip: Collection[str] = (),
) -> list[str]:
    """Each error as one `path: reason` line (see `located`)."""
    located_ = located(errors, prefix=prefix, empty=empty, noun=noun, skip=skip)
    return [f"{path}: {why}" for path, why in located_]
