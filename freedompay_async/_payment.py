"""
The facts an exception may carry: an invoice's status, its payment state, a guard's claim.

They live apart from `_models` so that `_exceptions` can name them (`PaymentPending.payment`,
`DuplicatePayError.claim`) without importing the module that imports it: the layers form no
cycle. `_models` re-exports every name; users import them from `freedompay_async`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs

from freedompay_async.masking import mask_pan, mask_pans

if TYPE_CHECKING:
    from datetime import datetime
    from decimal import Decimal

__all__ = ["InvoiceInfo", "InvoicePayment", "InvoiceStatus", "PayClaim"]


class InvoiceStatus(enum.StrEnum):
    """
    An invoice's status as the gateway reports it.

    `NEW` and `PROCESS` are waiting states; `OK` (paid), `FAILED` and `INCOMPLETE` (expired) are
    terminal. A value the SDK does not know decodes to `UNKNOWN`, and the model keeps the raw
    string in `invoice_status_raw`: the gateway may add values, and an unknown one is treated as
    still pending rather than guessed.
    """

    NEW = "new"
    PROCESS = "process"
    OK = "ok"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """Whether the status can no longer change (`OK`, `FAILED` or `INCOMPLETE`)."""
        return self in _TERMINAL

    @classmethod
    def parse(cls, raw: str) -> InvoiceStatus:
        """
        Map a wire value to a status.

        Args:
            raw: The `invoice_status` text of a reply.

        Returns:
            The matching member, or `UNKNOWN` for any value the SDK does not know.
        """
        member = _BY_VALUE.get(raw)
        return member if member is not None else cls.UNKNOWN


_TERMINAL = frozenset({InvoiceStatus.OK, InvoiceStatus.FAILED, InvoiceStatus.INCOMPLETE})
_BY_VALUE = {m.value: m for m in InvoiceStatus if m is not InvoiceStatus.UNKNOWN}


def _pan(value: str | None) -> str | None:
    """Keep a card number masked (first six, last four digits) whatever the gateway sent."""
    return None if value is None else mask_pan(value)


def _free_text(value: str | None) -> str | None:
    """Mask any card number inside a free-text field the gateway sent."""
    return None if value is None else mask_pans(value)


@attrs.frozen(kw_only=True)
class InvoicePayment:
    """
    An invoice's payment state, as answered by pay or status.

    Attributes:
        invoice_status: The status; terminal when `invoice_status.is_terminal`.
        invoice_status_raw: The status exactly as sent (useful when it is `UNKNOWN`).
        order_id: The merchant's order id, or None.
        invoice_id: The gateway's id (sent once the invoice is `ok` or `failed`), or None.
        customer: The invoice's customer token, when the call knew it.
        amount: The invoice amount, or None.
        currency: The currency code, or None.
        card_pan: The masked card number, or None. The gateway masks it; a full number it sent
            anyway is masked here to its first six and last four digits, so no model, `repr` or
            pickle ever holds a full PAN.
        error_code: An error code sent along an `ok` reply (for a declined payment), or None.
        error_description: The text for `error_code` (card numbers in it masked), or None.
        dt: When the gateway answered, timezone-aware, or None.
    """

    invoice_status: InvoiceStatus
    invoice_status_raw: str | None = None
    order_id: str | None = None
    invoice_id: int | None = None
    customer: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    card_pan: str | None = attrs.field(default=None, converter=_pan)
    error_code: int | None = None
    error_description: str | None = attrs.field(default=None, converter=_free_text)
    dt: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the payment can no longer change."""
        return self.invoice_status.is_terminal


@attrs.frozen(kw_only=True)
class InvoiceInfo(InvoicePayment):
    """
    The reply to `invoice_info`: the payment state plus the invoice's description and QR.

    Attributes:
        description: The invoice's description (card numbers in it masked), or None.
        qr: The raw `invoice_methods/qr` value, or None.
        qr_url: The payment-page URL decoded from `qr`, or None.
    """

    description: str | None = attrs.field(default=None, converter=_free_text)
    qr: str | None = None
    qr_url: str | None = None


@attrs.frozen(kw_only=True)
class PayClaim:
    """
    A duplicate guard's answer to `claim(customer)`.

    Attributes:
        granted: Whether the caller may send the pay now (and must `finish` it after).
        reason: Why the pay was refused, or None when granted.
        prior_state: The state the guard holds for the customer (`paid`, `pending`,
            `ambiguous`, ...): recorded before this claim or, when the claim settled an earlier
            pay by its status (kind `landed`), the state just learned; None for a customer never
            claimed.
        kind: A short tag for the decision (`fresh`, `busy`, `settled`, ...), for guards that
            tell more than granted/refused.
        payment: The status read that settled an earlier pay of the customer during this
            claim, if the guard read one.
    """

    granted: bool
    reason: str | None = None
    prior_state: str | None = None
    kind: str | None = None
    payment: InvoicePayment | None = None


# Pickles name the path these classes had before they moved here, so stored ones stay readable.
for _cls in (InvoiceStatus, InvoicePayment, InvoiceInfo, PayClaim):
    _cls.__module__ = "freedompay_async._models"
