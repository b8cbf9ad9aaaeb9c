"""
What a payment's status allows a refund, cancel or capture to do, and what a settled one returns.

Pure rules shared by the classic call and the client: `check_before` refuses a write that the
status read before it shows cannot or must not land (nothing is sent), and `settled_outcome`
turns a status read that settled a write in doubt into the write's result, or the refusal it
proves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from freedompay_async._classic_errors import ExcessRefundError, WriteRefusedError
from freedompay_async._classic_models import (
    CancelResult,
    CaptureResult,
    ClassicOperation,
    PaymentState,
    RefundResult,
)
from freedompay_async._classic_settle import refundable_amount

if TYPE_CHECKING:
    from decimal import Decimal

    from freedompay_async._classic_models import PaymentStatus
    from freedompay_async._classic_settle import WriteFinding

__all__ = ["check_before", "settled_outcome"]

_REVERSED: Final = frozenset({PaymentState.REVOKED, PaymentState.CANCELLED})


def _refuse(operation: ClassicOperation, payment_id: int, reason: str) -> WriteRefusedError:
    return WriteRefusedError(
        f"{operation.value} of payment_id={payment_id} not sent: {reason}",
        operation=operation.value,
        payment_id=payment_id,
        reason=reason,
    )


def _reversed(status: PaymentStatus) -> bool:
    return bool(
        status.state in _REVERSED
        or status.revocations
        or (status.revoked_amount is not None and status.revoked_amount > 0)
    )


def _captured(status: PaymentStatus) -> bool:
    return bool(
        status.captured or (status.clearing_amount is not None and status.clearing_amount > 0)
    )


def check_before(
    operation: ClassicOperation, payment_id: int, amount: Decimal | None, before: PaymentStatus
) -> None:
    """
    Refuse a write that the status read before it shows cannot or must not land.

    Args:
        operation: `REFUND`, `CANCEL` or `CAPTURE`.
        payment_id: The payment.
        amount: The amount asked for (None: full; always None for a cancel).
        before: The payment's status, read just before.

    Raises:
        ExcessRefundError: A refund of more than is left (or of nothing left).
        WriteRefusedError: A capture of a captured or cancelled payment or of more than is held;
            a cancel of a captured or cancelled payment.
    """
    if operation is ClassicOperation.REFUND:
        left = refundable_amount(before)
        if left is not None and (left <= 0 or (amount is not None and amount > left)):
            asked = "(full)" if amount is None else str(amount)
            raise ExcessRefundError(
                f"refund of payment_id={payment_id} not sent: amount {asked} is more than the "
                f"{left} left to refund",
                payment_id=payment_id,
                reason="more than is left to refund",
                amount=amount,
                refundable=left,
            )
    elif operation is ClassicOperation.CAPTURE:
        if _captured(before):
            raise _refuse(operation, payment_id, "already captured")
        if _reversed(before):
            raise _refuse(operation, payment_id, "the payment is cancelled")
        if amount is not None and before.amount is not None and amount > before.amount:
            raise _refuse(operation, payment_id, f"more than the {before.amount} held")
    elif _captured(before):
        raise _refuse(operation, payment_id, "already captured; refund it instead")
    elif _reversed(before):
        raise _refuse(operation, payment_id, "already cancelled")


def _landed(
    operation: ClassicOperation,
    finding: WriteFinding,
    status: PaymentStatus,
    before: PaymentStatus | None,
) -> bool:
    """Whether a SETTLED finding means the write took effect (else it cannot)."""
    if operation is ClassicOperation.REFUND:
        if finding.refund is not None:
            return finding.refund.state.is_success
        # No entry to point at: it landed only if the refunded total grew.
        base = before.refunded_total if before is not None else 0
        return status.refunded_total > base
    if operation is ClassicOperation.CANCEL:
        return _reversed(status)
    return _captured(status)


def settled_outcome(  # noqa: PLR0917 - the facts of one settled write
    operation: ClassicOperation,
    finding: WriteFinding,
    status: PaymentStatus,
    before: PaymentStatus | None,
    payment_id: int,
    amount: Decimal | None,
) -> RefundResult | CancelResult | CaptureResult | WriteRefusedError:
    """
    Turn a status read that settled a write (`Verdict.SETTLED`) into its result.

    Args:
        operation: `REFUND`, `CANCEL` or `CAPTURE`.
        finding: The settle rule's finding on *status*.
        status: The read that settled it.
        before: The read taken before the write, if any.
        payment_id: The payment.
        amount: The amount asked for (None: full).

    Returns:
        The write's result, or a `WriteRefusedError` (to raise) when the status shows that it
        failed or can no longer land.
    """
    if not _landed(operation, finding, status, before):
        return WriteRefusedError(
            f"{operation.value} of payment_id={payment_id} did not land: {finding.reason}",
            operation=operation.value,
            payment_id=payment_id,
            reason=finding.reason,
        )
    if operation is ClassicOperation.REFUND:
        entry = finding.refund
        return RefundResult(
            payment_id=payment_id,
            refund_payment_id=entry.payment_id if entry is not None else None,
            amount=amount if amount is not None or entry is None else entry.amount,
        )
    if operation is ClassicOperation.CANCEL:
        revoke = status.revocations[-1].payment_id if status.revocations else None
        return CancelResult(payment_id=payment_id, cancel_payment_id=revoke)
    return CaptureResult(
        payment_id=payment_id,
        amount=status.amount,
        clearing_amount=status.clearing_amount or amount,
    )
