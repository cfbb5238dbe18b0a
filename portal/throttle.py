"""Login throttling: after repeated failures, a user name or an address waits before trying again.

Failures are counted per user name (case-insensitive) and per client address, each with its own
threshold. From the threshold on, every failure makes the key wait `delay` seconds, doubled for
each further failure, up to `max_delay`. While a key waits the portal does not even ask the
agent. A success clears the user name's count but not the address's, so that one known account
cannot be used to reset guessing on others. A count is forgotten `window` seconds after its
last failure. Counts live in memory (at most `MAX_KEYS`): a restart forgets them.

On a machine where everyone comes from 127.0.0.1 the address threshold is the machine's: keep
it well above the user name's, so one pupil's guesses do not lock the teacher out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_KEYS", "LoginThrottle"]

MAX_KEYS: Final = 10_000


@dataclass
class _Count:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Counts failed logins and says how long a user name or address must still wait."""

    def __init__(
        self,
        *,
        per_user: int,
        per_address: int,
        delay: float,
        max_delay: float,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._thresholds = {"user": per_user, "address": per_address}
        self.delay = delay
        self.max_delay = max_delay
        self.window = window
        self.clock = clock
        self._counts: dict[tuple[str, str], _Count] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username: str, address: str | None) -> list[tuple[str, str]]:
        return [("user", username.strip().casefold()), ("address", address or "unknown")]

    def _live(self, key: tuple[str, str], now: float) -> _Count | None:
        count = self._counts.get(key)
        if count is not None and now - count.last_failure > self.window:
            del self._counts[key]
            return None
        return count

    def wait(self, username: str, address: str | None) -> float:
        """Seconds `username` from `address` must still wait before trying again (0: none)."""
        now = self.clock()
        with self._lock:
            counts = [self._live(key, now) for key in self._keys(username, address)]
        return max([0.0, *(c.locked_until - now for c in counts if c is not None)])

    def failure(self, username: str, address: str | None) -> float:
        """Count a failed login; return how long the user must now wait (0: not yet)."""
        now = self.clock()
        with self._lock:
            if len(self._counts) >= MAX_KEYS:
                self._forget_old(now)
            for key in self._keys(username, address):
                count = self._live(key, now) or self._counts.setdefault(key, _Count())
                count.failures += 1
                count.last_failure = now
                over = count.failures - self._thresholds[key[0]]
                if over >= 0:
                    wait = min(self.delay * 2 ** min(over, 32), self.max_delay)
                    count.locked_until = max(count.locked_until, now + wait)
        return self.wait(username, address)

    def success(self, username: str) -> None:
        """Forget the user name's failures (the address keeps its own)."""
        with self._lock:
            self._counts.pop(("user", username.strip().casefold()), None)

    def _forget_old(self, now: float) -> None:
        for key in list(self._counts):
            self._live(key, now)
        if len(self._counts) >= MAX_KEYS:  # still full: drop the oldest half
            ordered = sorted(self._counts, key=lambda k: self._counts[k].last_failure)
            for key in ordered[: len(ordered) // 2]:
                del self._counts[key]
