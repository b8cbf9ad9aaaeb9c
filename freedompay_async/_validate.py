"""
Field checks run on every request before anything is signed or sent.

Pure: no I/O, no await. `_protocol.build_request` runs `check_fields` over the fields it is about
to send, so a value the gateway would not accept (a lone surrogate, a NUL, a line break in a
token, a whitespace-only or over-long card token, an amount above `MAX_AMOUNT`) fails as a
`ConfigurationError` naming the field, before a byte is written. Inside a batch that error is the
item's own outcome; the other items go on.

Messages name the field and the rule, never the value: the value may be a card token.
"""

from __future__ import annotations

import unicodedata
from decimal import Decimal
from typing import TYPE_CHECKING

from freedompay_async._exceptions import ConfigurationError
from freedompay_async._models import MAX_AMOUNT
from freedompay_async.facts import is_integer

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["MAX_INT", "check_fields", "check_text"]

#: The largest integer field value sent (a signed 64-bit integer).
MAX_INT = (1 << 63) - 1

# name -> (maximum length, line breaks and tabs allowed)
_TEXT_RULES: dict[str, tuple[int, bool]] = {
    "order_id": (50, False),
    "merchant_id": (64, False),
    "description": (1024, True),
    "invoice_method": (16, False),
    "currency": (3, False),
    "check_url": (2048, False),
    "result_url": (2048, False),
    "request_method": (16, False),
    "customer": (255, False),
    "user_id": (255, False),
    "card_token": (255, False),
}
_DEFAULT_RULE = (2048, False)
_LAYOUT = frozenset("\t\n\r")
# Fields that are opaque tokens: no whitespace at all.
_TOKENS = frozenset({"card_token", "customer", "merchant_id", "currency", "invoice_method"})


def _bad_char(name: str, text: str, *, layout_ok: bool) -> str | None:
    """Return why *text* holds a character the gateway would not accept, or None."""
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs":
            return f"{name} holds a lone surrogate (U+{ord(char):04X}), which is not valid text"
        if char == "\x00":
            return f"{name} holds a NUL character"
        if category == "Cc" and not (layout_ok and char in _LAYOUT):
            return f"{name} holds a control character (U+{ord(char):04X})"
    return None


def check_text(name: str, value: object) -> None:
    """
    Check one text field against its rule.

    Args:
        name: The field's wire name (its rule: length, whether line breaks are allowed).
        value: The value.

    Raises:
        ConfigurationError: Not a string, empty or whitespace only, too long, or holding a lone
            surrogate, a NUL or a control character the field does not allow; names the field.
    """
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")
    max_len, layout_ok = _TEXT_RULES.get(name, _DEFAULT_RULE)
    if not value.isprintable():
        problem = _bad_char(name, value, layout_ok=layout_ok)
        if problem is not None:
            raise ConfigurationError(problem)
    if not value.strip():
        raise ConfigurationError(f"{name} must not be empty or whitespace only")
    if len(value) > max_len:
        raise ConfigurationError(f"{name} must be at most {max_len} characters, got {len(value)}")
    # `str.split()` splits on exactly the characters `str.isspace()` accepts, at C speed.
    if name in _TOKENS and value.split() != [value]:
        raise ConfigurationError(f"{name} must not contain whitespace")


def _check_amount(name: str, value: Decimal) -> None:
    if not value.is_finite() or value <= 0:
        raise ConfigurationError(f"{name} must be a positive finite number")
    if value > MAX_AMOUNT:
        raise ConfigurationError(f"{name} must be at most {MAX_AMOUNT}")


def check_fields(fields: Iterable[tuple[str, str | int | Decimal]]) -> None:
    """
    Check every field of a request before it is built.

    Args:
        fields: (wire name, value) pairs.

    Raises:
        ConfigurationError: A value breaks its field's rule; the message names the field.
    """
    for name, value in fields:
        if isinstance(value, str):
            check_text(name, value)
        elif isinstance(value, Decimal):
            _check_amount(name, value)
        elif is_integer(value):
            if not 0 < value <= MAX_INT:
                raise ConfigurationError(f"{name} must be between 1 and {MAX_INT}")
        else:
            raise ConfigurationError(f"{name} has an unsupported type {type(value).__name__}")
