"""`ReplayGuard`: a repeated notification gets the first answer, the callback runs once."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING

from freedompay_async._exceptions import ConfigurationError
from freedompay_async.callbacks._models import ResultNotification

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from freedompay_async.callbacks._models import Notification

__all__ = ["ReplayGuard"]


class ReplayGuard:
    """
    Answer a repeated notification exactly as the first time, without asking the merchant again.

    Replies are kept in memory per (kind, `pg_payment_id`, `pg_salt`), the least recently used
    dropped beyond `max_entries`. A notification that arrives while the same one is still being
    answered waits for that answer instead of calling the business callback a second time. Only
    successful answers are kept: when the callback raises, the next delivery calls it again.
    One guard serves one event loop. It is per process: behind several workers, keep the
    business callback idempotent by `payment_id` as well.

    Args:
        max_entries: How many replies to keep.

    Raises:
        ConfigurationError: `max_entries` is less than 1.
    """

    __slots__ = ("_max_entries", "_pending", "_replies")

    def __init__(self, max_entries: int = 10_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError("max_entries must be a positive integer")
        self._max_entries = max_entries
        self._replies: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
        self._pending: dict[tuple[str, int, str], asyncio.Future[bytes]] = {}

    @staticmethod
    def _key(notification: Notification) -> tuple[str, int, str]:
        kind = "result" if isinstance(notification, ResultNotification) else "check"
        return (kind, notification.payment_id, notification.salt)

    def get(self, notification: Notification) -> bytes | None:
        """
        Return the reply already sent to this notification, if any.

        Args:
            notification: A verified notification.

        Returns:
            The reply bytes, or None.
        """
        key = self._key(notification)
        reply = self._replies.get(key)
        if reply is not None:
            self._replies.move_to_end(key)
        return reply

    def _store(self, key: tuple[str, int, str], reply: bytes) -> None:
        self._replies[key] = reply
        self._replies.move_to_end(key)
        while len(self._replies) > self._max_entries:  # at most one eviction per store
            self._replies.popitem(last=False)

    async def run(
        self, notification: Notification, answer: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """
        Return the stored reply, or compute it once with *answer* and store it.

        Args:
            notification: A verified notification.
            answer: Builds the reply (calls the business callback); awaited at most once per
                notification while its reply is kept.

        Returns:
            The reply bytes, identical for every delivery of the notification.

        Raises:
            Exception: Whatever *answer* raised, to this caller and to any delivery waiting on
                it; nothing is stored then.
        """
        key = self._key(notification)
        stored = self.get(notification)
        if stored is not None:
            return stored
        running = self._pending.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            reply = await answer()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" report when nobody waits
            raise
        finally:
            del self._pending[key]
        self._store(key, reply)
        future.set_result(reply)
        return reply

    def __len__(self) -> int:
        return len(self._replies)

    def __repr__(self) -> str:
        return f"ReplayGuard(entries={len(self._replies)}, max_entries={self._max_entries})"
