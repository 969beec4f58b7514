"""WebSocket limits of one instance: open sockets per client address and per user, and the
message rate of one socket.

The counts are per process, on purpose: a socket lives on the instance that accepted it, and
a shared counter (Redis, PostgreSQL) would have to be released by an instance that may die
first. With N instances behind a balancer an address or a user may hold up to N times the cap.

The message limit is a token bucket kept on the socket itself: it needs no storage, no key
and no clean-up, which is all the `limits` library would add here.

    slots = SocketSlots(limit=2)
    lease = SocketLease(slots)
    if not lease.take("ip:10.0.0.7"): ...   # over the cap
    lease.release()                          # in a `finally`; idempotent

    bucket = TokenBucket(rate=10.0, burst=30)
    if not bucket.allow(loop.time()): ...   # over the rate
"""

from __future__ import annotations

from collections import Counter

from gathering.config import Settings


class SocketSlots:
    """How many sockets each key (an address, a user) holds open, up to `limit` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def take(self, key: str) -> bool:
        """Count one more socket for `key`; False (and nothing counted) when at the cap."""
        if self._open[key] >= self.limit:
            return False
        self._open[key] += 1
        return True

    def give_back(self, key: str) -> None:
        """Count one socket of `key` less."""
        left = self._open[key] - 1
        if left > 0:
            self._open[key] = left
        else:
            del self._open[key]

    def count(self, key: str) -> int:
        return self._open.get(key, 0)

    def __len__(self) -> int:
        """How many keys hold at least one socket."""
        return len(self._open)


class SocketLease:
    """The slots one socket holds: at most one key of `slots` at a time."""

    def __init__(self, slots: SocketSlots) -> None:
        self.slots = slots
        self.key: str | None = None

    def take(self, key: str) -> bool:
        """Hold a slot of `key` instead of the one held so far; False when `key` is full
        (the slot held so far is then released too)."""
        if key == self.key:
            return True
        self.release()
        if not self.slots.take(key):
            return False
        self.key = key
        return True

    def release(self) -> None:
        if self.key is not None:
            self.slots.give_back(self.key)
            self.key = None


class SocketLimits:
    """The socket caps of one app (`app.state.security.socket_limits`)."""

    def __init__(self, settings: Settings) -> None:
        self.by_address = SocketSlots(settings.ws_max_per_address)
        self.by_user = SocketSlots(settings.ws_max_per_user)


class TokenBucket:
    """`burst` messages at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at: float | None = None

    def allow(self, now: float) -> bool:
        """Spend one token at time `now` (seconds, monotonic); False when none is left."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
