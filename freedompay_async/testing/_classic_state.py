"""
The emulator's truth for the classic Merchant API: saved cards per user, payments and their life.

Cards: `cardstorage/add` opens a pending entry (a card-verification payment id); a test completes
it (`complete_card_entry`), which issues a token for that user; `list` and `remove` work on the
issued tokens. A removed token is no longer issued.

Payments: a one-step payment is captured at once; a hold (two-step) waits for a capture or a
cancel. Refunds need a captured payment and never exceed what was cleared minus what was already
refunded; each refund is a row with its own payment id. Every committed refund, capture and
cancel is counted per payment, so a test can see a double capture or an over-refund.

Statuses are spelled as on the wire: `success` for a live payment, `revoked` once cancelled,
`refunded` once nothing is left to refund.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import random
    from collections.abc import Iterator, Sequence

__all__ = [
    "CardStore",
    "ClassicItem",
    "ClassicRefusalError",
    "Payment",
    "PaymentBook",
    "RefundRow",
]

#: A reply field: text, or nested fields.
ClassicItem = tuple[str, "str | Sequence[ClassicItem]"]

_LOCAL_TZ: Final = timezone(timedelta(hours=5))
_FIRST_PAYMENT_ID: Final = 500_000_001
_ERR_NOT_FOUND: Final = 340
_ERR_IMPOSSIBLE: Final = 490


class ClassicRefusalError(Exception):
    """The gateway refuses the operation (answered `pg_status=error` with this code)."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(code, description)
        self.code = code
        self.description = description


