"""The verified notifications a callback receives: Check and Result, and the merchant's answer."""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 - attrs resolves the annotations at runtime
from decimal import Decimal  # noqa: TC003 - attrs resolves the annotations at runtime
from typing import Literal, TypeAlias

import attrs

from freedompay_async.masking import mask_token

__all__ = [
    "CallbackAnswer",
    "CallbackStatus",
    "CheckNotification",
    "Notification",
    "ResultNotification",
]

#: The merchant's answer to a notification.
CallbackStatus: TypeAlias = Literal["ok", "rejected", "error"]
#: What a business callback returns: a status, or a status and a description for the payer.
CallbackAnswer: TypeAlias = "CallbackStatus | tuple[CallbackStatus, str]"

STATUS_BY_TEXT: dict[str, CallbackStatus] = {"ok": "ok", "rejected": "rejected", "error": "error"}


def _mask_pan(pan: str | None) -> str:
    """Show only the last four digits of a card number."""
    if pan is None:
        return "None"
    return repr(mask_token("".join(char for char in pan if char.isdigit())))


def _names_only(fields: dict[str, str]) -> str:
    """Show a dict's keys but not its values."""
    return repr(sorted(fields))


@attrs.frozen(kw_only=True)
class CheckNotification:
    """
    A verified Check request: Freedom Pay asks whether it may take the payment.

    Answer `ok` to accept, `rejected` to refuse, `error` when the data cannot be interpreted.

    Attributes:
        order_id: The merchant's order id (`pg_order_id`).
        payment_id: Freedom Pay's payment id (`pg_payment_id`).
        amount: The amount, as at init (`pg_amount`).
        currency: The currency code (`pg_currency`).
        salt: The notification's `pg_salt`, echoed in the reply.
        script_name: The script name the signature was verified with.
        ps_amount: The amount in the payment system's currency, or None.
        ps_currency: The payment system's currency, or None.
        ps_full_amount: The total including fees, or None.
        merchant_params: The merchant's own (non-`pg_`) fields sent at init; nested ones under
            bracket names (`cart[0][sku]`).
        unknown_fields: `pg_` fields this model does not know (shown by name only in `repr`).
    """

    order_id: str
    payment_id: int
    amount: Decimal
    currency: str
    salt: str
    script_name: str
    ps_amount: Decimal | None = None
    ps_currency: str | None = None
    ps_full_amount: Decimal | None = None
    merchant_params: dict[str, str] = attrs.field(factory=dict)
    unknown_fields: dict[str, str] = attrs.field(factory=dict, repr=_names_only)


@attrs.frozen(kw_only=True)
class ResultNotification:
    """
    A verified Result notification: the outcome of a payment.

    Answer `ok` once it is recorded; `rejected` refuses the payment (only honoured when
    `can_reject`; Freedom Pay then reverses it); `error` when the data cannot be interpreted. The
    same notification may arrive several times and must get the same answer (`ReplayGuard`).

    Attributes:
        order_id: The merchant's order id (`pg_order_id`).
        payment_id: Freedom Pay's payment id (`pg_payment_id`), the idempotency key.
        amount: The amount (`pg_amount`).
        currency: The currency code (`pg_currency`).
        result: `pg_result`: 1 success, 0 failure (other values are kept as sent).
        salt: The notification's `pg_salt`, echoed in the reply.
        script_name: The script name the signature was verified with.
        net_amount: The amount minus the commission, or None.
        ps_amount: The amount in the payment system's currency, or None.
        ps_currency: The payment system's currency, or None.
        ps_full_amount: The total including fees, or None.
        description: The payment's description, or None.
        payment_date: When the payment was made (`YYYY-MM-DD HH:MM:SS`, naive), or None.
        can_reject: Whether the merchant may still refuse the payment (`pg_can_reject=1`).
        testing_mode: Whether the payment was made in test mode, or None when not sent.
        captured: Whether the money was captured, or None when not sent.
        user_phone: The payer's phone, or None.
        user_contact_email: The payer's e-mail, or None.
        card_id: The saved card's id (deprecated by Freedom Pay), or None.
        card_token: The saved card's token, or None; never shown in `repr`.
        card_pan: The masked card number as sent (`5483-18XX-XXXX-0293`); `repr` shows the last
            four digits only.
        card_exp: The card's expiry (`03/23`), or None.
        card_owner: The cardholder's name, or None; never shown in `repr`.
        card_brand: The card brand (`VI`), or None.
        payment_method: How the payer paid (`bankcard`), or None.
        discount_percent: The discount in percent, or None.
        discount_amount: The discount amount, or None.
        merchant_params: The merchant's own (non-`pg_`) fields sent at init; nested ones under
            bracket names (`cart[0][sku]`).
        unknown_fields: `pg_` fields this model does not know (shown by name only in `repr`).
    """

    order_id: str
    payment_id: int
    amount: Decimal
    currency: str
    result: int
    salt: str
    script_name: str
    net_amount: Decimal | None = None
    ps_amount: Decimal | None = None
    ps_currency: str | None = None
    ps_full_amount: Decimal | None = None
    description: str | None = None
    payment_date: datetime | None = None
    can_reject: bool = False
    testing_mode: bool | None = None
    captured: bool | None = None
    user_phone: str | None = None
    user_contact_email: str | None = None
    card_id: str | None = attrs.field(default=None, repr=False)
    card_token: str | None = attrs.field(default=None, repr=False)
    card_pan: str | None = attrs.field(default=None, repr=_mask_pan)
    card_exp: str | None = None
    card_owner: str | None = attrs.field(default=None, repr=False)
    card_brand: str | None = None
    payment_method: str | None = None
    discount_percent: Decimal | None = None
    discount_amount: Decimal | None = None
    merchant_params: dict[str, str] = attrs.field(factory=dict)
    unknown_fields: dict[str, str] = attrs.field(factory=dict, repr=_names_only)

    @property
    def success(self) -> bool:
        """Whether the payment succeeded (`pg_result` is 1)."""
        return self.result == 1


#: Either notification.
Notification: TypeAlias = CheckNotification | ResultNotification
