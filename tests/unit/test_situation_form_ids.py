"""The console's link form reads incident ids as people paste them (the browser test in
tests/browser/test_console_situations.py drives the forms themselves)."""

from __future__ import annotations

from uuid import UUID

import pytest

from daemon.domain import Rejected
from daemon.web.console_situations import MAX_IDS, incident_ids

A = UUID("5b0c3f7e-0000-4000-8000-000000000001")
B = UUID("5b0c3f7e-0000-4000-8000-000000000002")


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        (f"{A}", (A,)),
        (f"{A}, {B}", (A, B)),
        (f"  {A}\n{B}\n", (A, B)),
        (f"{A};{A} {B}", (A, B)),  # a repeat counts once
        (f"http://127.0.0.1:9797/incidents/{B}/ {A}", (B, A)),  # a pasted console URL
    ],
)
def test_ids_as_pasted(text: str, ids: tuple[UUID, ...]) -> None:
    assert incident_ids(text) == ids


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "name at least one incident"),
        (" ,; ", "name at least one incident"),
        (f"{A} web1", "'web1' is not an incident id"),
        (" ".join(str(UUID(int=i)) for i in range(MAX_IDS + 1)), f"at most {MAX_IDS}"),
    ],
)
def test_what_is_refused_says_why(text: str, reason: str) -> None:
    with pytest.raises(Rejected) as e:
        incident_ids(text)
    assert reason in e.value.reason
    assert e.value.status == 422
