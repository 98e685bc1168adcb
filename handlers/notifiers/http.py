"""Posting JSON to a platform and turning its answer into `SendError` when it refuses."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

from daemon.notify.pipeline import SendError

USER_AGENT = "watchkeeper-notifier/0.1"
# Answers worth trying again: the platform was busy, slow or briefly broken.
RECOVERABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), if present."""
    raw = resp.headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    if raw.replace(".", "", 1).isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def refusal(resp: httpx.Response, platform: str, platform_error: str = "") -> SendError:
    """The SendError for a non-2xx answer, keeping the platform's own error text."""
    text = platform_error or resp.text.strip()[:500]
    return SendError(
        f"{platform} answered HTTP {resp.status_code}" + (f": {text}" if text else ""),
        recoverable=resp.status_code in RECOVERABLE_STATUS,
        status=resp.status_code,
        platform_error=text,
        retry_after=retry_after(resp) if resp.status_code in (429, 503) else None,
    )


class Connection:
    """One HTTP client a channel reuses for every message (keep-alive, TLS set up once)."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def client(self, timeout: float) -> httpx.AsyncClient:
        """The channel's client, made at first use (inside the running loop)."""
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        """Close the client and its pooled connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def post(
    url: str,
    platform: str,
    timeout: float,  # noqa: ASYNC109 - passed to httpx, which enforces it
    *,
    via: Connection,
    json: Any = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST on the channel's connection and return the response; transport failures become
    recoverable SendErrors.

    The URL is never put into an error: webhook URLs are secrets.
    """
    hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
    try:
        return await via.client(timeout).post(url, json=json, content=content, headers=hdrs)
    except httpx.TimeoutException:
        raise SendError(
            f"{platform} did not answer within {timeout:g}s", recoverable=True
        ) from None
    except httpx.HTTPError as e:
        raise SendError(f"cannot reach {platform}: {type(e).__name__}", recoverable=True) from None
