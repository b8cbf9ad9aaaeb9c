"""
The merchant's side of Freedom Pay's callbacks: Check and Result notifications.

Freedom Pay calls the merchant's `check_url` before it takes the money (a *Check*) and its
`result_url` once the payment is settled (a *Result*). Each notification is a set of `pg_*` fields,
sent as form fields (GET or POST) or as one `pg_xml` field holding `<request>…</request>`, and
signed with `pg_sig` under the last path segment of the merchant's own callback URL. The merchant
answers HTTP 200 with a signed XML `<response>`: `pg_status` (`ok`, `rejected` or `error`),
`pg_description`, the incoming `pg_salt`, and `pg_sig`.

What this module guarantees:

- **Fail closed.** Nothing is parsed into a model before the signature verifies; a notification
  without `pg_sig`, with two, or with a wrong one raises `SignatureError`, whose message holds
  neither the signature nor the key. Every received field is signed, unknown ones included.
- **Typed, strict fields.** Amounts are `Decimal`, ids `int`, flags `bool`, the payment date a
  naive `datetime`. A missing required field, a repeated field or a malformed value raises
  `DecodeError` naming the field (`.tag`), never quoting its value.
- **At-least-once delivery handled.** Freedom Pay repeats a Result until it gets HTTP 200 (every
  half hour for two hours) and expects the same answer each time. `ReplayGuard` answers a repeated
  notification (same kind, `pg_payment_id` and `pg_salt`) with the bytes it sent the first time,
  without calling the business callback again, also while the first call is still running.
- **A small `aiohttp.web` handler.** `make_handler` (or `CallbackHandler.handle`) wires it
  together: read the form (or `pg_xml`), take the script name from the request path, verify, call
  the merchant's async callback, answer with the signed reply. A notification that does not
  verify or does not decode is answered `error` (signed) and logged as a warning without any
  secret, signature or card token; the business callback never sees it. A business callback that
  raises is answered HTTP 500, so Freedom Pay tries again later.

A Result may be refused (`rejected`) only when it says `pg_can_reject=1`
(`ResultNotification.can_reject`); otherwise the payment stands completed whatever the answer,
and the handler logs a warning when the callback rejects anyway.

Form fields in bracket notation (`cart[0][sku]`) are regrouped as PHP does before the signature
is checked, since the sender signs the nested structure; a plain field name that repeats is
refused.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import attrs
from aiohttp.web import HTTPException, Response

from freedompay_async._decode import parse_ordered
from freedompay_async._exceptions import ConfigurationError, DecodeError, SignatureError
from freedompay_async.signing import Element, pg_sig, script_name_from_url, verify_pg_sig

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from aiohttp.web import Request

__all__ = [
    "CallbackAnswer",
    "CallbackHandler",
    "CallbackStatus",
    "CheckNotification",
    "Notification",
    "ReplayGuard",
    "ResultNotification",
    "build_reply",
    "make_handler",
    "parse_check",
    "parse_notification",
    "parse_result",
]

logger = logging.getLogger(__name__)

#: The merchant's answer to a notification.
CallbackStatus: TypeAlias = Literal["ok", "rejected", "error"]
#: What a business callback returns: a status, or a status and a description for the payer.
CallbackAnswer: TypeAlias = "CallbackStatus | tuple[CallbackStatus, str]"

_STATUS_BY_TEXT: dict[str, CallbackStatus] = {"ok": "ok", "rejected": "rejected", "error": "error"}

#: Deepest bracket nesting accepted in a form field name (PHP's own default limit is 64).
_MAX_FORM_DEPTH = 32
#: Longest field name quoted in an error message.
_NAME_QUOTE = 64
#: Longest incoming salt echoed in a reply to a notification that did not verify.
_MAX_SALT_ECHO = 128

_INT = re.compile(r"[0-9]{1,19}")
_AMOUNT = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,8})?")
_DATETIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")
_NESTED_NAME = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])+)")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LAST4 = 4


def _quote(name: str) -> str:
    """A field name as shown in a message: repr-quoted (no raw newlines), cut to a sane length."""
    return repr(name[:_NAME_QUOTE])


def _mask_pan(pan: str | None) -> str:
    """Show only the last four digits of a card number."""
    if pan is None:
        return "None"
    digits = [c for c in pan if c.isdigit()]
    return "'…" + "".join(digits[-_LAST4:]) + "'"


def _names_only(fields: dict[str, str]) -> str:
    """Show a dict's keys but not its values."""
    return repr(sorted(fields))


