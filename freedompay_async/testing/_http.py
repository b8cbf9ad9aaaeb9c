"""
The emulator's aiohttp glue: request bodies in, `web.Response` objects out.

Bodies are read as the gateway would read them: `multipart/form-data` with aiohttp's own
multipart reader, or `application/json` with `json`. The JWS payload of a multipart request is
rebuilt from its fields in the order received, every value as the string that was sent; the
payload of a JSON request is its raw body. Faults that replace a reply are answered here.
"""

from __future__ import annotations

import http
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from aiohttp import BodyPartReader, web

from freedompay_async.signing import jws_payload
from freedompay_async.testing._wire import xml_body

if TYPE_CHECKING:
    from collections.abc import Sequence

    from freedompay_async.testing._fault import Fault
    from freedompay_async.testing._wire import XmlItem

__all__ = [
    "MAX_BODY_BYTES",
    "BadRequestError",
    "drop",
    "garbage_response",
    "http_error_response",
    "json_response",
    "read_fields",
    "xml_response",
]

MAX_BODY_BYTES: Final = 1 << 20
MAX_FIELDS: Final = 64
_HTML_STATUSES: Final = frozenset({502, 504})


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


def xml_response(items: Sequence[XmlItem], status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=xml_body(items), content_type="application/xml", charset="utf-8"
    )


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data), content_type="application/json", charset="utf-8"
    )


def http_error_response(fault: Fault) -> web.Response:
    status = fault.status or 500
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    if status in _HTML_STATUSES:
        text = (
            f"<html><head><title>{status} {phrase}</title></head><body>"
            f"<center><h1>{status} {phrase}</h1></center><hr><center>nginx</center>"
            "</body></html>\n"
        )
        return web.Response(
            status=status, text=text, content_type="text/html", charset="utf-8", headers=headers
        )
    return web.Response(
        status=status,
        text=f"{status} {phrase}\n",
        content_type="text/plain",
        charset="utf-8",
        headers=headers,
    )


def garbage_response(fault: Fault, items: Sequence[XmlItem]) -> web.Response:
    """Answer a `malformed_xml`, `doctype` or `oversized` fault, built around *items*."""
    body = xml_body(items)
    if fault.kind == "malformed_xml":
        body = body[: max(len(body) // 2, 1)] + b"<<&\n"
    elif fault.kind == "doctype":
        declaration = b'<?xml version="1.0" encoding="UTF-8"?>\n'
        doctype = b'<!DOCTYPE root [<!ENTITY fp "emulator entity">]>\n'
        body = (
            declaration
            + doctype
            + body[len(declaration) :].replace(b"</root>", b"<note>&fp;</note></root>", 1)
        )
    else:
        head, _, _tail = body.rpartition(b"</root>")
        closing = b"</padding></root>\n"
        pad = max(fault.size - len(head) - len(b"<padding>") - len(closing), 0)
        body = head + b"<padding>" + b"x" * pad + closing
    return web.Response(body=body, content_type="application/xml", charset="utf-8")


def drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without a reply; aiohttp then drops the response below."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=500)
