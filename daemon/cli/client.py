"""The one HTTP client every `watchkeeper` command talks to the daemon through, and its output."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape

out = Console()
err = Console(stderr=True)

# Exit codes (README, "Command line"): 0 done, 1 refused (the daemon said no, or a check
# found problems), 2 usage (bad options or configuration), 3 the daemon is unreachable.
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class Client:
    """Where the daemon is, how to authenticate, and how to print replies."""

    def __init__(self) -> None:
        self.url = "http://127.0.0.1:9797"
        self.token: str | None = None
        self.json = False
        self.output = "table"  # or json, yaml
        self.timeout = 10.0

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """The daemon's JSON answer (exits with the daemon's reason on an error)."""
        r = self._send(method, path, **kw)
        return r.json() if r.content else {}

    def request_text(self, method: str, path: str, **kw: Any) -> str:
        """The daemon's answer as text (an export)."""
        return self._send(method, path, **kw).text

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = httpx.request(method, self.url + path, headers=headers, timeout=self.timeout, **kw)
        except httpx.HTTPError as e:
            fail(
                f"cannot reach watchkeeper at {self.url} ({e.__class__.__name__}: {e}). "
                "Is the daemon running? Set --url or WATCHKEEPER_URL.",
                EXIT_UNREACHABLE,
            )
        if r.status_code >= 400:
            try:
                msg = r.json().get("error", r.text)
            except ValueError:
                msg = r.text
            hint = ""
            if r.status_code == 401:
                hint = " (set WATCHKEEPER_TOKEN or --token / --token-file)"
            fail(f"{method} {path} -> {r.status_code}: {msg}{hint}")
        return r


client = Client()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error for a person and exit."""
    # The message is data (server replies, paths, regexes): never markup, never wrapped.
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# Every list of the API is paged (issue 17): `--limit` and `--cursor` on each list command.
LimitOpt = Annotated[
    int | None, typer.Option("--limit", help="Page size (default: limits.page_size)")
]
CursorOpt = Annotated[
    str | None, typer.Option("--cursor", help="Next page: the cursor the last page printed")
]


def page_params(limit: int | None, cursor: str | None) -> dict[str, Any]:
    """The query of one page."""
    return {**({"limit": limit} if limit else {}), **({"cursor": cursor} if cursor else {})}


def next_hint(data: dict[str, Any]) -> str:
    """Where the next page is, for a table's title ("" on the last page)."""
    return f"; next page: --cursor '{data['next']}'" if data.get("next") else ""


def every_page(path: str, key: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Every item of a paged list (`key` of each page), following `next`."""
    query: dict[str, Any] = {**(params or {}), "limit": 1000}
    found: list[Any] = []
    while True:
        data = client.request("GET", path, params=query)
        found += data[key]
        if not data.get("next"):
            return found
        query["cursor"] = data["next"]


def resolve_id(prefix: str, ids: Callable[[], Iterable[str]], noun: str, command: str) -> str:
    """The one full id starting with `prefix` among `ids()` (asked only for a short prefix)."""
    if len(prefix) == 36:
        return prefix
    hits = [i for i in ids() if i.startswith(prefix)]
    if not hits:
        fail(f"no {noun} id starts with {prefix!r}; see `watchkeeper {command}`")
    if len(hits) > 1:
        fail(f"{prefix!r} matches {len(hits)} {noun}s; give more characters")
    return str(hits[0])


def emit(data: Any) -> bool:
    """Print `data` as JSON or YAML when asked (`-o json|yaml`, `--json`); say whether it did."""
    if client.output == "yaml":
        import yaml

        typer.echo(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False))
        return True
    if client.json or client.output == "json":
        out.print_json(json.dumps(data, default=str))
        return True
    return False


def age(ts: str | None) -> str:
    """How long ago an ISO timestamp was, for tables (`3m`, `2h`)."""
    if not ts:
        return "-"
    secs = int((datetime.now(UTC) - datetime.fromisoformat(ts)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"
