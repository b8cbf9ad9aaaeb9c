"""
The emulator's side of the wire: request bodies in, XML replies out.

Bodies are read as the gateway would read them: `multipart/form-data` with aiohttp's own
multipart reader, or `application/json` with `json`. The JWS payload of a multipart request is
rebuilt from its fields in the order received, every value as the string that was sent; the
payload of a JSON request is its raw body. Replies are written by hand, one `<root>` with one
element per field, every value escaped.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Final
from xml.sax.saxutils import escape

from aiohttp import BodyPartReader

from freedompay_async.signing import jws_payload
from freedompay_async.testing._state import FAILED, OK

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aiohttp import web

    from freedompay_async.testing._state import Invoice

__all__ = [
    "BadRequestError",
    "XmlItem",
    "decode_jws_header",
    "error_items",
    "gateway_dt",
    "invoice_items",
    "qr_value",
    "read_fields",
    "xml_body",
]

MAX_BODY_BYTES: Final = 1 << 20
MAX_FIELDS: Final = 64
GATEWAY_TZ: Final = timezone(timedelta(hours=5))

XmlItem = tuple[str, "str | Sequence[tuple[str, str]] | None"]


class BadRequestError(ValueError):
    """The request body cannot be read as fields (answered as error code 200)."""


def _text(name: str, value: object) -> str:
    """Return a JSON field value as the text the gateway would see."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        raise BadRequestError(f"field {name} must be a string or a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    raise BadRequestError(f"field {name} must be a string or a number")


async def read_fields(request: web.Request) -> tuple[list[tuple[str, str]], bytes]:
    """
    Read a request's fields in the order received, and the payload its signature must cover.

    Args:
        request: The incoming request.

    Returns:
        The (name, text value) pairs and the JWS payload bytes.

    Raises:
        BadRequestError: The body is too large, not multipart or JSON, or malformed.
    """
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise BadRequestError("body too large")
    content_type = request.content_type
    if content_type == "application/json":
        raw = await request.read()
        return _json_fields(raw), raw
    if content_type == "multipart/form-data":
        try:
            fields = await _multipart_fields(request)
        except BadRequestError:
            raise
        except (ValueError, LookupError, AssertionError) as exc:
            raise BadRequestError("malformed multipart body") from exc
        return fields, jws_payload(fields)
    raise BadRequestError("Content-Type must be multipart/form-data or application/json")


def _json_fields(raw: bytes) -> list[tuple[str, str]]:
    try:
        data = json.loads(raw, parse_float=Decimal)
    except ValueError as exc:
        raise BadRequestError("body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise BadRequestError("JSON body must be an object")
    return [(str(name), _text(str(name), value)) for name, value in data.items()]


async def _multipart_fields(request: web.Request) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    reader = await request.multipart()
    for _ in range(MAX_FIELDS + 1):
        part = await reader.next()
        if part is None:
            return fields
        if len(fields) == MAX_FIELDS:
            break
        if not isinstance(part, BodyPartReader) or not part.name:
            raise BadRequestError("every part must be a named form field")
        fields.append((part.name, await part.text()))
    raise BadRequestError("too many fields")


def decode_jws_header(signature: str | None) -> dict[str, object]:
    """
    Decode the protected header of an `X-JWS-Signature` value without verifying it.

    Only the header is decoded: it holds the path, method and merchant id, nothing secret.

    Args:
        signature: The header value, or None.

    Returns:
        The header, or an empty dict when it is missing or undecodable.
    """
    if not signature:
        return {}
    head = signature.split(".", 1)[0]
    try:
        data = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return {}
    return data if isinstance(data, dict) else {}


def gateway_dt() -> str:
    """Return the current time as the gateway writes it, e.g. `2026-11-24T18:11:15+05:00`."""
    return datetime.now(GATEWAY_TZ).replace(microsecond=0).isoformat()


def qr_value(base_url: str, customer: str) -> str:
    """Return `invoice_methods/qr`: base64 of the payment-page URL carrying *customer*."""
    url = f"{base_url}/pay.html?customer={customer}"
    return base64.b64encode(url.encode()).decode("ascii")


def xml_body(items: Sequence[XmlItem]) -> bytes:
    """
    Write a `<root>` reply; a None value is left out, a sequence value becomes child elements.

    Args:
        items: (tag, value) pairs in reply order.

    Returns:
        The UTF-8 XML bytes.
    """
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n<root>']
    for tag, value in items:
        if value is None:
            continue
        if isinstance(value, str):
            out.append(f"<{tag}>{escape(value)}</{tag}>")
        else:
            inner = "".join(f"<{sub}>{escape(text)}</{sub}>" for sub, text in value)
            out.append(f"<{tag}>{inner}</{tag}>")
    out.append("</root>\n")
    return "".join(out).encode()


def _optional_int(value: int | None) -> str | None:
    return None if value is None else str(value)


def error_items(code: int, description: str) -> list[XmlItem]:
    """Return the fields of a `status=error` reply."""
    return [
        ("status", "error"),
        ("error_code", str(code)),
        ("error_description", description),
        ("dt", gateway_dt()),
    ]


def invoice_items(
    invoice: Invoice,
    *,
    shown_status: str | None = None,
    base_url: str | None = None,
) -> list[XmlItem]:
    """
    Return the fields of a pay/status reply for *invoice*; with *base_url*, the info fields too.

    `invoice_id` and `card_pan` appear only for `ok` and `failed`, as the pay page documents.

    Args:
        invoice: The invoice.
        shown_status: The status to show instead of the real one (a stale read).
        base_url: The emulator's base URL; given for info, which adds `description` and the QR.

    Returns:
        The reply fields.
    """
    status = shown_status or invoice.status
    settled = status in {OK, FAILED}
    failed = status == FAILED
    items: list[XmlItem] = [
        ("status", "ok"),
        ("order_id", invoice.order_id),
        ("invoice_status", status),
        ("invoice_id", str(invoice.invoice_id) if settled else None),
        ("error_code", _optional_int(invoice.error_code) if failed else None),
        ("error_description", invoice.error_description if failed else None),
        ("card_pan", invoice.card_pan if settled else None),
        ("amount", format(invoice.amount, "f")),
        ("currency", invoice.currency),
    ]
    if base_url is not None:
        items.append(("description", invoice.description))
        items.append(("invoice_methods", [("qr", qr_value(base_url, invoice.customer))]))
    items.append(("dt", gateway_dt()))
    return items