# ---------------------------------------------------------------------------------------------
# models


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


# ---------------------------------------------------------------------------------------------
# field conversion


def _as_text(text: str, _name: str) -> str:
    return text


def _as_salt(text: str, name: str) -> str:
    if _NOT_XML_CHAR.search(text) is not None:
        raise DecodeError(f"{name} holds characters an XML reply cannot echo", tag=name)
    return text


def _as_int(text: str, name: str) -> int:
    if _INT.fullmatch(text) is None:
        raise DecodeError(f"{name} is not a non-negative integer", tag=name)
    return int(text)


def _as_amount(text: str, name: str) -> Decimal:
    if _AMOUNT.fullmatch(text) is None:
        raise DecodeError(f"{name} is not a plain decimal amount", tag=name)
    return Decimal(text)


def _as_flag(text: str, name: str) -> bool:
    if text not in ("0", "1"):
        raise DecodeError(f"{name} is neither 0 nor 1", tag=name)
    return text == "1"


def _as_datetime(text: str, name: str) -> datetime:
    match = _DATETIME.fullmatch(text)
    if match is not None:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        try:
            return datetime(year, month, day, hour, minute, second)  # noqa: DTZ001 - sent without a zone
        except ValueError:
            pass
    raise DecodeError(f"{name} is not a YYYY-MM-DD HH:MM:SS date", tag=name)


_Converter: TypeAlias = "Callable[[str, str], object]"
#: (wire name, attribute, converter, required)
_Spec: TypeAlias = "tuple[tuple[str, str, _Converter, bool], ...]"

_COMMON: _Spec = (
    ("pg_order_id", "order_id", _as_text, True),
    ("pg_payment_id", "payment_id", _as_int, True),
    ("pg_amount", "amount", _as_amount, True),
    ("pg_currency", "currency", _as_text, True),
    ("pg_salt", "salt", _as_salt, True),
    ("pg_ps_amount", "ps_amount", _as_amount, False),
    ("pg_ps_currency", "ps_currency", _as_text, False),
    ("pg_ps_full_amount", "ps_full_amount", _as_amount, False),
)

_RESULT: _Spec = (
    *_COMMON,
    ("pg_result", "result", _as_int, True),
    ("pg_net_amount", "net_amount", _as_amount, False),
    ("pg_description", "description", _as_text, False),
    ("pg_payment_date", "payment_date", _as_datetime, False),
    ("pg_can_reject", "can_reject", _as_flag, False),
    ("pg_testing_mode", "testing_mode", _as_flag, False),
    ("pg_captured", "captured", _as_flag, False),
    ("pg_user_phone", "user_phone", _as_text, False),
    ("pg_user_contact_email", "user_contact_email", _as_text, False),
    ("pg_card_id", "card_id", _as_text, False),
    ("pg_card_token", "card_token", _as_text, False),
    ("pg_card_pan", "card_pan", _as_text, False),
    ("pg_card_exp", "card_exp", _as_text, False),
    ("pg_card_owner", "card_owner", _as_text, False),
    ("pg_card_brand", "card_brand", _as_text, False),
    ("pg_payment_method", "payment_method", _as_text, False),
    ("pg_discount_percent", "discount_percent", _as_amount, False),
    ("pg_discount_amount", "discount_amount", _as_amount, False),
)


def _scalar(index: Mapping[str, object], name: str) -> str | None:
    """A top-level field's text; None when absent or empty."""
    value = index.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"{name} holds a group where a single value belongs", tag=name)
    return value or None


