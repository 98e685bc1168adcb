"""How long to wait before trying again: exponential backoff with "equal jitter".

One formula for every retry in the daemon (a source reconnecting to its broker, a chat
message resent), so they all back off alike: the delay doubles from `first` up to `cap`,
and each wait is drawn from [d/2, d]. Half fixed so a flapping peer is not hammered; the
random half spreads many clients (or daemons) apart after an outage.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# 2.0**62 seconds is past any cap; a larger exponent would only risk an OverflowError.
_MAX_EXPONENT = 62


def backoff_delay(first: float, cap: float, attempt: int, rand: Callable[[], float]) -> float:
    """Seconds to wait after `attempt` failures in a row (0: the first wait), jittered by `rand`."""
    d = min(cap, first * 2.0 ** min(attempt, _MAX_EXPONENT))
    return d / 2 + rand() * d / 2


class Backoff:
    """A retry loop's backoff (a source reconnecting, the store recovering): `backoff_delay`
    over the failures since it last got through."""

    def __init__(
        self, first: float, cap: float, rand: Callable[[], float] = random.random
    ) -> None:
        self.first = first
        self.cap = cap
        self.rand = rand
        self.attempt = 0

    def next(self) -> float:
        """The next delay in seconds."""
        delay = backoff_delay(self.first, self.cap, self.attempt, self.rand)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Got through again: start from the shortest delay next time."""
        self.attempt = 0
