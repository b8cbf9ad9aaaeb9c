"""
The FIFO gate in front of aiohttp's connector, and the deadline watcher of the exchanges.

Why a gate: aiohttp's connector hands an idle connection to whoever asks next before it looks at
its queue of waiters, so under load a task that just released a connection takes it straight back
and queued callers starve (p99 in seconds). The gate is FIFO and has the connector's size, so the
connector's own queue never forms.

Why a watcher, one periodic check that cuts exchanges past their deadline, rather than a timer
per request: a timer per request (`asyncio.timeout`) costs a scheduled handle, its cancellation
and the event loop's heap work for every exchange, and with thousands in flight the heap fills
with cancelled handles. The watcher keeps the deadlines in a dict and looks at them every `tick`
seconds while any exchange is watched, so an exchange outlives its deadline by at most one tick.
An expired exchange's task is cancelled; the transport asks `release()` whether that
cancellation was the deadline's, and turns it into `ReadTimeout`.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Final

__all__ = ["TICK", "DeadlineWatcher", "FifoGate"]


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


#: Seconds between two looks at the watched deadlines.
TICK: Final = 0.1


class DeadlineWatcher:
    """The deadlines of the exchanges in flight on one event loop, checked every `tick`."""

    __slots__ = ("_due", "_expired", "_handle", "_loop", "_tick")

    def __init__(self, tick: float = TICK) -> None:
        self._tick = tick
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, task: asyncio.Task[Any], seconds: float) -> None:
        """
        Cancel *task* once *seconds* have passed, unless `release(task)` comes first.

        Args:
            task: The task running the exchange (one exchange per task at a time).
            seconds: Seconds from now until its deadline.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = task.get_loop()
        self._due[task] = loop.time() + seconds
        if self._handle is None:
            self._handle = loop.call_later(min(seconds, self._tick), self._check)

    def release(self, task: asyncio.Task[Any]) -> bool:
        """
        Stop watching *task*.

        Args:
            task: The task given to `watch`.

        Returns:
            True when the deadline cancelled it (its cancellation request is then the watcher's).
        """
        self._due.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _check(self) -> None:
        loop = self._loop
        assert loop is not None  # noqa: S101 - set by the first watch()
        now = loop.time()
        due = self._due
        late = [task for task, at in due.items() if at <= now]
        for task in late:
            del due[task]
            self._expired.add(task)
            task.cancel()
        if due:
            soonest = min(due.values())
            self._handle = loop.call_at(
                max(now + 0.001, min(soonest, now + self._tick)), self._check
            )
        else:
            self._handle = None
