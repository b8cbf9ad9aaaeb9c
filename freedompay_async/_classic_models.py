"""
The classic Merchant API's values: saved cards, a payment's status, refund/cancel/capture results.

Like `_models`, these never see XML: `_decode` converts each field and passes keywords. Money is
`Decimal`; a card token is shown masked in every `repr`.
"""

from __future__ import annotations

import enum
from decimal import Decimal

import attrs

from freedompay_async.masking import mask_token

__all__ = [
    "CancelResult",
    "CaptureResult",
    "CardAddition",
    "ClassicOperation",
    "PaymentState",
    "PaymentStatus",
    "RefundEntry",
    "RefundResult",
    "RemovedCard",
    "RevokeEntry",
    "SavedCard",
]


class ClassicOperation(enum.StrEnum):
    """The classic Merchant API operations the SDK speaks; the value names them in errors."""

    CARD_ADD = "card_add"
    CARD_LIST = "card_list"
    CARD_REMOVE = "card_remove"
    PAYMENT_STATUS = "payment_status"
    REFUND = "refund"
    CANCEL = "cancel"
    CAPTURE = "capture"

    @property
    def moves_money(self) -> bool:
        """Whether a duplicate of this request could move money (refund, cancel, capture)."""
        return self in _MONEY


_MONEY = frozenset({ClassicOperation.REFUND, ClassicOperation.CANCEL, ClassicOperation.CAPTURE})


class PaymentState(enum.StrEnum):
    """
    A payment's `pg_payment_status`, an open vocabulary.

    Only `success` appears in the official examples; the others come from the official mobile
    SDKs and third-party code. A value the SDK does not know decodes to `UNKNOWN`, the raw text
    kept beside it.
    """

    NEW = "new"
    WAITING = "waiting"
    PROCESSING = "processing"
    PENDING = "pending"
    SUCCESS = "success"
    OK = "ok"
    FAILED = "failed"
    ERROR = "error"
    INCOMPLETE = "incomplete"
    REVOKED = "revoked"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, raw: str | None) -> PaymentState:
        """
        Map a wire value (any letter case) to a state.

        Args:
            raw: The `pg_payment_status` text, or None.

        Returns:
            The matching member; `UNKNOWN` for None or a value the SDK does not know.
        """
        if raw is None:
            return cls.UNKNOWN
        member = _STATE_BY_VALUE.get(raw.strip().lower())
        return member if member is not None else cls.UNKNOWN

    @property
    def is_success(self) -> bool:
        """Whether the state means the money moved (`success` or `ok`)."""
        return self in (PaymentState.SUCCESS, PaymentState.OK)

    @property
    def is_failure(self) -> bool:
        """Whether the state means the money did not move and never will."""
        return self in (PaymentState.FAILED, PaymentState.ERROR, PaymentState.INCOMPLETE)


_STATE_BY_VALUE = {m.value: m for m in PaymentState if m is not PaymentState.UNKNOWN}


def _masked(value: str | None) -> str:
    return "None" if value is None else mask_token(value)


@attrs.frozen(kw_only=True)
class SavedCard:
    """
    One card saved for a user (`cardstorage/list`).

    Attributes:
        card_token: The token `pay_invoice` takes; masked in `repr`.
        card_hash: The masked card number, as the gateway sends it.
        card_id: The deprecated numeric card id, or None.
        status: The card's `pg_status` as sent (e.g. `success`), or None.
        recurring_profile_id: The recurring profile bound to the card, or None.
        created_at: When the card was saved, as sent, or None.
        bank: `bank_alias` (only with extended data), or None.
        brand: `brand_alias` (only with extended data), or None.
        expiry_month: `expiry_month` (only with extended data), or None.
        expiry_year: `expiry_year` (only with extended data), or None.
    """

    card_token: str = attrs.field(repr=mask_token)
    card_hash: str | None = None
    card_id: str | None = None
    status: str | None = None
    recurring_profile_id: str | None = None
    created_at: str | None = None
    bank: str | None = None
    brand: str | None = None
    expiry_month: int | None = None
    expiry_year: int | None = None


@attrs.frozen(kw_only=True)
class CardAddition:
    """
    The reply to `cardstorage/add`: where the user enters the card.

    The token is not in this reply: it reaches the `post_link` after the user has entered the
    card, and `cardstorage/list` shows it from then on.

    Attributes:
        redirect_url: The page to open in a browser or an iframe.
        payment_id: The gateway's id of the card-verification payment, or None.
        order_id: The order id, or None.
    """

    redirect_url: str
    payment_id: int | None = None
    order_id: str | None = None


@attrs.frozen(kw_only=True)
class RemovedCard:
    """
    The reply to `cardstorage/remove`.

    Attributes:
        card_hash: The masked number of the removed card, or None.
        deleted_at: When the card was removed, as sent, or None.
        status: The `pg_status` as sent (`success`), or None.
    """

    card_hash: str | None = None
    deleted_at: str | None = None
    status: str | None = None


