"""
How the emulator processes each classic request once its fields are checked.

Each `plan_*` function checks a request's fields (raising `ClassicRefusalError`, answered as a
`pg_status=error` reply) and returns a function that commits the request and returns the reply
fields, so that a fault can strike before or after the commit.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Final

from freedompay_async.testing._classic_state import ClassicRefusalError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from freedompay_async.testing._classic_state import CardStore, Payment, PaymentBook
    from freedompay_async.testing._classic_wire import ClassicItem

__all__ = ["find_payment", "plan_card", "plan_write", "require_unique", "required"]

_ERR_REQUEST: Final = 200
_ERR_NOT_FOUND: Final = 340


def _amount(fields: Mapping[str, str], name: str) -> Decimal | None:
    text = fields.get(name)
    if text is None:
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise ClassicRefusalError(_ERR_REQUEST, f"{name} is not a number") from exc
    if not amount.is_finite() or amount <= 0:
        raise ClassicRefusalError(_ERR_REQUEST, f"{name} must be positive")
    return amount


def require_unique(fields: Sequence[tuple[str, str]]) -> None:
    """
    Refuse a request that repeats a field.

    Raises:
        ClassicRefusalError: A field name appears twice.
    """
    if len({name for name, _ in fields}) != len(fields):
        raise ClassicRefusalError(_ERR_REQUEST, "a field is repeated")


def required(fields: Mapping[str, str], *names: str) -> None:
    for name in names:
        if not fields.get(name):
            raise ClassicRefusalError(_ERR_REQUEST, f"field {name} is required")


def find_payment(
    values: Mapping[str, str],
    *,
    payments: PaymentBook,
    lookup: Callable[[int | None, str | None], tuple[int, str, Decimal, str] | None],
) -> Payment:
    """
    Find the payment a request names by `pg_payment_id` (else `pg_order_id`).

    A paid invoice found by *lookup* becomes a payment on first use, its invoice id the
    payment id.

    Raises:
    ClassicRefusalError: Neither field is given, the id is not an integer, or no payment.
    """
    text = values.get("pg_payment_id")
    order_id = values.get("pg_order_id")
    payment_id = None
    if text:
        if not (text.isascii() and text.isdigit()):
            raise ClassicRefusalError(_ERR_REQUEST, "pg_payment_id must be an integer")
        payment_id = int(text)
    elif not order_id:
        raise ClassicRefusalError(_ERR_REQUEST, "field pg_payment_id is required")
    found = payments.get(payment_id) if payment_id is not None else payments.by_order(str(order_id))
    if found is not None:
        return found
    invoice = lookup(payment_id, None if payment_id is not None else order_id)
    if invoice is None:
        raise ClassicRefusalError(_ERR_NOT_FOUND, "Payment not found")
    invoice_id, invoice_order, amount, currency = invoice
    return payments.add(
        amount=amount,
        currency=currency,
        order_id=invoice_order,
        hold=False,
        payment_id=invoice_id,
    )


def plan_write(
    operation: str,
    values: Mapping[str, str],
    payment: Payment,
    *,
    payments: PaymentBook,
    remember: Callable[[Payment], None],
) -> Callable[[], list[ClassicItem]]:
    """
    Check a refund, cancel or capture request; return how to commit it.

    *remember* is called before each commit, to keep the status a lagging read shows.

    Raises:
        ClassicRefusalError: An amount is not a positive number.
    """
    if operation == "refund":
        amount = _amount(values, "pg_refund_amount")

        def refund() -> list[ClassicItem]:
            remember(payment)
            row = payments.refund(payment, amount)
            return [("pg_status", "ok"), ("pg_revoke_payment_id", str(row.payment_id))]

        return refund
    if operation == "cancel":

        def cancel() -> list[ClassicItem]:
            remember(payment)
            reversal = payments.cancel(payment)
            return [("pg_status", "ok"), ("pg_cancel_payment_id", str(reversal))]

        return cancel
    amount = _amount(values, "pg_clearing_amount")

    def capture() -> list[ClassicItem]:
        remember(payment)
        cleared = payments.capture(payment, amount)
        return [
            ("pg_status", "ok"),
            ("pg_amount", format(payment.amount, "f")),
            ("pg_clearing_amount", format(cleared, "f")),
        ]

    return capture


def plan_card(
    operation: str,
    values: Mapping[str, str],
    *,
    cards: CardStore,
    payments: PaymentBook,
    merchant_id: str,
    base_url: str,
) -> Callable[[], list[ClassicItem]]:
    """
    Check a card-storage request; return how to process it.

    Raises:
        ClassicRefusalError: A required field is missing.
    """
    required(values, "pg_user_id")
    user_id = values["pg_user_id"]
    if operation == "card_add":
        required(values, "pg_back_link")

        def add() -> list[ClassicItem]:
            payment_id = payments.new_id()
            cards.open_entry(payment_id, user_id)
            url = (
                f"{base_url}/v1/merchant/{merchant_id}/cardstorage/view?pg_payment_id={payment_id}"
            )
            items: list[ClassicItem] = [
                ("pg_status", "ok"),
                ("pg_payment_id", str(payment_id)),
                ("pg_merchant_id", merchant_id),
                ("pg_redirect_url", url),
                ("pg_type", "init"),
            ]
            if values.get("pg_order_id"):
                items.append(("pg_order_id", values["pg_order_id"]))
            return items

        return add
    if operation == "card_list":
        extended = values.get("pg_extend_data") == "1"

        def list_cards() -> list[ClassicItem]:
            out: list[ClassicItem] = []
            for card in cards.cards(user_id):
                fields: list[ClassicItem] = [
                    ("pg_status", "success"),
                    ("pg_merchant_id", merchant_id),
                    ("pg_card_id", str(card.card_id)),
                    ("pg_card_token", card.token),
                    ("pg_card_hash", card.card_hash),
                    ("created_at", card.created_at),
                ]
                if extended:
                    fields += [
                        ("bank_alias", "emulator-bank"),
                        ("brand_alias", "VISA"),
                        ("expiry_year", "2030"),
                        ("expiry_month", "12"),
                    ]
                out.append(("card", fields))
            return out

        return list_cards
    required(values, "pg_card_token")
    token = values["pg_card_token"]

    def remove() -> list[ClassicItem]:
        card = cards.remove(user_id, token)
        return [
            (
                "card",
                [
                    ("pg_status", "success"),
                    ("pg_merchant_id", merchant_id),
                    ("pg_card_hash", card.card_hash),
                    ("deleted_at", card.created_at),
                ],
            )
        ]

    return remove
