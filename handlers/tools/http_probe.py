"""`http_probe`: GET an allowlisted URL; report status, latency and certificate expiry."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from urllib.parse import SplitResult, unquote, urlsplit

import httpx

from daemon.domain.investigation_model import Fact
from daemon.runbooks.tools import (
    HttpProbeArgs,
    ToolContext,
    ToolResult,
    error,
)

BODY_CHARS = 2048
_DEFAULT_PORT = {"http": 80, "https": 443}


class UrlAllowlist:
    """URL patterns `scheme://host-glob[:port]/path-glob`; a URL must match one of them."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = [urlsplit(p) for p in patterns]

    def allows(self, url: str) -> bool:
        """Whether `url` matches a pattern (scheme and port exactly, host and path by glob)."""
        try:
            u = urlsplit(url)
            port = u.port or _DEFAULT_PORT.get(u.scheme)
        except ValueError:
            return False
        if u.username or u.password or not u.hostname or u.scheme not in _DEFAULT_PORT:
            return False
        # /health/../admin matches /health/* as text but is /admin to the server.
        segments = unquote(u.path).replace("\\", "/").split("/")
        if any(seg in (".", "..") for seg in segments):
            return False
        return any(self._match(p, u, port) for p in self.patterns)

    @staticmethod
    def _match(p: SplitResult, u: SplitResult, port: int | None) -> bool:
        if p.scheme != u.scheme or not p.hostname or u.hostname is None:
            return False
        if (p.port or _DEFAULT_PORT[p.scheme]) != port:
            return False
        if not fnmatchcase(u.hostname.lower(), p.hostname.lower()):
            return False
        return fnmatchcase(u.path or "/", p.path or "/*")


async def cert_days_left(
    host: str, port: int, wait: float, now: datetime
) -> tuple[float | None, str]:
    """Days until the served certificate expires (it must verify), or (None, why not)."""
    ctx = ssl.create_default_context()
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=host), wait
        )
    except ssl.SSLCertVerificationError as e:
        return None, f"certificate does not verify: {e.verify_message}"
    except (OSError, TimeoutError, ssl.SSLError) as e:
        return None, f"TLS handshake failed: {e}"
    try:
        sslobj = writer.get_extra_info("ssl_object")
        cert = sslobj.getpeercert() if sslobj else None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if not cert or "notAfter" not in cert:
        return None, "no certificate presented"
    expires = ssl.cert_time_to_seconds(str(cert["notAfter"]))
    return round((expires - now.astimezone(UTC).timestamp()) / 86400, 2), ""


class HttpProbe:
    """Probe allowlisted URLs only; a URL taken from alert labels is checked like any other."""

    name = "http_probe"
    args = HttpProbeArgs

    def __init__(self, allow: list[str], timeout: float) -> None:
        self.allowlist = UrlAllowlist(allow)
        self.timeout = timeout

    async def run(self, args: HttpProbeArgs, ctx: ToolContext) -> ToolResult:
        """GET the URL without following redirects."""
        if not self.allowlist.allows(args.url):
            return error(
                ctx.now,
                f"{args.url} is not in agent.tools.http_probe_allow; not probed",
                status="refused",
            )
        started = time.monotonic()
        facts: dict[str, Fact] = {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                resp = await client.get(args.url, headers={"User-Agent": "watchkeeper-probe"})
        except httpx.HTTPError as e:
            facts = {
                "ok": False,
                "http_status": 0,
                "latency_seconds": round(time.monotonic() - started, 3),
            }
            return ToolResult(
                status="ok",
                observed_at=ctx.now,
                summary=f"GET {args.url} failed: {type(e).__name__}: {e}",
                facts=facts,
            )
        latency = round(time.monotonic() - started, 3)
        facts = {
            "ok": resp.status_code < 400,
            "http_status": resp.status_code,
            "latency_seconds": latency,
        }
        summary = f"GET {args.url} -> {resp.status_code} in {latency:.3f}s"
        u = urlsplit(args.url)
        if u.scheme == "https" and u.hostname:
            days, why = await cert_days_left(u.hostname, u.port or 443, self.timeout, ctx.now)
            facts["cert_days_left"] = days
            summary += (
                f"; certificate expires in {days:.1f} days" if days is not None else f"; {why}"
            )
        return ToolResult(
            status="ok",
            observed_at=ctx.now,
            summary=summary,
            facts=facts,
            data={
                "status": resp.status_code,
                "headers": {
                    k: v
                    for k, v in resp.headers.items()
                    if k.lower() in ("content-type", "server", "location", "retry-after")
                },
                "body": resp.text[:BODY_CHARS],
            },
        )
