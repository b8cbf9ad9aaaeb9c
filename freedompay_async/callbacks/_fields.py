"""Field conversion: the typed, strict reading of each `pg_*` field into a notification model."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

from freedompay_async._exceptions import ConfigurationError, DecodeError
from freedompay_async.callbacks._models import (
    CheckNotification,
    Notification,
    ResultNotification,
)
from freedompay_async.signing import Element

if TYPE_CHECKING:
    from collections.abc import Callable

#: Deepest bracket nesting accepted in a form field name (PHP's own default limit is 64).
MAX_FORM_DEPTH = 32
#: Longest field name quoted in an error message.
NAME_QUOTE = 64
#: Longest incoming salt echoed in a reply to a notification that did not verify.
MAX_SALT_ECHO = 128

_INT = re.compile(r"[0-9]{1,19}")
_AMOUNT = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,8})?")
_DATETIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")
NESTED_NAME = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])+)")
BRACKET = re.compile(r"\[([^\[\]]*)\]")
NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def quote(name: str) -> str:
    """A field name as shown in a message: repr-quoted (no raw newlines), cut to a sane length."""
    return repr(name[:NAME_QUOTE])


def _as_text(text: str, _name: str) -> str:
    return text


def _as_salt(text: str, name: str) -> str:
    if NOT_XML_CHAR.search(text) is not None:
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


def flatten_params(name: str, value: object, out: dict[str, str], depth: int = 0) -> None:
    """Store a merchant field under *name*, a nested one under bracket names."""
    if isinstance(value, str):
        if name in out:
            raise DecodeError(f"field {quote(name)} is repeated", tag=name[:NAME_QUOTE])
        out[name] = value
        return
    if depth >= MAX_FORM_DEPTH:
        raise DecodeError(f"field {quote(name)} nests too deep", tag=name[:NAME_QUOTE])
    children = value.children if isinstance(value, Element) else _mapping_items(value)
    for key, item in children:
        flatten_params(f"{name}[{key}]", item, out, depth + 1)


def _mapping_items(value: object) -> list[tuple[str, object]]:
    if isinstance(value, Mapping):
        return [(str(key), item) for key, item in value.items()]
    raise DecodeError("a field holds a value of an unexpected type")  # pragma: no cover


def build_notification(entries: list[tuple[str, object]], script_name: str) -> Notification:
    """Turn verified top-level entries into a notification model."""
    index: dict[str, object] = {}
    for name, value in entries:
        if name == "pg_sig":
            continue
        if name in index:
            raise DecodeError(f"field {quote(name)} is repeated", tag=name[:NAME_QUOTE])
        index[name] = value
    spec = _RESULT if "pg_result" in index else _COMMON
    known = {wire for wire, _, _, _ in spec}
    merchant: dict[str, str] = {}
    unknown: dict[str, str] = {}
    for name, value in index.items():
        if name not in known:
            flatten_params(name, value, unknown if name.startswith("pg_") else merchant)
    values = _convert(spec, index)
    values.update(script_name=script_name, merchant_params=merchant, unknown_fields=unknown)
    if spec is _RESULT:
        return ResultNotification(**values)
    return CheckNotification(**values)


def check_secret(secret_key: object) -> str:
    """Return the merchant's key, or raise `ConfigurationError` when it is not a non-empty str."""
    if not isinstance(secret_key, str) or not secret_key:
        raise ConfigurationError("secret_key must be a non-empty string")
    return secret_key
