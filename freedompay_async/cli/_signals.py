"""Stopping a run: SIGINT/SIGTERM, a systemic failure, or an output that cannot be written."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from freedompay_async.cli._common import say


class Stop:
    """
    Turns a signal (or a reason found by the run itself) into a graceful stop, then a hard one.

    The first request sets `reason` (the row sources stop handing out work) and arms a timer
    that cancels the task after *grace* seconds; a second signal cancels it at once.

    Attributes:
        reason: Why the run stops (`SIGTERM`, `systemic`, `output`), or None while it runs.
        signum: The signal that stopped it, or None.
        hard: Whether the task was cancelled (pays in flight were cut off).
    """

    def __init__(self, grace: float) -> None:
        self.reason: str | None = None
        self.signum: int | None = None
        self.hard = False
        self._grace = grace
        self._task: asyncio.Task[Any] | None = None
        self._installed: list[int] = []

    @property
    def requested(self) -> bool:
        """Whether a stop was requested."""
        return self.reason is not None

    def install(self, task: asyncio.Task[Any]) -> None:
        """Route SIGINT and SIGTERM to this object while *task* runs."""
        self._task = task
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._on_signal, signum)
                self._installed.append(signum)

    def uninstall(self) -> None:
        """Restore the default handlers."""
        loop = asyncio.get_running_loop()
        for signum in self._installed:
            loop.remove_signal_handler(signum)
        self._installed.clear()

    def request(self, reason: str, message: str) -> None:
        """Stop taking new work; let work in flight finish within the grace period."""
        task = self._task
        if self.reason is not None or task is None or task.done():
            return
        self.reason = reason
        say(
            message
            + (f"; waiting up to {self._grace:g}s for the pays in flight" if self._grace else "")
        )
        asyncio.get_running_loop().call_later(self._grace, self._cancel)

    def _cancel(self) -> None:
        task = self._task
        if task is not None and not task.done():
            self.hard = True
            task.cancel()

    def _on_signal(self, signum: int) -> None:
        if self.reason is not None:
            if self.signum is None:
                self.signum = signum
            self._cancel()
            return
        self.signum = signum
        name = signal.Signals(signum).name
        self.request(name, f"{name}: stopping; no new payment starts")

    @property
    def exit_code(self) -> int:
        """128 + the signal number (143 for SIGTERM, 130 for SIGINT)."""
        return 128 + (self.signum or 0)
