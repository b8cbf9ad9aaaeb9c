"""
The classic request fields' checks, each returning the wire text.

Each raises a `ConfigurationError` that names the field. Money is `Decimal` only, > 0, at most
two decimals and at most 99999999.
"""

from __future__ import annotations

import re
from decimal import Decimal
from urllib.parse import urlsplit

from freedompay_async._exceptions import ConfigurationError

__all__ = [
    "check_card_token",
    "check_flag",
    "check_money",
    "check_order_id",
    "check_payment_id",
    "check_url",
    "check_user_id",
]

_USER_ID = re.compile(r"[A-Za-z0-9_-]{1,50}")
_MAX_TOKEN = 255
_MAX_ORDER_ID = 50
_MAX_URL = 255
_MAX_AMOUNT = Decimal(99999999)
_DEFAULT_MAX_BYTES = 1 << 20


def check_user_id(name: str, value: object) -> str:
    if not isinstance(value, str) or _USER_ID.fullmatch(value) is None:
        raise ConfigurationError(f"{name} must be 1-50 characters of A-Z, a-z, 0-9, _ or -")
    return value


def check_card_token(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TOKEN:
        raise ConfigurationError(f"{name} must be a non-empty string of at most 255 characters")
    if not value.isprintable() or value != value.strip():
        raise ConfigurationError(f"{name} must be printable, without surrounding spaces")
    return value


def check_order_id(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_ORDER_ID:
        raise ConfigurationError(f"{name} must be a non-empty string of at most 50 characters")
    if not value.isprintable():
        raise ConfigurationError(f"{name} must be printable")
    return value


def check_url(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_URL:
        raise ConfigurationError(f"{name} must be an http(s) URL of at most 255 characters")
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ConfigurationError(f"{name} is not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not parts.netloc or not value.isprintable():
        raise ConfigurationError(f"{name} must be an http(s) URL")
    return value


def check_payment_id(name: str, value: object) -> str:
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a positive integer")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive integer")
    return str(value)


def check_money(name: str, value: object) -> str:
    if not isinstance(value, Decimal):
        raise ConfigurationError(
            f"{name} must be a Decimal (floats lose cents), got {type(value).__name__}"
        )
    if not value.is_finite() or value <= 0 or value > _MAX_AMOUNT:
        raise ConfigurationError(f"{name} must be > 0 and at most 99999999, got {value}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:  # noqa: PLR2004 - cents are the smallest unit
        raise ConfigurationError(f"{name} must have at most two decimals, got {value}")
    return format(value, "f")


def check_flag(name: str, value: object) -> str:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False")
    return "1" if value else "0"
