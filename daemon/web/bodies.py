"""Request bodies read only after the caller is known: the route authenticates, then parses."""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import parse_qs

from fastapi import Request
from pydantic import BaseModel, ValidationError

from daemon.config.problems import problems
from daemon.domain import Rejected

M = TypeVar("M", bound=BaseModel)
# A console form is a few short fields; anything larger is refused as it streams in.
FORM_BYTES = 16_384


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


def documented(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring a JSON body of `model` for a route that reads it itself."""
    schema = model.model_json_schema()  # OpenAPI 3.1 takes JSON Schema, $defs and all
    return {"requestBody": {"content": {"application/json": {"schema": schema}}}}


async def form_body(request: Request) -> dict[str, str]:
    """A console form's fields, read as it streams and refused (413) past FORM_BYTES."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_BYTES:
            raise Rejected(f"form larger than {FORM_BYTES} bytes", 413)
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}
