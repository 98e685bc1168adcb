"""Trust that must not outlive a reload or a proxy (issue 17, Medium #4 and #9).

Over real HTTP: the Supervisor runs in-process (uvicorn, SQLite) on a free port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml
from test_api import TOKENS, running


async def login(c: httpx.AsyncClient, token: str) -> httpx.Response:
    form = (await c.get("/login")).text
    nonce = form.split('name="nonce" value="')[1].split('"')[0]
    return await c.post("/login", data={"token": token, "nonce": nonce, "next": "/approvals"})


def with_tokens(config: Path, tokens: list[dict[str, str]]) -> None:
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["auth"]["tokens"] = tokens
    config.write_text(yaml.safe_dump(data))


async def test_a_reload_reaches_open_console_sessions(tmp_path: Path) -> None:
    async with running(tmp_path, TOKENS) as d:
        base = str(d.http.base_url)
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            assert (await login(c, "responder-token")).status_code == 303
            page = (await c.get("/approvals")).text
            assert '<span class="role">responder</span>' in page
            config = tmp_path / "watchkeeper.yaml"
            tokens = TOKENS["auth"]["tokens"]
            # rory is demoted to viewer: the open session is a viewer's on the next request.
            with_tokens(
                config, [{**t, "role": "viewer"} if t["name"] == "rory" else t for t in tokens]
            )
            await d.supervisor.reload()
            page = (await c.get("/approvals")).text
            assert '<span class="role">viewer</span>' in page
            # rory's token is removed: the session ends.
            with_tokens(config, [t for t in tokens if t["name"] != "rory"])
            await d.supervisor.reload()
            r = await c.get("/approvals")
            assert r.status_code == 303
            assert r.headers["location"].startswith("/login")
