"""Request bodies read only after the caller is known: the route authenticates, then parses."""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from daemon.config.problems import problems
from daemon.domain import Rejected

M = TypeVar("M", bound=BaseModel)


async def json_body(request: Request, model: type[M]) -> M:
    """The body validated as `model` (an empty body is `{}`); 422 naming each problem."""
    raw = await request.body()
    if not raw.strip():
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        lines = problems(e.errors(include_url=False), noun="field")
        raise Rejected("invalid request body: " + "; ".join(lines), 422) from None