def _convert(spec: _Spec, index: Mapping[str, object]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for wire, attribute, converter, required in spec:
        text = _scalar(index, wire)
        if text is None:
            if required:
                raise DecodeError(f"{wire} is missing or empty", tag=wire)
            continue
        values[attribute] = converter(text, wire)
    return values


def _flatten_params(name: str, value: object, out: dict[str, str], depth: int = 0) -> None:
    """Store a merchant field under *name*, a nested one under bracket names."""
    if isinstance(value, str):
        if name in out:
            raise DecodeError(f"field {_quote(name)} is repeated", tag=name[:_NAME_QUOTE])
        out[name] = value
        return
    if depth >= _MAX_FORM_DEPTH:
        raise DecodeError(f"field {_quote(name)} nests too deep", tag=name[:_NAME_QUOTE])
    children = value.children if isinstance(value, Element) else _mapping_items(value)
    for key, item in children:
        _flatten_params(f"{name}[{key}]", item, out, depth + 1)


def _mapping_items(value: object) -> list[tuple[str, object]]:
    if isinstance(value, Mapping):
        return [(str(key), item) for key, item in value.items()]
    raise DecodeError("a field holds a value of an unexpected type")  # pragma: no cover


def _build(entries: list[tuple[str, object]], script_name: str) -> Notification:
    """Turn verified top-level entries into a notification model."""
    index: dict[str, object] = {}
    for name, value in entries:
        if name == "pg_sig":
            continue
        if name in index:
            raise DecodeError(f"field {_quote(name)} is repeated", tag=name[:_NAME_QUOTE])
        index[name] = value
    spec = _RESULT if "pg_result" in index else _COMMON
    known = {wire for wire, _, _, _ in spec}
    merchant: dict[str, str] = {}
    unknown: dict[str, str] = {}
    for name, value in index.items():
        if name not in known:
            _flatten_params(name, value, unknown if name.startswith("pg_") else merchant)
    values = _convert(spec, index)
    values.update(script_name=script_name, merchant_params=merchant, unknown_fields=unknown)
    if spec is _RESULT:
        return ResultNotification(**values)
    return CheckNotification(**values)


# ---------------------------------------------------------------------------------------------
# reading and verifying


def _field_text(value: object, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise DecodeError(f"field {_quote(name)} is not UTF-8", tag=name) from None
    raise DecodeError(f"field {_quote(name)} is not a text field (a file?)", tag=name)


def _pairs(fields: Mapping[str, object] | Iterable[tuple[str, object]]) -> list[tuple[str, object]]:
    items = fields.items() if isinstance(fields, Mapping) else fields
    pairs: list[tuple[str, object]] = []
    for entry in items:
        if not isinstance(entry, tuple) or len(entry) != 2 or not isinstance(entry[0], str):  # noqa: PLR2004 - a pair
            raise DecodeError("notification fields must be (name, value) pairs")
        pairs.append(entry)
    return pairs


def _next_index(group: dict[str, object]) -> str:
    """PHP's `name[]`: one more than the largest integer key so far, or 0."""
    indices = [int(key) for key in group if key.isdigit() and key.isascii()]
    return str(max(indices) + 1) if indices else "0"


def _unflatten(pairs: list[tuple[str, str]]) -> list[tuple[str, object]]:
    """Regroup bracket-notation names (`a[b][]`) into nested dicts, keeping first-seen order."""
    root: dict[str, object] = {}
    for name, value in pairs:
        match = _NESTED_NAME.fullmatch(name)
        path = [name] if match is None else [match[1], *_BRACKET.findall(match[2])]
        if len(path) > _MAX_FORM_DEPTH:
            raise DecodeError(f"field {_quote(name)} nests too deep", tag=path[0][:_NAME_QUOTE])
        group = root
        for depth, key in enumerate(path):
            step = _next_index(group) if key == "" and depth else key
            if depth == len(path) - 1:
                if step in group:
                    raise DecodeError(f"field {_quote(name)} is repeated", tag=name[:_NAME_QUOTE])
                group[step] = value
                break
            child = group.setdefault(step, {})
            if not isinstance(child, dict):
                raise DecodeError(
                    f"field {_quote(path[0])} is both a value and a group",
                    tag=path[0][:_NAME_QUOTE],
                )
            group = child
    return list(root.items())


def _read(fields: Mapping[str, object] | Iterable[tuple[str, object]]) -> list[tuple[str, object]]:
    """Normalise received fields (form or `pg_xml`) into the message `pg_sig` covers."""
    pairs = _pairs(fields)
    if not pairs:
        raise DecodeError("the notification carries no fields")
    if any(name == "pg_xml" for name, _ in pairs):
        if len(pairs) != 1:
            raise DecodeError("pg_xml must be the notification's only field", tag="pg_xml")
        document = _field_text(pairs[0][1], "pg_xml").encode()
        try:
            _root, children = parse_ordered(document)
        except DecodeError as exc:
            # A fresh error: the parser's keeps the body, which holds the signature.
            raise DecodeError(f"pg_xml refused: {exc.message}", tag=exc.tag or "pg_xml") from None
        return list(Element.from_ordered(children).children)
    return _unflatten([(name, _field_text(value, name)) for name, value in pairs])


def _verify(entries: list[tuple[str, object]], script_name: str, secret_key: str) -> None:
    if not any(name == "pg_sig" for name, _ in entries):
        raise SignatureError("the notification carries no pg_sig; refused")
    if not verify_pg_sig(script_name, entries, secret_key):
        raise SignatureError(
            "the notification's pg_sig does not verify; refused (check the secret key and that "
            "the script name is the last path segment of the callback URL)"
        )


def _resolve_script(script_name: str | None, url: str | None) -> str:
    if (script_name is None) == (url is None):
        raise ConfigurationError("give exactly one of script_name and url")
    if script_name is not None:
        return script_name
    return script_name_from_url(url or "")


def _check_secret(secret_key: object) -> str:
    if not isinstance(secret_key, str) or not secret_key:
        raise ConfigurationError("secret_key must be a non-empty string")
    return secret_key


def parse_notification(
    fields: Mapping[str, object] | Iterable[tuple[str, object]],
    *,
    secret_key: str,
    script_name: str | None = None,
    url: str | None = None,
) -> Notification:
    """
    Verify a Check or Result notification and decode it.

    A notification with `pg_result` is a Result; one without is a Check.

    Args:
        fields: The received fields in the order received: a mapping (e.g. aiohttp's
            `await request.post()` or `request.query`) or (name, value) pairs; or a single
            `pg_xml` field holding the XML `<request>`.
        secret_key: The merchant's secret key.
        script_name: The script name to verify with: the last path segment of the callback URL.
        url: The callback URL instead of `script_name` (exactly one of the two).

    Returns:
        A `CheckNotification` or a `ResultNotification`.

    Raises:
        ConfigurationError: Neither or both of `script_name` and `url`, or an empty key.
        SignatureError: `pg_sig` is missing, repeated or wrong.
        DecodeError: The fields or the XML are malformed, or a field is missing, repeated or
            not of its type (`.tag` names it).
    """
    script = _resolve_script(script_name, url)
    entries = _read(fields)
    _verify(entries, script, _check_secret(secret_key))
    return _build(entries, script)


def parse_check(
    fields: Mapping[str, object] | Iterable[tuple[str, object]],
    *,
    secret_key: str,
    script_name: str | None = None,
    url: str | None = None,
) -> CheckNotification:
    """
    Verify and decode a Check request (see `parse_notification` for the arguments).

    Args:
        fields: The received fields, or a single `pg_xml` field.
        secret_key: The merchant's secret key.
        script_name: The last path segment of the check URL.
        url: The check URL instead of `script_name`.

    Returns:
        The verified Check.

    Raises:
        ConfigurationError: Neither or both of `script_name` and `url`, or an empty key.
        SignatureError: `pg_sig` is missing, repeated or wrong.
        DecodeError: The notification is malformed, or it is a Result (it has `pg_result`).
    """
    notification = parse_notification(
        fields, secret_key=secret_key, script_name=script_name, url=url
    )
    if not isinstance(notification, CheckNotification):
        raise DecodeError(
            "a Result notification was given where a Check is expected", tag="pg_result"
        )
    return notification


def parse_result(
    fields: Mapping[str, object] | Iterable[tuple[str, object]],
    *,
    secret_key: str,
    script_name: str | None = None,
    url: str | None = None,
) -> ResultNotification:
    """
    Verify and decode a Result notification (see `parse_notification` for the arguments).

    Args:
        fields: The received fields, or a single `pg_xml` field.
        secret_key: The merchant's secret key.
        script_name: The last path segment of the result URL.
        url: The result URL instead of `script_name`.

    Returns:
        The verified Result.

    Raises:
        ConfigurationError: Neither or both of `script_name` and `url`, or an empty key.
        SignatureError: `pg_sig` is missing, repeated or wrong.
        DecodeError: The notification is malformed, or it has no `pg_result`.
    """
    notification = parse_notification(
        fields, secret_key=secret_key, script_name=script_name, url=url
    )
    if not isinstance(notification, ResultNotification):
        raise DecodeError("pg_result is missing or empty", tag="pg_result")
    return notification


# ---------------------------------------------------------------------------------------------
# the reply


def _escape(text: str) -> str:
    """Escape XML text so that a parser gives back exactly *text* (a CR survives as `&#13;`)."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def build_reply(
    status: CallbackStatus,
    *,
    description: str = "",
    salt: str,
    script_name: str,
    secret_key: str,
) -> bytes:
    """
    Build the signed XML reply to a Check or Result notification.

    The reply is `<response>` with `pg_status`, `pg_description`, `pg_salt` and `pg_sig`, signed
    like any message: `md5("<script>;<description>;<salt>;<status>;<secret_key>")`.

    Args:
        status: `ok` (accept), `rejected` (refuse; for a Result only when `can_reject`) or
            `error` (the data could not be interpreted).
        description: Text for Freedom Pay (shown to the payer on a refusal).
        salt: The notification's `pg_salt`, echoed back.
        script_name: The script name the notification was verified with.
        secret_key: The merchant's secret key.

    Returns:
        The UTF-8 XML document, ready to send with HTTP 200.

    Raises:
        ConfigurationError: An unknown status, an empty key, or a description or salt holding
            characters XML cannot carry.
    """
    if status not in _STATUS_BY_TEXT:
        raise ConfigurationError("status must be 'ok', 'rejected' or 'error'")
    for name, text in (("description", description), ("salt", salt)):
        if not isinstance(text, str) or _NOT_XML_CHAR.search(text) is not None:
            raise ConfigurationError(f"{name} must be text that XML can carry")
    signature = pg_sig(
        script_name,
        (("pg_status", status), ("pg_description", description), ("pg_salt", salt)),
        _check_secret(secret_key),
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"<response><pg_status>{status}</pg_status>"
        f"<pg_description>{_escape(description)}</pg_description>"
        f"<pg_salt>{_escape(salt)}</pg_salt><pg_sig>{signature}</pg_sig></response>"
    ).encode()


# ---------------------------------------------------------------------------------------------
# replay guard


class ReplayGuard:
    """
    Answer a repeated notification exactly as the first time, without asking the merchant again.

    Replies are kept in memory per (kind, `pg_payment_id`, `pg_salt`), the least recently used
    dropped beyond `max_entries`. A notification that arrives while the same one is still being
    answered waits for that answer instead of calling the business callback a second time. Only
    successful answers are kept: when the callback raises, the next delivery calls it again.
    One guard serves one event loop. It is per process: behind several workers, keep the
    business callback idempotent by `payment_id` as well.

    Args:
        max_entries: How many replies to keep.

    Raises:
        ConfigurationError: `max_entries` is less than 1.
    """

    __slots__ = ("_max_entries", "_pending", "_replies")

    def __init__(self, max_entries: int = 10_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError("max_entries must be a positive integer")
        self._max_entries = max_entries
        self._replies: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
        self._pending: dict[tuple[str, int, str], asyncio.Future[bytes]] = {}

    @staticmethod
    def _key(notification: Notification) -> tuple[str, int, str]:
        kind = "result" if isinstance(notification, ResultNotification) else "check"
        return (kind, notification.payment_id, notification.salt)

    def get(self, notification: Notification) -> bytes | None:
        """
        Return the reply already sent to this notification, if any.

        Args:
            notification: A verified notification.

        Returns:
            The reply bytes, or None.
        """
        key = self._key(notification)
        reply = self._replies.get(key)
        if reply is not None:
            self._replies.move_to_end(key)
        return reply

    def _store(self, key: tuple[str, int, str], reply: bytes) -> None:
        self._replies[key] = reply
        self._replies.move_to_end(key)
        while len(self._replies) > self._max_entries:  # at most one eviction per store
            self._replies.popitem(last=False)

    async def run(
        self, notification: Notification, answer: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """
        Return the stored reply, or compute it once with *answer* and store it.

        Args:
            notification: A verified notification.
            answer: Builds the reply (calls the business callback); awaited at most once per
                notification while its reply is kept.

        Returns:
            The reply bytes, identical for every delivery of the notification.

        Raises:
            Exception: Whatever *answer* raised, to this caller and to any delivery waiting on
                it; nothing is stored then.
        """
        key = self._key(notification)
        stored = self.get(notification)
        if stored is not None:
            return stored
        running = self._pending.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            reply = await answer()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" report when nobody waits
            raise
        finally:
            del self._pending[key]
        self._store(key, reply)
        future.set_result(reply)
        return reply

    def __len__(self) -> int:
        return len(self._replies)

    def __repr__(self) -> str:
        return f"ReplayGuard(entries={len(self._replies)}, max_entries={self._max_entries})"


# ---------------------------------------------------------------------------------------------
# the aiohttp handler

OnCheck: TypeAlias = "Callable[[CheckNotification], Awaitable[CallbackAnswer]]"
OnResult: TypeAlias = "Callable[[ResultNotification], Awaitable[CallbackAnswer]]"


def _unpack(answer: object) -> tuple[CallbackStatus, str]:
    """Check a business callback's answer: a status, or (status, description)."""
    status, description = (
        answer if isinstance(answer, tuple) and len(answer) == 2 else (answer, "")  # noqa: PLR2004 - a pair
    )
    checked = _STATUS_BY_TEXT.get(status) if isinstance(status, str) else None
    if checked is None or not isinstance(description, str):
        raise ConfigurationError(
            "a callback must return 'ok', 'rejected' or 'error', or such a status and a description"
        )
    return checked, description


def _salt_hint(entries: list[tuple[str, object]]) -> str:
    """The incoming salt for a reply to a notification that failed: echoed only if harmless."""
    salts = [value for name, value in entries if name == "pg_salt"]
    if len(salts) == 1 and isinstance(salts[0], str) and len(salts[0]) <= _MAX_SALT_ECHO:
        salt = salts[0]
        if _NOT_XML_CHAR.search(salt) is None:
            return salt
    return ""


class CallbackHandler:
    """
    Answer Freedom Pay's Check and Result notifications: verify, dispatch, reply signed.

    `handle` is the `aiohttp.web` handler (`app.router.add_route("*", "/pay/result.php",
    handler.handle)`); `answer` does the same work for any other framework. The business
    callbacks are async functions taking the notification and returning `"ok"`, `"rejected"` or
    `"error"`, or such a status and a description.

    Args:
        secret_key: The merchant's secret key.
        on_check: Called for each verified Check, or None when this endpoint takes none.
        on_result: Called for each verified Result, or None when this endpoint takes none.
        guard: The replay guard; None creates one with default size.
        script_name: The script name to verify with; None takes the request path's last segment
            (set it when a proxy rewrites the path).

    Raises:
        ConfigurationError: An empty key, or neither callback given.
    """

    __slots__ = ("_guard", "_on_check", "_on_result", "_script_name", "_secret_key")

    def __init__(
        self,
        *,
        secret_key: str,
        on_check: OnCheck | None = None,
        on_result: OnResult | None = None,
        guard: ReplayGuard | None = None,
        script_name: str | None = None,
    ) -> None:
        if on_check is None and on_result is None:
            raise ConfigurationError("give on_check, on_result or both")
        self._secret_key = _check_secret(secret_key)
        self._on_check = on_check
        self._on_result = on_result
        self._guard = ReplayGuard() if guard is None else guard
        self._script_name = script_name

    @property
    def guard(self) -> ReplayGuard:
        """The replay guard in use."""
        return self._guard

    def _refuse(self, script_name: str, salt: str, description: str) -> bytes:
        return build_reply(
            "error",
            description=description,
            salt=salt,
            script_name=script_name,
            secret_key=self._secret_key,
        )

    async def answer(
        self,
        fields: Mapping[str, object] | Iterable[tuple[str, object]],
        *,
        script_name: str,
    ) -> bytes:
        """
        Verify a notification, call the business callback once, and return the signed reply.

        A notification that does not decode or verify, or that no callback takes, is answered
        `error` without calling any callback. A repeated one gets the stored reply.

        Args:
            fields: The received fields (form or query), or a single `pg_xml` field.
            script_name: The last path segment of the URL the notification was sent to.

        Returns:
            The reply to send with HTTP 200.

        Raises:
            Exception: Whatever the business callback raised (answer HTTP 500: Freedom Pay
                retries), or `ConfigurationError` when it returned something else than a status.
        """
        try:
            entries = _read(fields)
        except DecodeError as exc:
            logger.warning("callback to %r refused: %s", script_name, exc)
            return self._refuse(script_name, "", "malformed notification")
        salt = _salt_hint(entries)
        try:
            _verify(entries, script_name, self._secret_key)
            notification = _build(entries, script_name)
        except SignatureError as exc:
            logger.warning("callback to %r refused: %s", script_name, exc)
            return self._refuse(script_name, salt, "invalid signature")
        except DecodeError as exc:
            logger.warning("callback to %r refused: %s", script_name, exc)
            return self._refuse(script_name, salt, "malformed notification")
        stored = self._guard.get(notification)
        if stored is not None:
            logger.info(
                "repeated %s for payment %d answered as before",
                type(notification).__name__,
                notification.payment_id,
            )
            return stored
        if isinstance(notification, CheckNotification):
            if self._on_check is None:
                logger.warning("a Check arrived at %r, which takes no Check", script_name)
                return self._refuse(script_name, notification.salt, "check not supported")
            on_check = self._on_check
            return await self._guard.run(
                notification, lambda: self._dispatch(notification, on_check(notification))
            )
        if self._on_result is None:
            logger.warning("a Result arrived at %r, which takes no Result", script_name)
            return self._refuse(script_name, notification.salt, "result not supported")
        on_result = self._on_result
        return await self._guard.run(
            notification, lambda: self._dispatch(notification, on_result(notification))
        )

    async def _dispatch(
        self, notification: Notification, pending: Awaitable[CallbackAnswer]
    ) -> bytes:
        status, description = _unpack(await pending)
        if (
            status == "rejected"
            and isinstance(notification, ResultNotification)
            and not notification.can_reject
        ):
            logger.warning(
                "payment %d: the callback rejected a Result without pg_can_reject=1; "
                "Freedom Pay keeps the payment completed",
                notification.payment_id,
            )
        return build_reply(
            status,
            description=description,
            salt=notification.salt,
            script_name=notification.script_name,
            secret_key=self._secret_key,
        )

    async def handle(self, request: Request) -> Response:
        """
        Handle one notification over HTTP.

        Args:
            request: The incoming request (GET query, POST form or multipart, or `pg_xml`).

        Returns:
            HTTP 200 with the signed XML reply, or HTTP 500 when the business callback failed.
        """
        if self._script_name is not None:
            script_name = self._script_name
        else:  # the path has no query; never read it as a URL (`//x` is not a host here)
            script_name = request.path.rsplit("/", 1)[-1]
        fields: list[tuple[str, object]] = []
        if request.method == "POST" and request.body_exists:
            try:
                fields = list((await request.post()).items())
            except HTTPException:  # e.g. 413: the body is larger than the application accepts
                raise
            except Exception:  # noqa: BLE001 - any unreadable body is answered `error`
                logger.warning(
                    "callback to %r: the request body is not a readable form", script_name
                )
        if not fields:
            fields = list(request.query.items())
        try:
            body = await self.answer(fields, script_name=script_name)
        except Exception as exc:  # any business failure must become a retryable 500
            logger.error(  # noqa: TRY400 - the traceback is the merchant's, given via exc_info
                "the callback for %r raised %s; answered HTTP 500 so Freedom Pay retries",
                script_name,
                type(exc).__name__,
                exc_info=exc,
            )
            return Response(status=500, text="callback failed")
        return Response(body=body, content_type="application/xml", charset="utf-8")

    def __repr__(self) -> str:
        kinds = [
            name for name, cb in (("check", self._on_check), ("result", self._on_result)) if cb
        ]
        return f"CallbackHandler(takes={kinds!r}, script_name={self._script_name!r})"


def make_handler(
    *,
    secret_key: str,
    on_check: OnCheck | None = None,
    on_result: OnResult | None = None,
    guard: ReplayGuard | None = None,
    script_name: str | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """
    Create an `aiohttp.web` handler for Check and/or Result notifications.

    This is `CallbackHandler(...).handle`; build the `CallbackHandler` yourself to reach its
    `guard` or to call `answer` from another framework.

    Example:
        ```python
        async def on_result(n: ResultNotification) -> CallbackAnswer:
            await orders.settle(n.order_id, paid=n.success, payment_id=n.payment_id)
            return "ok"

        app.router.add_post("/freedompay/result", make_handler(secret_key=key, on_result=on_result))
        ```

    Args:
        secret_key: The merchant's secret key.
        on_check: Async callback for Checks, or None.
        on_result: Async callback for Results, or None.
        guard: The replay guard; None creates one.
        script_name: Overrides the script name taken from the request path.

    Returns:
        The handler: a callable taking an `aiohttp.web.Request` and returning a response.

    Raises:
        ConfigurationError: An empty key, or neither callback given.
    """
    return CallbackHandler(
        secret_key=secret_key,
        on_check=on_check,
        on_result=on_result,
        guard=guard,
        script_name=script_name,
    ).handle
