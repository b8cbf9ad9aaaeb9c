"""The fault queue: which injected fault strikes which request (pure; no I/O)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

from freedompay_async.testing._records import OPERATIONS

if TYPE_CHECKING:
    from freedompay_async.testing._fault import Fault

__all__ = ["READS", "FaultQueue"]

READS: Final = frozenset({"status", "info"})


@attrs.define
class _QueuedFault:
    fault: Fault
    operations: frozenset[str]
    customer: str | None
    remaining: int


class FaultQueue:
    """Faults waiting to strike, in the order queued; counts the strikes."""

    def __init__(self) -> None:
        self._faults: list[_QueuedFault] = []
        self.applied = 0

    def inject(
        self,
        fault: Fault,
        *,
        operation: str | None = None,
        times: int = 1,
        customer: str | None = None,
    ) -> None:
        """
        Queue *fault* for the next *times* matching requests (see `FreedomPayEmulator.inject`).

        Args:
            fault: The fault.
            operation: `init`, `pay`, `status`, `info`, `*` or None.
            times: How many requests it strikes.
            customer: Only requests about this invoice; None matches any.

        Raises:
            ValueError: An unknown operation, *times* < 1, or `stale_status` on init or pay.
        """
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be an integer >= 1, got {times!r}")
        if operation is None:
            operations = READS if fault.kind == "stale_status" else frozenset({"pay"})
        elif operation == "*":
            operations = READS if fault.kind == "stale_status" else frozenset(OPERATIONS)
        elif operation in OPERATIONS:
            operations = frozenset({operation})
        else:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)} or '*'")
        if fault.kind == "stale_status" and not operations <= READS:
            raise ValueError("a stale_status fault applies to status and info only")
        remaining = times * fault.reads if fault.kind == "stale_status" else times
        self._faults.append(_QueuedFault(fault, operations, customer, remaining))

    def clear(self) -> None:
        """Drop every queued fault."""
        self._faults.clear()

    @property
    def pending(self) -> int:
        """How many fault strikes are still queued."""
        return sum(entry.remaining for entry in self._faults)

    def take(self, operation: str, customer: str | None) -> Fault | None:
        """Take one strike of the first fault matching a request, or None."""
        for index, entry in enumerate(self._faults):
            if operation not in entry.operations:
                continue
            if entry.customer is not None and entry.customer != customer:
                continue
            if entry.fault.kind == "stale_status" and customer is None:
                continue
            entry.remaining -= 1
            if entry.remaining <= 0:
                del self._faults[index]
            self.applied += 1
            return entry.fault
        return None
