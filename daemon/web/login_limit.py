"""How many failed console logins a peer gets before it must wait.

A failed login is counted per peer address in a sliding window; at `limit` failures the
peer is refused (429) until the oldest of them leaves the window, whatever it sends, so
guessing tokens through the login form is slow. A success clears the peer's count. The
table is bounded: past `peers` addresses the one seen least recently is forgotten.
"""

from __future__ import annotations

from collections import OrderedDict, deque


class LoginThrottle:
    """Failed logins per peer within `window` seconds; times are passed in."""

    def __init__(self, limit: int = 5, window: float = 60.0, peers: int = 10_000) -> None:
        self.limit, self.window, self.peers = limit, window, peers
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, peer: str, now: float) -> float:
        """Seconds `peer` must wait before trying again (0 when it may try now)."""
        times = self._failures.get(peer)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[peer]
            return 0.0
        return max(0.0, times[0] + self.window - now) if len(times) >= self.limit else 0.0

    def failed(self, peer: str, now: float) -> None:
        """Count one failed login."""
        times = self._failures.pop(peer, None) or deque(maxlen=self.limit)
        times.append(now)
        self._failures[peer] = times
        while len(self._failures) > self.peers:
            self._failures.popitem(last=False)

    def succeeded(self, peer: str) -> None:
        """Forget the peer's failures."""
        self._failures.pop(peer, None)
