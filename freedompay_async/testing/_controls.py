"""
The emulator's controls: scripting invoices, card fates and faults, and reading what it saw.

`EmulatorControls` is the public surface `FreedomPayEmulator` offers a test besides its
lifecycle; it works on the invoice book, the fault queue and the traffic counters, never on a
socket, and lets a test wait on a condition (`wait_until`, `wait_idle`) instead of sleeping.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from freedompay_async.testing._records import EmulatorStats, RequestRecord
from freedompay_async.testing._state import IllegalTransitionError

if TYPE_CHECKING:
    from collections.abc import Callable

    from freedompay_async.testing._fault import Fault
    from freedompay_async.testing._fault_queue import FaultQueue
    from freedompay_async.testing._planner import GatewayPlanner
    from freedompay_async.testing._records import Traffic
    from freedompay_async.testing._scenario import Fate
    from freedompay_async.testing._state import InvoiceBook

__all__ = ["EmulatorControls"]

#: How often `wait_until` looks again at a condition no request has changed.
_RECHECK_SECONDS: Final = 0.05


class EmulatorControls:
    """Scripting and observation methods of `FreedomPayEmulator` (see there)."""

    _book: InvoiceBook
    _cards: dict[str, Fate]
    _faults: FaultQueue
    _traffic: Traffic
    _planner: GatewayPlanner
    _changed: asyncio.Event

    # -- scripting ---------------------------------------------------------------------------

    def create_invoice(
        self,
        *,
        order_id: str | None = None,
        amount: Decimal = Decimal(100),
        currency: str = "KZT",
        description: str = "Invoice",
        fate: Fate | None = None,
    ) -> str:
        """
        Create a `new` invoice directly, without an init request.

        Args:
            order_id: The merchant's order id; None assigns `order-<invoice id>`.
            amount: The amount.
            currency: The currency code.
            description: The description.
            fate: The invoice's own fate (a scripted card token still wins).

        Returns:
            The customer token that pay needs.
        """
        invoice = self._book.create(
            order_id=order_id, amount=amount, currency=currency, description=description, fate=fate
        )
        return invoice.customer

    def create_invoices(
        self,
        count: int,
        *,
        fate: Fate | None = None,
        amount: Decimal = Decimal(100),
        currency: str = "KZT",
        description: str = "Invoice",
    ) -> list[str]:
        """
        Create *count* `new` invoices directly (fast enough for tens of thousands).

        Args:
            count: How many.
            fate: Their fate (a scripted card token still wins).
            amount: The amount of each.
            currency: The currency code.
            description: The description.

        Returns:
            Their customer tokens, in creation order.

        Raises:
            ValueError: *count* is negative.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
        create = self._book.create
        return [
            create(
                order_id=None, amount=amount, currency=currency, description=description, fate=fate
            ).customer
            for _ in range(count)
        ]

    def script_card(self, card_token: str, fate: Fate) -> None:
        """
        Decide the fate of every later pay made with *card_token*, whatever the invoice.

        Args:
            card_token: The card token.
            fate: Its fate.
        """
        self._cards[card_token] = fate

    def expire(self, customer: str) -> None:
        """
        Let a `new` invoice expire: it becomes `incomplete`. A terminal invoice is left as is.

        Args:
            customer: The invoice's customer token.

        Raises:
            KeyError: No such invoice.
            ValueError: The invoice is `process`, which the state machine cannot expire.
        """
        invoice = self._book.get(customer)
        try:
            self._book.expire(invoice)
        except IllegalTransitionError as exc:
            raise ValueError(str(exc)) from exc

    def inject(
        self,
        fault: Fault,
        *,
        operation: str | None = None,
        times: int = 1,
        customer: str | None = None,
    ) -> None:
        """
        Queue *fault* for the next *times* matching requests.

        Faults strike in the order they were queued; a request takes at most one. A request is
        matched after its signature and fields were checked, so a rejected request never
        consumes a fault. A `stale_status` fault covers `fault.reads` reads per time.

        Args:
            fault: The fault.
            operation: `init`, `pay`, `status`, `info` or `*` (any); None means `pay`, or
                status and info for a `stale_status` fault.
            times: How many requests it strikes.
            customer: Only requests about this invoice (pay, status and info; an init never
                matches); None matches any.

        Raises:
            ValueError: An unknown operation, *times* < 1, or `stale_status` on init or pay.
        """
        self._faults.inject(fault, operation=operation, times=times, customer=customer)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """How many fault strikes are still queued."""
        return self._faults.pending

    # -- observations ------------------------------------------------------------------------

    def charges(self, customer: str) -> int:
        """
        Return the committed pay attempts on an invoice.

        Args:
            customer: The invoice's customer token.

        Returns:
            The count; more than 1 means the invoice was charged twice.

        Raises:
            KeyError: No such invoice.
        """
        return self._book.get(customer).charges

    def double_charged(self) -> list[str]:
        """
        Return the customer tokens of invoices with more than one committed pay.

        Returns:
            The tokens, in creation order.
        """
        return [invoice.customer for invoice in self._book if invoice.charges > 1]

    def invoice_status(self, customer: str) -> str:
        """
        Return an invoice's status as the server knows it, without counting a read.

        Args:
            customer: The invoice's customer token.

        Returns:
            `new`, `process`, `ok`, `failed` or `incomplete`.

        Raises:
            KeyError: No such invoice.
        """
        return self._book.get(customer).status

    @property
    def stats(self) -> EmulatorStats:
        """A snapshot of the counters."""
        traffic = self._traffic
        return EmulatorStats(
            requests=traffic.requests,
            by_operation=dict(traffic.by_operation),
            in_flight=traffic.in_flight,
            max_in_flight=traffic.max_in_flight,
            committed_pays=self._book.committed,
            double_charges=self._book.double_charged_count,
            rejected_signatures=self._planner.rejected,
            faults_applied=self._faults.applied,
            invoices=len(self._book),
            first_request_at=traffic.first_at,
            last_request_at=traffic.last_at,
        )

    @property
    def requests(self) -> list[RequestRecord]:
        """The latest API requests (at most 100,000), oldest first, card tokens masked."""
        return list(self._traffic.records)

    def max_rate(self, window: float) -> float:
        """
        Return the highest request rate seen in any *window* seconds of the kept requests.

        Args:
            window: The window length in seconds, > 0.

        Returns:
            Requests per second: the most arrivals within one window, divided by *window*.

        Raises:
            ValueError: *window* is not positive.
        """
        if not window > 0:
            raise ValueError(f"window must be > 0, got {window!r}")
        return self._traffic.max_rate(window)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """
        Wait until *condition()* is true: a test's way to wait on the server, not on the clock.

        The condition is checked at once, whenever an API request starts, commits or ends, and
        at least every 50 ms (for conditions that other events change). Bound the wait with
        `asyncio.timeout()`.

        Args:
            condition: A function of no arguments, e.g. `lambda: emu.charges(customer) == 1`.
        """
        while not condition():
            waiter = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait((waiter,), timeout=_RECHECK_SECONDS)
            finally:
                waiter.cancel()

    async def wait_idle(self) -> None:
        """
        Wait until no API request is being handled (`stats.in_flight` is 0).

        A request still held by a `delay` fault keeps the emulator busy, even after its client
        gave up; once this returns, every request received so far has been processed. Bound the
        wait with `asyncio.timeout()`.
        """
        await self.wait_until(lambda: self._traffic.in_flight == 0)

    def _notify(self) -> None:
        """Wake every `wait_until`: a request started, committed or ended."""
        self._changed.set()
        self._changed = asyncio.Event()
