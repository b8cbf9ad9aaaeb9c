"""
The values the SDK returns and accepts: frozen, keyword-only attrs classes.

Models never see XML or a parsed dict: `_decode` converts every field explicitly and passes
keywords, and the models only check invariants. Outcomes such as a declined card are data
(`InvoicePayment.invoice_status`), not exceptions.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import attrs

from freedompay_async._exceptions import (
    AmbiguousPaymentError,
    ConfigurationError,
    FreedomPayError,
    PaymentPending,
)
from freedompay_async._payment import InvoiceInfo, InvoicePayment, InvoiceStatus, PayClaim
from freedompay_async.facts import (
    STATE_BY_INVOICE_STATUS,
    TERMINAL_STATES,
    OutcomeState,
    is_integer,
)
from freedompay_async.masking import mask_token

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "BatchProgress",
    "InvoiceInfo",
    "InvoiceInit",
    "InvoicePayment",
    "InvoiceStatus",
    "OutcomeState",
    "PayClaim",
    "PayOutcome",
    "PayRequest",
]


def _nonempty(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{attribute.name} must be a non-empty string")


@attrs.frozen(kw_only=True)
class InvoiceInit:
    """
    The reply to `init_invoice`: the new invoice and how to pay it.

    Attributes:
        invoice_id: The gateway's id of the invoice, if it sent one.
        invoice_status: The invoice's status (normally `NEW` or `PROCESS`).
        invoice_status_raw: The status exactly as sent, or None when absent.
        qr: The raw `invoice_methods/qr` value (base64), or None.
        qr_url: The payment-page URL decoded from `qr`, or None when it does not decode.
        customer: The token `pay_invoice` needs, taken from `qr_url`, or None.
        order_id: The merchant's order id this invoice was created for.
        dt: When the gateway answered, timezone-aware, or None.
    """

    invoice_id: int | None
    invoice_status: InvoiceStatus
    invoice_status_raw: str | None
    qr: str | None
    qr_url: str | None
    customer: str | None
    order_id: str | None = None
    dt: datetime | None = None


@attrs.frozen(kw_only=True)
class PayRequest:
    """
    One invoice to pay in a batch.

    Attributes:
        customer: The invoice's customer token (`InvoiceInit.customer`).
        user_id: The payer's id in the merchant's system.
        card_token: The saved card's token; shown masked in `repr`.
        key: Any value the caller uses to correlate the outcome (an order id, a row number).
    """

    customer: str = attrs.field(validator=_nonempty)
    user_id: str = attrs.field(validator=_nonempty)
    card_token: str = attrs.field(validator=_nonempty, repr=mask_token)
    key: object = None


def payment_state(payment: InvoicePayment) -> OutcomeState:
    """
    Classify a payment that ended without an error.

    Args:
        payment: The payment.

    Returns:
        `paid`, `failed` or `expired` for a terminal status, else `pending`.
    """
    return STATE_BY_INVOICE_STATUS.get(payment.invoice_status, "pending")


@attrs.frozen(kw_only=True)
class PayOutcome:
    """
    What became of one `PayRequest` in a batch.

    Attributes:
        request: The request this outcome answers.
        payment: The last payment state seen, or None when the call failed before one.
        error: The `FreedomPayError` the call ended with, or None.
        attempts: Requests sent for this item (pay and status together).
        elapsed: Seconds the item took.
    """

    request: PayRequest
    payment: InvoicePayment | None = None
    error: FreedomPayError | None = None
    attempts: int = 0
    elapsed: float = 0.0

    @property
    def state(self) -> OutcomeState:
        """
        Classify the outcome.

        Returns:
            `paid`, `failed` or `expired` for a terminal payment; `pending` when the invoice is
            still waiting; `ambiguous` when the pay may have charged and must be checked; `error`
            for any other failure (nothing is known to have been charged).
        """
        if self.error is None and self.payment is not None:
            return payment_state(self.payment)
        if isinstance(self.error, PaymentPending):
            return "pending"
        if isinstance(self.error, AmbiguousPaymentError):
            return "ambiguous"
        return "error"

    @property
    def is_terminal(self) -> bool:
        """Whether the invoice's fate is settled (`paid`, `failed` or `expired`)."""
        return self.state in TERMINAL_STATES


@attrs.frozen(kw_only=True)
class BatchProgress:
    """
    A snapshot of a running batch, passed to `pay_invoices(on_progress=...)`.

    Attributes:
        submitted: Requests taken from the input so far.
        in_flight: Requests being paid now.
        done: Outcomes yielded so far (this one included, when the snapshot comes with one).
        by_state: Outcomes so far per `PayOutcome.state`.
        elapsed: Seconds since the batch started.
        held: Items not sent, waiting for the gateway to answer again (part of `in_flight`).
        waiting_for_gateway: Whether the batch is holding its pays because the gateway is down
            (the breaker is open, or pays were refused or never connected); only probes are
            sent meanwhile.
    """

    submitted: int
    in_flight: int
    done: int
    by_state: dict[str, int]
    elapsed: float
    held: int = 0
    waiting_for_gateway: bool = False


#: The largest amount the SDK sends (the gateway documents amounts of 0.01-99999999).
MAX_AMOUNT = Decimal(99_999_999)


def parse_amount(value: object) -> Decimal:
    """
    Validate a money amount given by a caller.

    Args:
        value: The amount; must be a `Decimal` or an `int`.

    Returns:
        The amount as a `Decimal`.

    Raises:
        ConfigurationError: A float, a non-number, a value <= 0, above `MAX_AMOUNT`, or more than
            two decimals.
    """
    if not (is_integer(value) or isinstance(value, Decimal)):
        raise ConfigurationError(
            f"amount must be a Decimal (floats lose cents), got {type(value).__name__}"
        )
    amount = Decimal(value)
    if not amount.is_finite() or amount <= 0:
        raise ConfigurationError(f"amount must be a positive finite number, got {amount}")
    if amount > MAX_AMOUNT:
        raise ConfigurationError(f"amount must be at most {MAX_AMOUNT}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:  # noqa: PLR2004 - cents are the smallest unit
        raise ConfigurationError(f"amount must have at most two decimals, got {amount}")
    return amount


#: The granted claim of a customer never seen before.
CLAIM_GRANTED = PayClaim(granted=True, kind="fresh")
