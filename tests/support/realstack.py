"""Real components for integration tests and benchmarks: Prometheus, Alertmanager,
PostgreSQL, a tiny metrics exporter, and watchkeeper itself as a child process.

Everything listens on 127.0.0.1 on a free port and keeps its files in a temp dir. A
component that cannot be had (binary not installed) raises `Unavailable`, which test
fixtures turn into a skip with the reason. This module does not import pytest, so
`bench/` can use it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import yaml

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
LOOPBACK = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class Unavailable(Exception):  # noqa: N818 - reads as a condition
    """A real component this test needs is not installed or cannot start here."""


class _Component(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


C = TypeVar("C", bound=_Component)


class Starter(Protocol):
    """What the `started` fixture (tests/conftest.py) gives a test: make a component
    (a broker, a server), start it, stop it after the test, skip if not installed."""

    def __call__(self, make: Callable[[], C]) -> C: ...


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll `probe` until it returns something; raise on deadline.

    None, False and an empty collection or string mean "not yet": a probe that reads a list
    from the API (dead letters, alerts) must not succeed on the empty list it sees before
    the thing it waits for is recorded.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            got = probe()
        except (httpx.HTTPError, OSError) as e:
            got, last_error = None, e
        if _arrived(got):
            return got
        if time.monotonic() > deadline:
            extra = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def _arrived(got: object) -> bool:
    if got is None or got is False:
        return False
    return not (isinstance(got, str | bytes | list | tuple | dict | set | frozenset) and not got)


def require(binary: str) -> str:
    """The binary's path, or `Unavailable` naming the Debian package to install."""
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        found = shutil.which(Path(binary).name)
        if found is None:
            pkg = {
                "prometheus": "prometheus",
                "prometheus-alertmanager": "prometheus-alertmanager",
            }.get(Path(binary).name, Path(binary).name)
            raise Unavailable(
                f"{binary} is not installed (apt-get install {pkg}; `make test` does)"
            )
        return found
    return binary


# --- child processes -------------------------------------------------------------------


@dataclass
class Child:
    """A child process with its output in a log file; stopped for good by `stop()`."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart) the process, appending its output to the log file."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self.proc.pid})")
        with self.log_path.open("ab") as out:
            out.write(f"--- start {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                # Its own process group, so a Ctrl-C in the test run does not reach it first.
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise with the log tail if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def kill(self) -> None:
        """SIGKILL and reap: the crash the daemon must survive."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the process's output, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _http_ok(url: str, auth: tuple[str, str] | None = None) -> bool:
    return httpx.get(url, timeout=2.0, auth=auth).status_code == 200


def _serving(child: Child, url: str, auth: tuple[str, str] | None = None) -> bool:
    """True once `url` answers 200; raises if the process died meanwhile."""
    child.check_alive()
    return _http_ok(url, auth)


# --- Alertmanager ----------------------------------------------------------------------


@dataclass
class Alertmanager:
    """A real Alertmanager (clustering off) on a free loopback port."""

    child: Child
    port: int

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://{LOOPBACK}:{self.port}"


def start_alertmanager(
    workdir: Path, config: dict[str, Any], timeout: float = 60.0
) -> Alertmanager:
    """Start Alertmanager with `config` (a dict written as YAML); wait until /-/ready."""
    binary = require(ALERTMANAGER)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "alertmanager.yml"
    cfg.write_text(yaml.safe_dump(config))
    port = free_port()
    child = Child(
        "alertmanager",
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--cluster.listen-address=",
            "--log.level=info",
        ],
        workdir / "alertmanager.log",
    )
    child.start()
    am = Alertmanager(child, port)
    try:
        wait_for(
            lambda: _serving(child, f"{am.url}/-/ready"),
            timeout=timeout,
            what="Alertmanager /-/ready",
        )
    except BaseException:
        child.stop()
        raise
    return am


# --- Prometheus ------------------------------------------------------------------------


@dataclass
class Prometheus:
    """A real Prometheus on a free loopback port (lifecycle API on)."""

    child: Child
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://{LOOPBACK}:{self.port}"

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus's own view of its alerts (GET /api/v1/alerts)."""
        data: dict[str, Any] = httpx.get(f"{self.url}/api/v1/alerts", timeout=5).json()
        alerts: list[dict[str, Any]] = data["data"]["alerts"]
        return alerts


