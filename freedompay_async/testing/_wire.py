"""
The emulator's side of the wire: the JWS header in, XML replies out (pure; no aiohttp).

Replies are written by hand, one `<root>` with one element per field, every value escaped.
Request bodies are read in `_http`, the aiohttp glue.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Final
from xml.sax.saxutils import escape

from freedompay_async.testing._state import FAILED, OK

if TYPE_CHECKING:
    from collections.abc import Sequence

    from freedompay_async.testing._state import Invoice

__all__ = [
    "XmlItem",
    "decode_jws_header",
    "error_items",
    "gateway_dt",
    "invoice_items",
    "qr_value",
    "xml_body",
]

GATEWAY_TZ: Final = timezone(timedelta(hours=5))

XmlItem = tuple[str, "str | Sequence[tuple[str, str]] | None"]


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
