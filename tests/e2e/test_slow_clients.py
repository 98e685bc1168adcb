"""Slow clients cannot starve the daemon of file descriptors (issue 17, Medium #7).

The daemon runs as a process under `prlimit --nofile=160` (the audit's setting); 220
slowloris connections each send a request one header byte at a time. Each is cut off
at `http.read_timeout` (408 then close), so `/readyz` and intake keep answering."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
import realstack

from daemon.config.settings import HttpConfig

SLOW = 220


async def _slowloris(port: int, stop: asyncio.Event, cut: list[bytes]) -> None:
    """Hold one connection open with a request that never completes; note what ends it."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    try:
        writer.write(b"POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\n")
        while not stop.is_set():
            writer.write(b"X")  # one byte of an endless header, every half second
            await writer.drain()
            try:
                got = await asyncio.wait_for(reader.read(4096), 0.5)
            except TimeoutError:
                continue
            cut.append(got or b"EOF")
            return
    except OSError:
        cut.append(b"RESET")
    finally:
        writer.close()


async def _answers(url: str) -> bool:
    async with httpx.AsyncClient(timeout=2.0) as http:
        try:
            ready = await http.get(f"{url}/readyz")
            posted = await http.post(
                f"{url}/api/v2/alerts", json=[{"labels": {"alertname": "StillServing"}}]
            )
        except httpx.HTTPError:
            return False
        return ready.status_code == 200 and posted.status_code == 200


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
async def test_slowloris_connections_are_cut_and_the_daemon_keeps_answering(
    tmp_path: Path,
) -> None:
    wk = realstack.Watchkeeper(
        tmp_path,
        f"sqlite:///{tmp_path}/events.db",
        {"http": {"read_timeout": "2s"}},
    )
    assert wk.child is not None
    wk.child.argv = ["prlimit", "--nofile=160:160", "--", *wk.child.argv]
    wk.start()
    stop = asyncio.Event()
    cut: list[bytes] = []
    try:
        attack = [asyncio.create_task(_slowloris(wk.port, stop, cut)) for _ in range(SLOW)]
        await asyncio.sleep(1.0)  # all connected, all trickling
        started = time.monotonic()
        # Within the read timeout and a little, the server has cut the slow ones and answers.
        while not await _answers(wk.url):
            assert time.monotonic() - started < 8, (
                f"/readyz or intake not answering with {SLOW} slow clients; "
                f"{len(cut)} cut so far\n{wk.log_tail()}"
            )
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)
        assert len(cut) >= SLOW - 160, f"only {len(cut)} slow connections were cut"
        assert any(c.startswith(b"HTTP/1.1 408") for c in cut)
        stop.set()
        await asyncio.gather(*attack)
    finally:
        stop.set()
        wk.stop()


def test_the_unit_sets_a_file_limit_above_the_connection_cap() -> None:
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "watchkeeper.service").read_text()
    found = re.search(r"^LimitNOFILE=(\d+)$", unit, re.M)
    assert found is not None, "LimitNOFILE= missing from systemd/watchkeeper.service"
    assert int(found[1]) > HttpConfig().max_connections + 500
