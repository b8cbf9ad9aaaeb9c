"""
The refusals and doubts of the classic money-moving writes: refund, cancel and capture.

None of these writes has an idempotency key, so the client claims each one before it is sent
(`WriteClaim`), checks it against a status read taken first (`WriteRefusedError`,
`ExcessRefundError`), and reports a write whose outcome no status read could settle as
`AmbiguousWriteError` instead of sending it again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from freedompay_async._exceptions import AmbiguousPaymentError, FreedomPayError

if TYPE_CHECKING:
    from decimal import Decimal

__all__ = [
    "AmbiguousWriteError",
    "DuplicateWriteError",
    "ExcessRefundError",
    "WriteClaim",
    "WriteRefusedError",
]


@attrs.frozen(kw_only=True)
class WriteClaim:
    """
    A refund, cancel or capture as the client's duplicate guard holds it.

    Attributes:
        operation: `refund`, `cancel` or `capture`.
        payment_id: The payment written to.
        amount: The amount asked for; None for a full refund or capture, and for cancel.
        state: `in_flight` while the write runs; afterwards how it ended (`done`, `ambiguous`).
    """

    operation: str
    payment_id: int
    amount: Decimal | None
    state: str


class DuplicateWriteError(FreedomPayError):
    """
    The same refund (payment and amount), cancel or capture was already sent by this client.

    Nothing was sent. A second refund of the same amount is refused even when the first ended:
    that is what a resend after a lost reply looks like, and it would refund twice.

    Attributes:
        payment_id: The payment.
        claim: The claim already held: its operation, amount and state.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        attempts: int = 0,
        payment_id: int | None = None,
        claim: WriteClaim | None = None,
    ) -> None:
        super().__init__(message, operation=operation, attempts=attempts)
        self.payment_id = payment_id
        self.claim = claim

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "payment_id": self.payment_id, "claim": self.claim}


class WriteRefusedError(FreedomPayError):
    """
    The write cannot land, as a status read shows; nothing was sent (or nothing moved).

    Attributes:
        payment_id: The payment.
        reason: Why, in a few words (`already captured`, `the refund failed`, ...).
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        attempts: int = 0,
        payment_id: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, operation=operation, attempts=attempts)
        self.payment_id = payment_id
        self.reason = reason

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "payment_id": self.payment_id, "reason": self.reason}


class ExcessRefundError(WriteRefusedError):
    """
    The refund asks for more than is left to refund; nothing was sent.

    Attributes:
        amount: The amount asked for (None: the full remainder).
        refundable: What the status read before the refund leaves to refund.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = "refund",
        attempts: int = 0,
        payment_id: int | None = None,
        reason: str | None = None,
        amount: Decimal | None = None,
        refundable: Decimal | None = None,
    ) -> None:
        super().__init__(
            message, operation=operation, attempts=attempts, payment_id=payment_id, reason=reason
        )
        self.amount = amount
        self.refundable = refundable

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "amount": self.amount, "refundable": self.refundable}


class AmbiguousWriteError(AmbiguousPaymentError):
    """
    A refund, cancel or capture may or may not have landed; read `payment_status` first.

    Attributes:
        payment_id: The payment.
        amount: The amount the write asked for (None: full, or a cancel).
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        attempts: int = 0,
        customer: str | None = None,
        payment_id: int | None = None,
        amount: Decimal | None = None,
    ) -> None:
        super().__init__(message, operation=operation, attempts=attempts, customer=customer)
        self.payment_id = payment_id
        self.amount = amount

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "payment_id": self.payment_id, "amount": self.amount}
