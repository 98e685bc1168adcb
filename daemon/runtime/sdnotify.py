"""sd_notify over the unix datagram socket systemd gives us (no library needed: one sendto)."""

from __future__ import annotations

import contextlib
import os
import socket


class SystemdNotifier:
    """Sends READY=1, STATUS=..., WATCHDOG=1 when NOTIFY_SOCKET is set; otherwise does nothing."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 1_000_000 / 2 if usec.isdigit() and mine else None
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured."""
        return self._sock is not None

    def send(self, *fields: str) -> None:
        """Send newline-separated fields, e.g. send("READY=1", "STATUS=ok")."""
        if self._sock is None:
            return
        # systemd gone or socket full: never fatal.
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(fields).encode(), self.address)

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
