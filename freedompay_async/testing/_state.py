"""
The emulator's server-side truth: invoices, their state machine and the charges they took.

The state machine is data: `TRANSITIONS` maps each invoice status to the statuses it may move
to, and every move goes through `InvoiceBook.move`, which refuses any other. Statuses are plain
strings, spelled as on the wire:

    new ──► process ──► ok | failed
     └────► ok | failed | incomplete

A *commit* is a pay attempt the gateway processed: it adds one to the invoice's charge count.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from decimal import Decimal

    from freedompay_async.testing._scenario import Fate

__all__ = [
    "FAILED",
    "INCOMPLETE",
    "NEW",
    "OK",
    "PROCESS",
    "TERMINAL",
    "TRANSITIONS",
    "IllegalTransitionError",
    "Invoice",
    "InvoiceBook",
]

NEW: Final = "new"
PROCESS: Final = "process"
OK: Final = "ok"
FAILED: Final = "failed"
INCOMPLETE: Final = "incomplete"

TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    NEW: frozenset({PROCESS, OK, FAILED, INCOMPLETE}),
    PROCESS: frozenset({OK, FAILED}),
    OK: frozenset(),
    FAILED: frozenset(),
    INCOMPLETE: frozenset(),
}
TERMINAL: Final = frozenset(status for status, nexts in TRANSITIONS.items() if not nexts)

_FIRST_INVOICE_ID: Final = 100_000_001
_TOKEN_ATTEMPTS: Final = 64


class IllegalTransitionError(RuntimeError):
    """An invoice was asked to move along an edge the state machine does not have."""


class Invoice:
    """One invoice as the gateway keeps it."""

    __slots__ = (
        "amount",
        "card_pan",
        "charges",
        "currency",
        "customer",
        "description",
        "error_code",
        "error_description",
        "fate",
        "invoice_id",
        "order_id",
        "polls_left",
        "settles_as",
        "status",
    )

    def __init__(
        self,
        *,
        customer: str,
        order_id: str,
        invoice_id: int,
        amount: Decimal,
        currency: str,
        description: str,
        fate: Fate | None,
    ) -> None:
        self.customer = customer
        self.order_id = order_id
        self.invoice_id = invoice_id
        self.amount = amount
        self.currency = currency
        self.description = description
        self.fate = fate
        self.status: str = NEW
        self.charges = 0
        self.polls_left = 0
        self.settles_as: str | None = None
        self.card_pan: str | None = None
        self.error_code: int | None = None
        self.error_description: str | None = None


def mask_pan(card_token: str) -> str:
    """
    Derive a masked card number from a card token, stable for the same token.

    Args:
        card_token: The card token a pay request carried.

    Returns:
        A masked PAN such as `5483-18XX-XXXX-0293`.
    """
    digest = hashlib.sha256(card_token.encode()).digest()
    last4 = int.from_bytes(digest[:4], "big") % 10_000
    return f"5483-18XX-XXXX-{last4:04d}"


class InvoiceBook:
    """All invoices, indexed by customer token, order id and invoice id, with charge counts."""

    def __init__(self, *, seed: int | None) -> None:
        # Customer tokens are test identifiers, not secrets; a seed makes them reproducible.
        self._rng = random.Random(seed)  # noqa: S311
        self._by_customer: dict[str, Invoice] = {}
        self._by_order: dict[str, Invoice] = {}
        self._by_id: dict[int, Invoice] = {}
        self._next_id = _FIRST_INVOICE_ID
        self.committed = 0
        self.double_charged_count = 0

    def __len__(self) -> int:
        return len(self._by_customer)

    def __iter__(self) -> Iterator[Invoice]:
        return iter(self._by_customer.values())

    def _new_customer(self) -> str:
        for _ in range(_TOKEN_ATTEMPTS):
            token = f"{self._rng.getrandbits(128):032x}"
            if token not in self._by_customer:
                return token
        raise RuntimeError("could not draw an unused customer token")

    def create(
        self,
        *,
        order_id: str | None,
        amount: Decimal,
        currency: str,
        description: str,
        fate: Fate | None,
    ) -> Invoice:
        """
        Create a `new` invoice; a repeated `order_id` makes lookups by it find the newest one.

        Args:
            order_id: The merchant's order id; None assigns `order-<invoice id>`.
            amount: The amount.
            currency: The currency code.
            description: The description.
            fate: The invoice's own fate, or None to use the card's or the default one.

        Returns:
            The invoice.
        """
        invoice_id = self._next_id
        self._next_id += 1
        invoice = Invoice(
            customer=self._new_customer(),
            order_id=order_id if order_id is not None else f"order-{invoice_id}",
            invoice_id=invoice_id,
            amount=amount,
            currency=currency,
            description=description,
            fate=fate,
        )
        self._by_customer[invoice.customer] = invoice
        self._by_order[invoice.order_id] = invoice
        self._by_id[invoice_id] = invoice
        return invoice

    def by_customer(self, customer: str) -> Invoice | None:
        """Return the invoice with this customer token, if any."""
        return self._by_customer.get(customer)

    def by_order(self, order_id: str) -> Invoice | None:
        """Return the newest invoice with this order id, if any."""
        return self._by_order.get(order_id)

    def by_id(self, invoice_id: int) -> Invoice | None:
        """Return the invoice with this id, if any."""
        return self._by_id.get(invoice_id)

    def get(self, customer: str) -> Invoice:
        """
        Return the invoice with this customer token.

        Raises:
            KeyError: No such invoice.
        """
        invoice = self._by_customer.get(customer)
        if invoice is None:
            raise KeyError(f"no invoice with customer {customer!r}")
        return invoice

    @staticmethod
    def move(invoice: Invoice, status: str) -> None:
        """
        Move an invoice to *status* along an edge of `TRANSITIONS`.

        Raises:
            IllegalTransitionError: The edge does not exist.
        """
        if status not in TRANSITIONS[invoice.status]:
            raise IllegalTransitionError(f"invoice cannot move from {invoice.status} to {status}")
        invoice.status = status

    def commit(self, invoice: Invoice) -> None:
        """Count one processed pay attempt on *invoice*."""
        invoice.charges += 1
        self.committed += 1
        if invoice.charges == 2:  # noqa: PLR2004 - the moment an invoice becomes double charged
            self.double_charged_count += 1

    def apply_fate(self, invoice: Invoice, fate: Fate, card_token: str) -> bool:
        """
        Process a pay on a `new` invoice according to *fate*.

        Args:
            invoice: The invoice, which must be `new`.
            fate: The fate chosen for this pay.
            card_token: The card token, for the masked PAN.

        Returns:
            True when the pay was processed (the reply is `status=ok`); False for a gateway
            error, which commits nothing and leaves the invoice `new`.
        """
        if fate.kind == "gateway_error":
            return False
        if fate.kind == "expired":
            self.move(invoice, INCOMPLETE)
            return True
        self.commit(invoice)
        invoice.card_pan = mask_pan(card_token)
        if fate.kind == "paid":
            self.move(invoice, OK)
        elif fate.kind == "declined":
            self.move(invoice, FAILED)
            invoice.error_code = fate.error_code
            invoice.error_description = fate.description
        else:
            self.move(invoice, PROCESS)
            invoice.polls_left = fate.polls
            invoice.settles_as = OK if fate.kind == "pending_then_paid" else FAILED
            if invoice.settles_as == FAILED:
                invoice.error_description = "Payment failed"
        return True

    def read(self, invoice: Invoice) -> None:
        """Count one status/info read: a `process` invoice counts down, then settles."""
        if invoice.status != PROCESS:
            return
        if invoice.polls_left > 0:
            invoice.polls_left -= 1
            return
        self.move(invoice, invoice.settles_as or OK)

    def expire(self, invoice: Invoice) -> None:
        """
        Make a `new` invoice `incomplete`; a terminal one is left as it is.

        Raises:
            IllegalTransitionError: The invoice is `process`, which cannot expire.
        """
        if invoice.status in TERMINAL:
            return
        self.move(invoice, INCOMPLETE)