def start_prometheus(
    workdir: Path,
    config: dict[str, Any],
    rules: dict[str, Any] | None = None,
    timeout: float = 60.0,
    *,
    web_config: dict[str, Any] | None = None,
    auth: tuple[str, str] | None = None,
) -> Prometheus:
    """Start Prometheus with `config` (+ a rules file, + a `--web.config.file` such as
    basic auth, for which `auth` is what the readiness check sends); wait until /-/ready."""
    binary = require(PROMETHEUS)
    workdir.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    if rules is not None:
        rules_file = workdir / "rules.yml"
        rules_file.write_text(yaml.safe_dump(rules))
        config["rule_files"] = [str(rules_file)]
    cfg = workdir / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config))
    port = free_port()
    child = Child(
        "prometheus",
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--web.enable-lifecycle",
            "--rules.alert.resend-delay=1s",
            "--log.level=info",
        ],
        workdir / "prometheus.log",
    )
    if web_config is not None:
        web = workdir / "web.yml"
        web.write_text(yaml.safe_dump(web_config))
        child.argv.append(f"--web.config.file={web}")
    child.start()
    prom = Prometheus(child, port, workdir)
    try:
        wait_for(
            lambda: _serving(child, f"{prom.url}/-/ready", auth),
            timeout=timeout,
            what="Prometheus /-/ready",
        )
    except BaseException:
        child.stop()
        raise
    return prom


# --- a tiny exporter whose value the test flips ------------------------------------------


class Exporter:
    """Serves one gauge in the Prometheus text format; `value` can be changed at any time."""

    def __init__(self, metric: str, value: float = 1.0) -> None:
        self.metric = metric
        self.value = value
        self.scrapes = 0
        exporter = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (
                    f"# TYPE {exporter.metric} gauge\n{exporter.metric} {exporter.value}\n"
                ).encode()
                exporter.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every second would drown the test output

        self.server = ThreadingHTTPServer((LOOPBACK, 0), _Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="exporter", daemon=True
        )
        self.thread.start()

    @property
    def address(self) -> str:
        """host:port to scrape."""
        return f"{LOOPBACK}:{self.server.server_address[1]}"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


# --- watchkeeper as a child process ------------------------------------------------------


def watchkeeper_argv(config: Path) -> list[str]:
    """How to start the daemon: the venv's console script, else `python -c main()`."""
    script = Path(sys.executable).with_name("watchkeeper")
    if script.exists():
        return [str(script), "run", "--config", str(config)]
    return [
        sys.executable,
        "-c",
        "from daemon.cli.main import main; main()",
        "run",
        "--config",
        str(config),
    ]


@dataclass
class Watchkeeper:
    """A watchkeeper daemon process on a free loopback port, restartable on the same store."""

    workdir: Path
    store: str
    settings: dict[str, Any] = field(default_factory=dict)
    port: int = 0
    child: Child | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config: dict[str, Any] = {
            "store": self.store,
            "state_dir": str(self.workdir),
            "http": {"listen": f"{LOOPBACK}:{self.port}"},
            "logging": {"level": "info"},
        }
        for key, value in self.settings.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        self.config_path = self.workdir / "watchkeeper.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHKEEPER_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("PYTHONPATH", str(REPO))
        self.child = Child(
            "watchkeeper",
            watchkeeper_argv(self.config_path),
            self.workdir / "watchkeeper.log",
            env,
            REPO,
        )

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def _child(self) -> Child:
        assert self.child is not None
        return self.child

    def start(self, timeout: float = 90.0) -> None:
        """Start the process and wait for /readyz (state rebuilt, HTTP serving)."""
        self._child.start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait for /readyz to answer 200; raise with the log tail if the process died."""
        child = self._child
        try:
            wait_for(
                lambda: _serving(child, f"{self.url}/readyz"),
                timeout=timeout,
                what="watchkeeper /readyz",
                interval=0.05,
            )
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{child.log_tail()}") from None

    def kill(self) -> None:
        """kill -9."""
        self._child.kill()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (drain), then SIGKILL after `timeout`."""
        return self._child.stop(timeout)

    def log_tail(self, lines: int = 40) -> str:
        """The daemon's recent output."""
        return self._child.log_tail(lines)

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON API path (loopback clients are admin when no tokens are configured)."""
        r = httpx.get(f"{self.url}{path}", params=params, timeout=30)
        r.raise_for_status()
        return r.json()

    def incidents(self, *states: str) -> list[dict[str, Any]]:
        """GET /api/v1/incidents (optionally filtered by state)."""
        params = {"state": list(states)} if states else {}
        found: list[dict[str, Any]] = self.get("/api/v1/incidents", **params)["incidents"]
        return found

    def incident_alerts(self, incident_id: str) -> list[dict[str, Any]]:
        """Every alert of one incident, page by page (the detail holds the first page)."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000}
        while True:
            page = self.get(f"/api/v1/incidents/{incident_id}/alerts", **params)
            out.extend(page["alerts"])
            if not page["next"]:
                return out
            params["cursor"] = page["next"]

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        """The event log after a position (all of it by default), page by page."""
        out: list[dict[str, Any]] = []
        while True:
            page = self.get("/api/v1/events", after=after, limit=1000)
            out.extend(page["events"])
            if not page["events"]:
                return out
            after = page["next"]


