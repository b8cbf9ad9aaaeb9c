"""
What a `get_status3` read proves about a refund, cancel or capture that may have been written.

None of these operations has an idempotency key, so after an ambiguous failure only the
payment's status can tell whether the write landed. The rule speaks the vocabulary of
`freedompay_async.settlement` (`Verdict`, `SettlePolicy`): the same question as for a pay, asked
of a different status.

The read is compared with a read taken *before* the write (`before`; None means "assume nothing
was refunded, cancelled or captured", which can only make the answer more cautious):

```
write     the after-read shows                                   verdict
-------   ----------------------------------------------------   ----------------------------
refund    a new refund entry of the asked amount, succeeded       SETTLED     (landed)
          ... failed                                             SETTLED     (refused; terminal)
          ... still pending or of unknown state                  PENDING
          a new refund of another amount, or a refunded total    IN_DOUBT    (cannot attribute)
            that grew by another amount
          the refunded total grew by the asked amount            SETTLED     (landed)
          the payment fully refunded                             SETTLED     (nothing is left)
cancel    a new reversal, a revoked amount, revoked/cancelled    SETTLED (PENDING if pending)
          captured                                               SETTLED     (cannot land now)
capture   captured or a cleared amount                           SETTLED     (never twice)
          revoked/cancelled, or the payment failed               SETTLED     (cannot land now)
any       nothing changed, never possibly written                NOT_LANDED
          nothing changed, read >= window after the last write   NOT_LANDED  (the window proves it)
          nothing changed, read <  window (or no window)         IN_DOUBT    (status lag)
```

"Nothing changed" is not proof by itself: the live gateway shows a capture only seconds later,
so by default (`SettlePolicy()`, no window) it never proves that a write did not land.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

import attrs

from freedompay_async._classic_models import (
    ClassicOperation,
    PaymentState,
    PaymentStatus,
    RefundEntry,
    RevokeEntry,
)
from freedompay_async._exceptions import ConfigurationError
from freedompay_async.settlement import SettlePolicy, Verdict

__all__ = ["WriteFinding", "refundable_amount", "settle_write"]

_ZERO = Decimal(0)
_Entry = TypeVar("_Entry", RefundEntry, RevokeEntry)
_REVERSED = frozenset({PaymentState.REVOKED, PaymentState.CANCELLED})


@attrs.frozen(kw_only=True)
class WriteFinding:
    """
    The verdict on one write, and why.

    Attributes:
        verdict: What the read proves.
        reason: One line for logs and error messages.
        refund: The refund entry that proves a refund landed (or failed, or is pending), if any.
    """

    verdict: Verdict
    reason: str
    refund: RefundEntry | None = None


def refundable_amount(status: PaymentStatus) -> Decimal | None:
    """
    Return how much of a payment may still be refunded, by this read.

    Args:
        status: The payment's status.

    Returns:
        The cleared amount (else the amount) minus what was refunded, never below 0; None when
        the read carries no amount.
    """
    base = status.clearing_amount or status.amount
    if base is None:
        return None
    return max(base - status.refunded_total, _ZERO)


def _new(before: tuple[_Entry, ...], after: tuple[_Entry, ...]) -> list[_Entry]:
    """Entries in *after* that *before* lacks: by payment id when all have one, else by count."""
    if all(e.payment_id is not None for e in (*before, *after)):
        seen = {e.payment_id for e in before}
        return [e for e in after if e.payment_id not in seen]
    return list(after[len(before) :])


def _unchanged(
    what: str, *, read_at: float, last_write_at: float | None, policy: SettlePolicy | None
) -> WriteFinding:
    if last_write_at is None:
        return WriteFinding(verdict=Verdict.NOT_LANDED, reason=f"{what} was never sent")
    window = (policy or SettlePolicy()).new_proves_not_landed_after
    if window is not None and read_at - last_write_at >= window:
        return WriteFinding(
            verdict=Verdict.NOT_LANDED,
            reason=f"no trace of the {what} {read_at - last_write_at:.1f}s after it was sent",
        )
    return WriteFinding(
        verdict=Verdict.IN_DOUBT,
        reason=f"no trace of the {what} yet; the status may lag behind it",
    )


def _by_entry_state(entry: RefundEntry | None, state: PaymentState, what: str) -> WriteFinding:
    if state.is_success:
        return WriteFinding(verdict=Verdict.SETTLED, reason=f"the {what} landed", refund=entry)
    if state.is_failure:
        return WriteFinding(verdict=Verdict.SETTLED, reason=f"the {what} failed", refund=entry)
    return WriteFinding(
        verdict=Verdict.PENDING, reason=f"the {what} is still being processed", refund=entry
    )


def _refund(
    amount: Decimal | None, before: PaymentStatus | None, after: PaymentStatus
) -> WriteFinding | None:
    base_total = before.refunded_total if before is not None else _ZERO
    expected = amount
    if expected is None and after.amount is not None:
        expected = after.amount - base_total
    new = _new(before.refunds if before is not None else (), after.refunds)
    matching = [e for e in new if expected is not None and e.amount == expected]
    if matching:
        entry = next((e for e in matching if e.state.is_success), matching[0])
        return _by_entry_state(entry, entry.state, "refund")
    if new:
        return WriteFinding(
            verdict=Verdict.IN_DOUBT, reason="a refund of another amount appeared; not attributed"
        )
    grown = after.refunded_total - base_total
    if grown > 0:
        if expected is not None and grown == expected:
            return WriteFinding(verdict=Verdict.SETTLED, reason="the refunded total grew by it")
        return WriteFinding(
            verdict=Verdict.IN_DOUBT, reason="the refunded total grew by another amount"
        )
    if after.state is PaymentState.REFUNDED or (
        after.amount is not None and after.refunded_total >= after.amount > 0
    ):
        return WriteFinding(verdict=Verdict.SETTLED, reason="the payment is fully refunded")
    return None


def _cancel(before: PaymentStatus | None, after: PaymentStatus) -> WriteFinding | None:
    new = _new(before.revocations if before is not None else (), after.revocations)
    if new:
        return _by_entry_state(None, new[-1].state, "cancel")
    if after.state in _REVERSED or (after.revoked_amount or _ZERO) > 0:
        return WriteFinding(verdict=Verdict.SETTLED, reason="the payment is cancelled")
    if after.captured:
        return WriteFinding(verdict=Verdict.SETTLED, reason="captured: a cancel can no longer land")
    return None


def _capture(after: PaymentStatus) -> WriteFinding | None:
    if after.captured or (after.clearing_amount or _ZERO) > 0:
        return WriteFinding(verdict=Verdict.SETTLED, reason="the payment is captured")
    if after.state in _REVERSED or after.revocations or (after.revoked_amount or _ZERO) > 0:
        return WriteFinding(verdict=Verdict.SETTLED, reason="cancelled: a capture cannot land")
    if after.state.is_failure:
        return WriteFinding(verdict=Verdict.SETTLED, reason="the payment failed")
    return None


def settle_write(
    operation: ClassicOperation,
    *,
    amount: Decimal | None,
    before: PaymentStatus | None,
    after: PaymentStatus,
    read_at: float,
    last_write_at: float | None,
    policy: SettlePolicy | None = None,
) -> WriteFinding:
    """
    Decide what one status read proves about a refund, cancel or capture (see the table above).

    Args:
        operation: `REFUND`, `CANCEL` or `CAPTURE`.
        amount: The amount the write asked for; None for a full refund or capture (and cancel).
        before: A read of the same payment taken before the first send, or None.
        after: The read to judge.
        read_at: When *after* was answered (any clock, the same as `last_write_at`'s).
        last_write_at: The last moment the write could have been sent, or None when it never was.
        policy: When "nothing changed" proves "never landed"; `SettlePolicy()` (never) if None.

    Returns:
        The verdict and its reason.

    Raises:
        ConfigurationError: *operation* does not move money, or the two reads are of different
            payments.
    """
    if not operation.moves_money:
        raise ConfigurationError(f"operation must be refund, cancel or capture, not {operation}")
    if (
        before is not None
        and before.payment_id is not None
        and after.payment_id is not None
        and before.payment_id != after.payment_id
    ):
        raise ConfigurationError("before and after must be reads of the same payment_id")
    if operation is ClassicOperation.REFUND:
        found = _refund(amount, before, after)
    elif operation is ClassicOperation.CANCEL:
        found = _cancel(before, after)
    else:
        found = _capture(after)
    if found is not None:
        return found
    return _unchanged(operation.value, read_at=read_at, last_write_at=last_write_at, policy=policy)
