"""
The gateway planner: authentication, the invoice rules and the error codes (pure; no aiohttp).

Given a request's signature header, payload and fields, it answers either a `ReplyError` (a
`status=error` reply before anything is processed) or a plan: the invoice concerned and a
function that processes the request and returns the reply's XML items. The aiohttp glue decides
when to run that function, so a fault can strike before or after the commit.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Final

from freedompay_async.signing import verify_jws_detached
from freedompay_async.testing._state import NEW, mask_pan
from freedompay_async.testing._wire import error_items, gateway_dt, invoice_items, qr_value

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from freedompay_async.testing._scenario import Fate
    from freedompay_async.testing._state import Invoice, InvoiceBook
    from freedompay_async.testing._wire import XmlItem

__all__ = [
    "ERR_INTERNAL",
    "ERR_REQUEST",
    "GatewayPlanner",
    "Plan",
    "ReplyError",
    "parse_amount",
    "require",
    "unique",
]

ERR_SIGNATURE: Final = 100
ERR_REQUEST: Final = 200
ERR_NOT_FOUND: Final = 340
ERR_NOT_PAYABLE: Final = 350
ERR_INTERNAL: Final = 1000
ERR_MERCHANT: Final = 9998


_INIT_REQUIRED: Final = (
    "order_id",
    "merchant_id",
    "amount",
    "description",
    "invoice_method",
    "currency",
)
_PAY_REQUIRED: Final = ("customer", "user_id", "card_token")
_LOOKUP_KEYS: Final = ("customer", "order_id", "invoice_id")


#: The invoice a request is about (None for init or an unknown one) and how to process it.
Plan = tuple["Invoice | None", "Callable[[], list[XmlItem]]"]


class ReplyError(Exception):
    """A request that is answered with `status=error` before anything is processed."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(code, description)
        self.code = code
        self.description = description