# Events that alert intake records. Reactions (investigations, timers, notifications) may
# commit other events at any moment, so "nothing changed" is checked against these.
INTAKE_EVENTS = frozenset(
    {
        "IncidentOpened",
        "AlertFired",
        "AlertUpdated",
        "AlertResolved",
        "AlertSilenced",
        "IncidentResolved",
        "IncidentReopened",
    }
)


def intake_events_after(wk: Watchkeeper, position: int) -> list[dict[str, Any]]:
    """Intake events committed after `position`."""
    return [e for e in wk.events(position) if e["type"] in INTAKE_EVENTS]


# --- PostgreSQL ------------------------------------------------------------------------


@dataclass
class PostgresServer:
    """A PostgreSQL server tests may create schemas in."""

    host: str
    port: int
    dbname: str
    user: str
    kind: str  # "private" (started here) or "shared" (the machine's)

    def url(self, schema: str | None = None) -> str:
        """A `store:` URL, optionally confined to one schema."""
        base = f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"
        return f"{base}?schema={schema}" if schema else base

    def execute(self, sql: str) -> None:
        """Run one statement in autocommit mode."""
        import psycopg

        with psycopg.connect(
            host=self.host,
            port=self.port,
            dbname=self.dbname,
            user=self.user,
            autocommit=True,
            connect_timeout=5,
        ) as conn:
            conn.execute(sql.encode())

    def answers(self) -> bool:
        """Whether the server accepts a query."""
        self.execute("SELECT 1")
        return True

    @contextlib.contextmanager
    def schema(self) -> Iterator[str]:
        """A fresh, uniquely named schema, dropped afterwards."""
        name = f"wk_{uuid.uuid4().hex[:12]}"
        self.execute(f"CREATE SCHEMA {name}")
        try:
            yield name
        finally:
            with contextlib.suppress(Exception):
                self.execute(f"DROP SCHEMA {name} CASCADE")


def _pg_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb refuses to run as root: run the server tools as the postgres OS user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@dataclass
class PostgresControl:
    """A private PostgreSQL a test may stop (as a crash would) and start again, same port."""

    server: PostgresServer
    bindir: Path
    data: Path
    opts: str
    log: Path

    def stop(self) -> None:
        """`pg_ctl -m immediate stop`: the server dies as in a crash (no clean shutdown)."""
        subprocess.run(
            _as_postgres(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                 "stop"]
            ),
            capture_output=True, timeout=60, check=True,
        )

    def start(self) -> None:
        """Start it again on the same port and wait until it answers."""
        subprocess.run(
            _as_postgres(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                 "-t", "60", "-o", self.opts, "start"]
            ),
            capture_output=True, timeout=90, check=True,
        )
        wait_for(self.server.answers, timeout=30, what="private PostgreSQL after restart")


@contextlib.contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    """initdb + pg_ctl a throwaway server on a free port in a temp dir; removed afterwards."""
    with private_postgres_control() as ctl:
        yield ctl.server


@contextlib.contextmanager
def private_postgres_control() -> Iterator[PostgresControl]:
    """Like `private_postgres`, with `stop()`/`start()` for outage tests."""
    bindir = _pg_bin()
    if bindir is None:
        raise Unavailable("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        raise Unavailable("running as root without runuser")
    # Not under pytest's 0700 tmp dirs: the postgres user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="wk-pg-"))
    data = root / "data"
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        init = subprocess.run(
            _as_postgres(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if init.returncode != 0:
            raise Unavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
        port = free_port()
        # fsync off: these tests kill the daemon, never the database server.
        opts = f"-p {port} -k {root} -h {LOOPBACK} -c fsync=off -c full_page_writes=off"
        start = subprocess.run(
            _as_postgres(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(root / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    opts,
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        if start.returncode != 0:
            server_log = root / "server.log"
            log = server_log.read_text(errors="replace")[-800:] if server_log.exists() else ""
            raise Unavailable(f"pg_ctl start failed: {start.stderr.strip()[-300:]} {log}")
        try:
            server = PostgresServer(LOOPBACK, port, "postgres", "postgres", "private")
            wait_for(server.answers, timeout=30, what="private PostgreSQL")
            yield PostgresControl(server, bindir, data, opts, root / "server.log")
        finally:
            subprocess.run(
                _as_postgres(
                    [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
                ),
                capture_output=True,
                timeout=60,
                check=False,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def shared_postgres() -> PostgresServer:
    """The machine's PostgreSQL on 127.0.0.1:5432, database `test` (trust auth, user postgres)."""
    server = PostgresServer(LOOPBACK, 5432, "test", "postgres", "shared")
    try:
        server.execute("SELECT 1")
    except Exception as e:
        raise Unavailable(f"no PostgreSQL at {LOOPBACK}:5432/test: {e}") from None
    return server


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL if one can start, else the machine's; `Unavailable` if neither."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(private_postgres())
        except Unavailable as private:
            try:
                server = shared_postgres()
            except Unavailable as shared:
                raise Unavailable(
                    f"private instance: {private}; shared instance: {shared}"
                ) from None
        yield server