def local_now() -> str:
    """The gateway's local time as it writes `pg_payment_date`: no offset."""
    return datetime.now(_LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S")


def masked_hash(card_token: str) -> str:
    """A masked card number derived from a token, stable for the same token."""
    digest = hashlib.sha256(card_token.encode()).digest()
    return f"4405-63XX-XXXX-{int.from_bytes(digest[:4], 'big') % 10_000:04d}"


class _Card:
    __slots__ = ("card_hash", "card_id", "created_at", "token")

    def __init__(self, token: str, card_id: int) -> None:
        self.token = token
        self.card_id = card_id
        self.card_hash = masked_hash(token)
        self.created_at = local_now()


class CardStore:
    """Cards per user: pending entries (by payment id), then issued tokens."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._pending: dict[int, str] = {}
        self._cards: dict[str, dict[str, _Card]] = {}
        self._next_card_id = 1

    def open_entry(self, payment_id: int, user_id: str) -> None:
        """Remember a card entry the user has still to complete."""
        self._pending[payment_id] = user_id

    def complete(self, payment_id: int) -> tuple[str, str]:
        """
        Complete a pending card entry: issue a token to its user.

        Returns:
            (user id, token).

        Raises:
            KeyError: No pending entry has this payment id.
        """
        user_id = self._pending.pop(payment_id)
        return user_id, self.issue(user_id)

    def issue(self, user_id: str) -> str:
        """Save a new card for *user_id* and return its token."""
        token = f"{self._rng.getrandbits(160):040x}"
        self._cards.setdefault(user_id, {})[token] = _Card(token, self._next_card_id)
        self._next_card_id += 1
        return token

    def cards(self, user_id: str) -> list[_Card]:
        """The user's cards in the order they were saved."""
        return list(self._cards.get(user_id, {}).values())

    def remove(self, user_id: str, token: str) -> _Card:
        """
        Remove a card.

        Raises:
            ClassicRefusalError: The user has no card with this token.
        """
        card = self._cards.get(user_id, {}).pop(token, None)
        if card is None:
            raise ClassicRefusalError(_ERR_NOT_FOUND, "Card not found")
        return card

    def issued(self, user_id: str, token: str) -> bool:
        """Whether *token* is a live card of *user_id*."""
        return token in self._cards.get(user_id, {})


class RefundRow:
    """One committed refund."""

    __slots__ = ("amount", "date", "payment_id")

    def __init__(self, payment_id: int, amount: Decimal) -> None:
        self.payment_id = payment_id
        self.amount = amount
        self.date = local_now()


class Payment:
    """One payment as the gateway keeps it."""

    __slots__ = (
        "amount",
        "cancels",
        "captured",
        "captures",
        "clearing_amount",
        "currency",
        "hold",
        "order_id",
        "payment_id",
        "previous",
        "refunds",
        "revocations",
        "status",
    )

    def __init__(
        self, *, payment_id: int, order_id: str, amount: Decimal, currency: str, hold: bool
    ) -> None:
        self.payment_id = payment_id
        self.order_id = order_id
        self.amount = amount
        self.currency = currency
        self.hold = hold
        self.captured = not hold
        self.clearing_amount: Decimal | None = None if hold else amount
        self.status = "success"
        self.refunds: list[RefundRow] = []
        self.revocations: list[int] = []
        self.captures = 0
        self.cancels = 0
        # The reply fields as they were before the latest write, for stale (lagging) reads.
        self.previous: list[ClassicItem] | None = None

    @property
    def refunded(self) -> Decimal:
        """What was refunded so far."""
        return sum((row.amount for row in self.refunds), Decimal(0))

    @property
    def refundable(self) -> Decimal:
        """What may still be refunded."""
        cleared = self.clearing_amount if self.clearing_amount is not None else Decimal(0)
        return cleared - self.refunded


class PaymentBook:
    """Every payment by id and order id, and the rules of refund, cancel and capture."""

    def __init__(self, *, adversarial: bool) -> None:
        self._adversarial = adversarial
        self._by_id: dict[int, Payment] = {}
        self._by_order: dict[str, Payment] = {}
        self._next_id = _FIRST_PAYMENT_ID

    def __iter__(self) -> Iterator[Payment]:
        return iter(self._by_id.values())

    def new_id(self) -> int:
        """Draw the next payment id (payments, refunds, reversals and card entries share it)."""
        self._next_id += 1
        return self._next_id - 1

    def add(
        self,
        *,
        amount: Decimal,
        currency: str,
        order_id: str | None,
        hold: bool,
        payment_id: int | None = None,
    ) -> Payment:
        """Record a payment that succeeded (captured at once unless *hold*)."""
        pid = payment_id if payment_id is not None else self.new_id()
        payment = Payment(
            payment_id=pid,
            order_id=order_id if order_id is not None else f"order-{pid}",
            amount=amount,
            currency=currency,
            hold=hold,
        )
        self._by_id[pid] = payment
        self._by_order[payment.order_id] = payment
        return payment

    def get(self, payment_id: int) -> Payment | None:
        """The payment with this id, if any."""
        return self._by_id.get(payment_id)

    def by_order(self, order_id: str) -> Payment | None:
        """The newest payment with this order id, if any."""
        return self._by_order.get(order_id)

    def refund(self, payment: Payment, amount: Decimal | None) -> RefundRow:
        """
        Commit a refund of *amount* (None: all that is left).

        Raises:
            ClassicRefusalError: Not captured, cancelled, nothing left, or more than is left.
        """
        if not payment.captured or payment.status == "revoked":
            raise ClassicRefusalError(_ERR_IMPOSSIBLE, "Refund impossible: payment not cleared")
        left = payment.refundable
        asked = left if amount is None else amount
        if left <= 0 or asked > left:
            raise ClassicRefusalError(_ERR_IMPOSSIBLE, "Refund amount exceeds the payment")
        row = RefundRow(self.new_id(), asked)
        payment.refunds.append(row)
        if payment.refundable <= 0:
            payment.status = "refunded"
        return row

    def cancel(self, payment: Payment) -> int:
        """
        Commit the cancel of a hold; return the reversal's payment id.

        Raises:
            ClassicRefusalError: Not a hold, already captured or already cancelled.
        """
        if not payment.hold or payment.captured or payment.status == "revoked":
            raise ClassicRefusalError(_ERR_IMPOSSIBLE, "Cancel impossible")
        reversal = self.new_id()
        payment.revocations.append(reversal)
        payment.status = "revoked"
        payment.cancels += 1
        return reversal

    def capture(self, payment: Payment, amount: Decimal | None) -> Decimal:
        """
        Commit the capture of a hold; return the amount cleared.

        In adversarial mode a second capture of a captured hold commits again, so a test sees
        a client that captured twice.

        Raises:
            ClassicRefusalError: Not a hold, cancelled, captured, or more than was authorised.
        """
        if not payment.hold or payment.status == "revoked":
            raise ClassicRefusalError(_ERR_IMPOSSIBLE, "Capture impossible")
        asked = payment.amount if amount is None else amount
        if asked > payment.amount:
            raise ClassicRefusalError(_ERR_IMPOSSIBLE, "Clearing amount exceeds the payment")
        if payment.captured and not self._adversarial:
            raise ClassicRefusalError(_ERR_IMPOSSIBLE, "Payment already captured")
        payment.captured = True
        payment.clearing_amount = asked
        payment.captures += 1
        return asked
