"""JSON Schema for action parameters, with `pattern` anchored where it says so.

jsonschema runs `pattern` through Python's `re.search`, whose `$` also matches before a
trailing newline: `'^[a-z]+$'` accepts `"nginx\\n"`, and the newline reaches an argv or a
URL. Here `pattern` runs on RE2, where `$` is the end of the text (as in ECMA-262 and Go);
a pattern RE2 cannot run (lookaround, backreferences) falls back to Python's engine and
then refuses a value ending in a newline if the pattern uses `$`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import re2
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

_OPTIONS = re2.Options()
_OPTIONS.max_mem = 8 << 20
_OPTIONS.log_errors = False


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error:
        return None


def pattern_matches(pattern: str, text: str) -> bool:
    """Whether `text` matches `pattern` (searched, `$` only at the very end)."""
    program = _compiled(pattern)
    if program is not None:
        return program.search(text) is not None
    if text.endswith("\n") and "$" in pattern:
        return False
    return re.search(pattern, text) is not None


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not pattern_matches(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


ParamsValidator: Any = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _pattern}
)
