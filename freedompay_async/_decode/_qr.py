"""The `invoice_methods/qr` value: base64 of the payment-page URL carrying the customer token."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qsl, urlsplit

__all__ = ["decode_qr"]

_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_HTTP_SCHEMES = frozenset({"http", "https"})


def decode_qr(qr: str | None, *, customer_param: str = "customer") -> tuple[str | None, str | None]:
    """
    Decode an `invoice_methods/qr` value into the payment-page URL and its customer token.

    The value is base64 (standard alphabet; the URL-safe alphabet and missing padding are
    tolerated) of a UTF-8 `http(s)://` URL whose *customer_param* query parameter is the token.
    This never raises: whatever fails to decode comes back as None.

    Args:
        qr: The raw value, or None.
        customer_param: The query parameter that holds the customer token.

    Returns:
        `(url, customer)`: the URL, or None when the value is not base64 of an http(s) URL; the
        token, or None when the URL lacks exactly one non-empty *customer_param*.
    """
    if not qr:
        return None, None
    try:
        packed = "".join(qr.split()).encode("ascii").translate(_URLSAFE_TO_STANDARD)
        url = base64.b64decode(packed + b"=" * (-len(packed) % 4), validate=True).decode("utf-8")
        parts = urlsplit(url)
    except (ValueError, binascii.Error):  # UnicodeError is a ValueError
        return None, None
    if parts.scheme not in _HTTP_SCHEMES or not parts.netloc or not _is_clean(url):
        return None, None
    try:
        values = [v for k, v in parse_qsl(parts.query, errors="strict") if k == customer_param]
    except ValueError:
        return url, None
    if len(values) != 1 or not _is_clean(values[0]):
        return url, None
    return url, values[0]


def _is_clean(text: str) -> bool:
    """Non-empty, printable and free of spaces: safe to show and to send back as a field."""
    return bool(text) and text.isprintable() and " " not in text
