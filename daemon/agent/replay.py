"""A real Prometheus over recorded metric history, for replaying incidents.

Each history (OpenMetrics text) becomes TSDB blocks through `promtool tsdb
create-blocks-from openmetrics`; one Prometheus then serves them all from a temp dir on a
free loopback port. Histories that overlap in time would answer each other's fleet-wide
queries, so `windows_overlap` lets the caller split them over several servers.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"
LOOPBACK = "127.0.0.1"
INSTALL_HINT = "install the Debian package `prometheus` (it ships prometheus and promtool)"


class ReplayError(Exception):
    """The replay Prometheus could not be built or started; the message says why."""


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ReplayError(f"{name} not found on PATH: {INSTALL_HINT}")
    return path


def history_window(openmetrics: Path) -> tuple[float, float]:
    """The first and last sample timestamp (seconds) of an OpenMetrics file."""
    lo, hi = float("inf"), float("-inf")
    with openmetrics.open() as f:
        for line in f:
            if not line or line[0] == "#":
                continue
            parts = line.rsplit(" ", 2)
            if len(parts) == 3:
                try:
                    ts = float(parts[2])
                except ValueError:
                    continue
                lo, hi = min(lo, ts), max(hi, ts)
    if lo == float("inf"):
        raise ReplayError(f"{openmetrics}: no timestamped samples")
    return lo, hi


def windows_overlap(a: tuple[float, float], b: tuple[float, float], margin: float) -> bool:
    """Whether two windows come within `margin` seconds of each other."""
    return a[0] - margin <= b[1] and b[0] - margin <= a[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class ReplayPrometheus:
    """`with ReplayPrometheus(histories) as prom:` — a Prometheus serving them at `prom.url`."""

    def __init__(self, histories: list[Path], *, start_timeout: float = 60.0) -> None:
        self.histories = histories
        self.start_timeout = start_timeout
        self.url = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ReplayPrometheus:
        self._tmp = tempfile.TemporaryDirectory(prefix="watchkeeper-eval-")
        try:
            self._start(Path(self._tmp.name))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self, root: Path) -> None:
        promtool, prometheus = _binary(PROMTOOL), _binary(PROMETHEUS)
        data = root / "data"
        data.mkdir()
        for history in self.histories:
            done = subprocess.run(
                [promtool, "tsdb", "create-blocks-from", "openmetrics", str(history), str(data)],
                capture_output=True,
                timeout=120,
                check=False,
            )
            if done.returncode != 0:
                msg = (done.stderr or done.stdout).decode(errors="replace").strip()[-800:]
                raise ReplayError(f"promtool could not read {history}: {msg}")
        config = root / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
        port = _free_port()
        self.url = f"http://{LOOPBACK}:{port}"
        self._log = (root / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address={LOOPBACK}:{port}",
                "--query.lookback-delta=5m",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = (root / "prometheus.log").read_text(errors="replace")[-800:]
                raise ReplayError(f"prometheus exited with {self._proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise ReplayError(f"prometheus did not become ready in {self.start_timeout:.0f}s")

    def close(self) -> None:
        """Stop Prometheus and remove its temp dir."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None
        if hasattr(self, "_log"):
            self._log.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def utc(ts: float) -> datetime:
    """A Unix timestamp as an aware datetime."""
    return datetime.fromtimestamp(ts, UTC)