@attrs.frozen(kw_only=True)
class RefundEntry:
    """
    One refund of a payment, from `pg_refund_payments`.

    Attributes:
        payment_id: The refund's own payment id, or None.
        state: Its status.
        state_raw: Its status as sent, or None.
        amount: The amount refunded, positive (the gateway writes it negative), or None.
        payment_date: When it was made, as sent (local time, no offset), or None.
        reference: The bank reference (RRN), or None.
    """

    payment_id: int | None
    state: PaymentState
    state_raw: str | None = None
    amount: Decimal | None = None
    payment_date: str | None = None
    reference: str | None = None


@attrs.frozen(kw_only=True)
class RevokeEntry:
    """
    One cancellation (reversal) of a payment, from `pg_revoked_payments`.

    Attributes:
        payment_id: The reversal's own payment id, or None.
        state: Its status.
        state_raw: Its status as sent, or None.
    """

    payment_id: int | None
    state: PaymentState
    state_raw: str | None = None


@attrs.frozen(kw_only=True)
class PaymentStatus:
    """
    A payment's state as `get_status3` reports it.

    Attributes:
        payment_id: The payment id, or None.
        order_id: The merchant's order id, or None.
        state: `pg_payment_status`.
        state_raw: `pg_payment_status` as sent, or None.
        amount: The payment amount, or None.
        currency: The currency code, or None.
        can_reject: `pg_can_reject` (whether it can still be cancelled), or None.
        captured: `pg_captured` (whether a hold was cleared), or None.
        clearing_amount: The amount cleared, or None.
        revoked_amount: The amount cancelled (`pg_revoke_amount`, or `pg_revoked_amount`), or
            None.
        refund_amount: The amount refunded so far, positive (the gateway writes it negative),
            or None.
        refunds: The refunds, in the order sent.
        revocations: The cancellations, in the order sent.
        payment_method: The payment method, or None.
        card_name: The card holder's name, or None.
        card_pan: The masked card number, or None.
        card_token: The card's token, or None; masked in `repr`.
        payment_date: When it was paid, as sent (local time, no offset), or None.
        create_date: When it was created, as sent, or None.
        reference: The bank reference (RRN), or None.
        auth_code: The authorisation code, or None.
        failure_code: `pg_failure_code`, or None.
        failure_description: `pg_failure_description`, or None.
    """

    payment_id: int | None
    state: PaymentState
    state_raw: str | None = None
    order_id: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    can_reject: bool | None = None
    captured: bool | None = None
    clearing_amount: Decimal | None = None
    revoked_amount: Decimal | None = None
    refund_amount: Decimal | None = None
    refunds: tuple[RefundEntry, ...] = ()
    revocations: tuple[RevokeEntry, ...] = ()
    payment_method: str | None = None
    card_name: str | None = None
    card_pan: str | None = None
    card_token: str | None = attrs.field(default=None, repr=_masked)
    payment_date: str | None = None
    create_date: str | None = None
    reference: str | None = None
    auth_code: str | None = None
    failure_code: int | None = None
    failure_description: str | None = None

    @property
    def refunded_total(self) -> Decimal:
        """
        The amount refunded so far: the larger of `refund_amount` and the successful refunds.

        Returns:
            A non-negative amount (0 when nothing was refunded).
        """
        listed = sum(
            (e.amount for e in self.refunds if e.amount is not None and e.state.is_success),
            Decimal(0),
        )
        return max(listed, self.refund_amount or Decimal(0))


@attrs.frozen(kw_only=True)
class RefundResult:
    """
    The reply to `revoke.php`.

    Attributes:
        payment_id: The refunded payment's id (as asked).
        refund_payment_id: `pg_revoke_payment_id`, the refund's own id, or None.
        amount: The amount asked for, or None for a full refund.
    """

    payment_id: int
    refund_payment_id: int | None = None
    amount: Decimal | None = None


@attrs.frozen(kw_only=True)
class CancelResult:
    """
    The reply to `cancel.php`.

    Attributes:
        payment_id: The cancelled payment's id (as asked).
        cancel_payment_id: `pg_cancel_payment_id`, the reversal's own id, or None.
    """

    payment_id: int
    cancel_payment_id: int | None = None


@attrs.frozen(kw_only=True)
class CaptureResult:
    """
    The reply to `do_capture.php`.

    Attributes:
        payment_id: The captured payment's id (as asked).
        amount: `pg_amount`, the payment's amount, or None.
        clearing_amount: `pg_clearing_amount`, the amount cleared, or None.
    """

    payment_id: int
    amount: Decimal | None = None
    clearing_amount: Decimal | None = None
