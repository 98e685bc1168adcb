"""A real OpenSSH server on a free loopback port, with keys made for the test.

`Sshd.start()` runs `/usr/sbin/sshd -D -e -f <config>` with a fresh ed25519 host key, one
authorized client key (also fresh) and everything it needs inside one temp directory. The
login user is the one running the tests (root in CI: `PermitRootLogin prohibit-password`).
`known_hosts` pins the server's real host key; `wrong_known_hosts` pins another one.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from realstack import Child, Unavailable, free_port, require, wait_for

SSHD = "/usr/sbin/sshd"


def keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at `path`; returns the public key line."""
    require("/usr/bin/ssh-keygen")
    subprocess.run(
        ["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return Path(f"{path}.pub").read_text().strip()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return False
        banner = s.recv(64)
    return banner.startswith(b"SSH-2.0-")


@dataclass
class Sshd:
    """One sshd process, its keys and its log, all under `workdir`."""

    workdir: Path
    port: int = 0
    user: str = field(default_factory=getpass.getuser)
    child: Child | None = None

    def __post_init__(self) -> None:
        try:
            require(SSHD)
        except Unavailable:
            raise Unavailable(
                f"{SSHD} is not installed (apt-get install openssh-server; `make test` does)"
            ) from None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        host_pub = keygen(self.host_key, "test-host")
        self.client_key = self.workdir / "client_key"
        self.client_pub = keygen(self.client_key, "watchkeeper-test")
        (self.workdir / "authorized_keys").write_text(self.client_pub + "\n")
        key_type, key_data = host_pub.split()[:2]
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key_type} {key_data}\n")
        other = keygen(self.workdir / "other_host_key", "someone-else")
        self.wrong_known_hosts = self.workdir / "wrong_known_hosts"
        self.wrong_known_hosts.write_text(
            f"[127.0.0.1]:{self.port} {' '.join(other.split()[:2])}\n"
        )
        self.config = self.workdir / "sshd_config"
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "StrictModes no",
                    "UsePAM no",
                    "AllowAgentForwarding no",
                    "X11Forwarding no",
                    "LogLevel VERBOSE",
                    "MaxSessions 20",
                    "",
                ]
            )
        )
        # Privilege separation directory sshd insists on.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.child = Child(
            "sshd", [SSHD, "-D", "-e", "-f", str(self.config)], self.workdir / "sshd.log"
        )

    def start(self) -> None:
        """Start sshd and wait for its banner."""
        assert self.child is not None
        self.child.start()
        try:
            wait_for(self._up, timeout=20, what="sshd's banner", interval=0.05)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.child.log_tail()}") from None

    def _up(self) -> bool:
        assert self.child is not None
        self.child.check_alive()
        return _listening(self.port)

    def stop(self) -> None:
        """Stop sshd (sessions it forked end with it)."""
        if self.child is not None:
            self.child.stop(timeout=5)

    def log(self) -> str:
        """sshd's log so far."""
        try:
            return (self.workdir / "sshd.log").read_text(errors="replace")
        except OSError:
            return ""

    def accepted(self) -> int:
        """How many logins sshd accepted (each reused connection counts once)."""
        return self.log().count("Accepted publickey")


def wait_gone(path: Path, timeout: float = 10.0) -> None:
    """Wait until `path` no longer exists."""
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