def unique(fields: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Return the fields by name; a repeated field is refused (error 200)."""
    values = dict(fields)
    if len(values) != len(fields):
        raise ReplyError(ERR_REQUEST, "Invalid request: a field is repeated")
    return values


def require(fields: Mapping[str, str], names: Sequence[str]) -> None:
    """Refuse a request where one of *names* is missing or empty (error 200)."""
    for name in names:
        if not fields.get(name):
            raise ReplyError(ERR_REQUEST, f"Invalid request: field {name} is required")


def parse_amount(text: str) -> Decimal:
    """Read a positive, finite amount, or refuse it (error 200)."""
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise ReplyError(ERR_REQUEST, "Invalid request: amount is not a number") from exc
    if not amount.is_finite() or amount <= 0:
        raise ReplyError(ERR_REQUEST, "Invalid request: amount must be positive")
    return amount


class GatewayPlanner:
    """
    The invoice gateway's decisions, apart from any socket.

    Args:
        merchant_id: The merchant id accepted; anything else gets error 9998.
        secret_key: The key signatures are checked with.
        book: The invoices.
        cards: The scripted fate per card token (shared with the emulator, which scripts it).
        default_fate: A pay's fate when neither the card nor the invoice has one.
        adversarial: Commit every pay, even on an invoice that is no longer `new`.
        is_issued: None, or whether a card token was issued to a user id; a pay with a token
            it refuses gets error 200.
        base_url: The served base URL, for QR links.
    """

    def __init__(
        self,
        *,
        merchant_id: str,
        secret_key: str,
        book: InvoiceBook,
        cards: Mapping[str, Fate],
        default_fate: Fate,
        adversarial: bool,
        is_issued: Callable[[str, str], bool] | None,
        base_url: Callable[[], str],
    ) -> None:
        self._merchant_id = merchant_id
        self._secret_key = secret_key
        self._book = book
        self._cards = cards
        self._default_fate = default_fate
        self._adversarial = adversarial
        self._is_issued = is_issued
        self._base_url = base_url
        self.rejected = 0

    def authenticate(self, signature: str | None, payload: bytes, path: str) -> None:
        if not signature:
            self.rejected += 1
            raise ReplyError(ERR_SIGNATURE, "Signature is missing")
        try:
            header = verify_jws_detached(signature, payload, secret_key=self._secret_key)
        except ValueError as exc:
            self.rejected += 1
            raise ReplyError(ERR_SIGNATURE, "Invalid signature") from exc
        target = header.get("path", header.get("uri"))
        if target != path or header.get("method", "POST") != "POST":
            self.rejected += 1
            raise ReplyError(ERR_SIGNATURE, "Signature is for another endpoint")
        self._check_merchant(header.get("merchant_id"))

    def _check_merchant(self, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ReplyError(ERR_MERCHANT, "Unknown merchant")
        if str(value) != self._merchant_id:
            raise ReplyError(ERR_MERCHANT, "Unknown merchant")

    def plan(
        self, operation: str, fields: Mapping[str, str]
    ) -> tuple[Invoice | None, Callable[[], list[XmlItem]]]:
        """Check a request's fields; return its invoice (if any) and how to process it."""
        if operation == "init":
            return None, self._plan_init(fields)
        if operation == "pay":
            return self._plan_pay(fields)
        return self._plan_read(fields, info=operation == "info")

    def _plan_init(self, fields: Mapping[str, str]) -> Callable[[], list[XmlItem]]:
        require(fields, _INIT_REQUIRED)
        self._check_merchant(fields["merchant_id"])
        amount = parse_amount(fields["amount"])
        if fields["invoice_method"] != "qr":
            raise ReplyError(ERR_REQUEST, "Invalid request: invoice_method must be qr")
        currency = fields["currency"]
        if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):  # noqa: PLR2004
            raise ReplyError(ERR_REQUEST, "Invalid request: currency must be a 3-letter code")

        def run() -> list[XmlItem]:
            invoice = self._book.create(
                order_id=fields["order_id"],
                amount=amount,
                currency=currency,
                description=fields["description"],
                fate=None,
            )
            return [
                ("status", "ok"),
                ("invoice_status", invoice.status),
                ("invoice_id", str(invoice.invoice_id)),
                ("invoice_methods", [("qr", qr_value(self._base_url(), invoice.customer))]),
                ("dt", gateway_dt()),
            ]

        return run

    def _plan_pay(
        self, fields: Mapping[str, str]
    ) -> tuple[Invoice | None, Callable[[], list[XmlItem]]]:
        require(fields, _PAY_REQUIRED)
        card_token = fields["card_token"]
        if self._is_issued is not None and not self._is_issued(fields["user_id"], card_token):
            raise ReplyError(ERR_REQUEST, "Invalid request: card_token unknown for this user_id")
        invoice = self._book.by_customer(fields["customer"])

        def run() -> list[XmlItem]:
            if invoice is None:
                return error_items(ERR_NOT_FOUND, "Invoice not found")
            if invoice.status != NEW:
                if not self._adversarial:
                    return error_items(ERR_NOT_PAYABLE, "Invoice is not payable")
                self._book.commit(invoice)
                if invoice.card_pan is None:
                    invoice.card_pan = mask_pan(card_token)
                return invoice_items(invoice)
            fate = self._cards.get(card_token) or invoice.fate or self._default_fate
            if not self._book.apply_fate(invoice, fate, card_token):
                return error_items(
                    fate.error_code if fate.error_code is not None else 600,
                    fate.description or "General error",
                )
            return invoice_items(invoice)

        return invoice, run

    def _plan_read(
        self, fields: Mapping[str, str], *, info: bool
    ) -> tuple[Invoice | None, Callable[[], list[XmlItem]]]:
        require(fields, ("merchant_id",))
        self._check_merchant(fields["merchant_id"])
        keys = [key for key in _LOOKUP_KEYS if key in fields]
        if len(keys) != 1 or not fields[keys[0]]:
            raise ReplyError(
                ERR_REQUEST,
                "Invalid request: give exactly one of customer, order_id, invoice_id",
            )
        key = keys[0]
        value = fields[key]
        if key == "customer":
            invoice = self._book.by_customer(value)
        elif key == "order_id":
            invoice = self._book.by_order(value)
        else:
            if not (value.isascii() and value.isdigit()):
                raise ReplyError(ERR_REQUEST, "Invalid request: invoice_id must be an integer")
            invoice = self._book.by_id(int(value))

        def run() -> list[XmlItem]:
            if invoice is None:
                return error_items(ERR_NOT_FOUND, "Invoice not found")
            self._book.read(invoice)
            return invoice_items(invoice, base_url=self._base_url() if info else None)

        return invoice, run
