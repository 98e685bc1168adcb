"""The model: any OpenAI-compatible chat-completions endpoint, through `openai.AsyncOpenAI`.

The client retries with exponential backoff (`llm.max_retries`) and enforces timeouts;
a call that still fails raises `ModelError`, which the loop records as LLMFailed.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

from pydantic import BaseModel, ConfigDict

from daemon.config.agent import LLMConfig
from daemon.domain.investigation_model import ToolCallSpec, Usage

if TYPE_CHECKING:
    import openai

log = logging.getLogger("watchkeeper.agent.llm")


class Reply(BaseModel):
    """The model's answer to one request."""

    model_config = ConfigDict(frozen=True)

    message: str
    tool_calls: tuple[ToolCallSpec, ...] = ()
    usage: Usage
    model: str
    finish_reason: str = ""
    seconds: float = 0.0


class ModelError(Exception):
    """The model could not be reached or gave no usable answer (after retries)."""


class ChatModel(Protocol):
    """Something that answers chat-completion requests."""

    model: str

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> Reply:
        """One request; raise ModelError on failure."""

    def cost(self, usage: Usage) -> float:
        """Estimated cost of a call with this usage."""


def _estimate_tokens(messages: list[dict[str, Any]]) -> int:
    # Servers that report no usage still count against the budget: ~4 characters a token.
    return sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1


class OpenAIChat:
    """ChatModel over `openai.AsyncOpenAI` (base_url, key, timeouts, retries with backoff)."""

    def __init__(self, cfg: LLMConfig, api_key: str) -> None:
        # Imported here: the package takes half a second to import, and a daemon without a
        # model configured (the default) never needs it.
        import openai

        self._error: type[Exception] = openai.OpenAIError
        self.cfg = cfg
        self.model = cfg.model
        self.client: openai.AsyncOpenAI = openai.AsyncOpenAI(
            base_url=cfg.base_url,
            api_key=api_key or "none",
            timeout=cfg.timeout.total_seconds(),
            max_retries=cfg.max_retries,
        )

    def cost(self, usage: Usage) -> float:
        """Estimated cost from the configured prices per 1000 tokens."""
        return self.cfg.cost(usage.prompt_tokens, usage.completion_tokens)

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> Reply:
        """Send one chat-completions request."""
        kwargs: dict[str, Any] = {"model": self.cfg.model, "messages": messages}
        if self.cfg.temperature is not None:
            kwargs["temperature"] = self.cfg.temperature
        if self.cfg.max_tokens is not None:
            kwargs["max_tokens"] = self.cfg.max_tokens
        if tools:
            kwargs["tools"] = tools
            kwargs["tool_choice"] = "auto"
        started = time.monotonic()
        try:
            resp = await self.client.chat.completions.create(**kwargs)
        except self._error as e:
            raise ModelError(f"{type(e).__name__}: {e}") from e
        seconds = time.monotonic() - started
        if not resp.choices:
            raise ModelError("the model returned no choices")
        choice = resp.choices[0]
        msg = choice.message
        calls = []
        for tc in msg.tool_calls or []:
            fn = getattr(tc, "function", None)
            if fn is None:
                continue
            calls.append(ToolCallSpec(id=tc.id, name=fn.name, arguments=fn.arguments or "{}"))
        if resp.usage is not None:
            usage = Usage(
                prompt_tokens=resp.usage.prompt_tokens,
                completion_tokens=resp.usage.completion_tokens,
            )
        else:
            usage = Usage(
                prompt_tokens=_estimate_tokens(messages),
                completion_tokens=len(msg.content or "") // 4 + 1,
            )
        return Reply(
            message=cast(str, msg.content or ""),
            tool_calls=tuple(calls),
            usage=usage,
            model=resp.model or self.cfg.model,
            finish_reason=str(choice.finish_reason or ""),
            seconds=round(seconds, 3),
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.close()
