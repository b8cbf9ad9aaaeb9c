"""
A virtual clock for tests: sleeping advances time instantly and is recorded.

`VirtualClock` satisfies the client's `Clock` protocol (`monotonic()`, `time()`, `sleep()`), so
backoff, `Retry-After` and polling delays cost no real time and every requested sleep can be
asserted on.
"""

from __future__ import annotations

import asyncio
import math

__all__ = ["VirtualClock"]


class VirtualClock:
    """
    A clock whose time moves only when something sleeps on it or a test advances it.

    `sleep(seconds)` moves the clock to `now + seconds` at once (never backwards), records the
    requested duration in `sleeps`, then yields to the event loop once, so other tasks still
    run. Wall time (`time()`) moves together with monotonic time.

    Args:
        monotonic: The starting value of `monotonic()`.
        time: The starting value of `time()`, in seconds since the epoch.

    Attributes:
        sleeps: Every duration passed to `sleep`, in call order, as requested.
    """

    def __init__(self, *, monotonic: float = 0.0, time: float = 1_700_000_000.0) -> None:
        self._start = float(monotonic)
        self._now = float(monotonic)
        self._wall_start = float(time)
        self.sleeps: list[float] = []

    def __repr__(self) -> str:
        return f"VirtualClock(monotonic={self._now!r}, sleeps={len(self.sleeps)})"

    def monotonic(self) -> float:
        """
        Return the virtual monotonic time.

        Returns:
            Seconds, starting at the configured value.
        """
        return self._now

    def time(self) -> float:
        """
        Return the virtual wall-clock time, which advances with `monotonic()`.

        Returns:
            Seconds since the epoch.
        """
        return self._wall_start + (self._now - self._start)

    async def sleep(self, seconds: float) -> None:
        """
        Advance the clock by *seconds* at once, record the request, and yield once.

        A negative duration is recorded as requested and sleeps for zero.

        Args:
            seconds: The requested duration.

        Raises:
            ValueError: *seconds* is NaN.
        """
        seconds = float(seconds)
        if math.isnan(seconds):
            raise ValueError("cannot sleep for NaN seconds")
        self.sleeps.append(seconds)
        wake = self._now + max(0.0, seconds)
        self._now = max(self._now, wake)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        """
        Move the clock forward without sleeping, as if time had passed elsewhere.

        Args:
            seconds: How far to move, >= 0.

        Raises:
            ValueError: *seconds* is negative or not finite.
        """
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"can only advance by a finite number >= 0, got {seconds!r}")
        self._now += seconds

    @property
    def slept(self) -> float:
        """The total of all recorded sleeps, negatives counted as zero."""
        return sum(max(0.0, seconds) for seconds in self.sleeps)
