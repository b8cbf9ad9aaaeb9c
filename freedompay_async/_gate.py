"""
The FIFO gate in front of aiohttp's connector.

Why a gate: aiohttp's connector hands an idle connection to whoever asks next before it looks at
its queue of waiters, so under load a task that just released a connection takes it straight back
and queued callers starve (p99 in seconds). The gate is FIFO and has the connector's size, so the
connector's own queue never forms.
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ["FifoGate"]


class FifoGate:
    """
    A FIFO semaphore: slots go to waiters strictly in arrival order.

    A waiter cancelled while queued leaves the queue; one cancelled just after a slot was handed
    to it passes the slot on, so no slot leaks and none is stolen.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def in_use(self) -> int:
        """Slots currently held."""
        return self.size - self._free

    @property
    def waiting(self) -> int:
        """Callers queued for a slot."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot without waiting; False when none is free or others are queued."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot, in arrival order."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot arrived together with the cancellation: pass it on
            else:
                self._waiters.remove(future)
            raise

    def release(self) -> None:
        """Give a slot back, to the longest waiter if any."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self._free += 1
