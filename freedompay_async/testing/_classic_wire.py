"""
The classic Merchant API's wire, as the emulator writes and checks it.

Requests are `application/x-www-form-urlencoded` or `multipart/form-data`; their `pg_sig` is
recomputed here with the script name cut from the request path by hand (everything after the
last `/`), independently of the SDK's request builder. Replies are one `<response>` whose
`pg_salt` is fresh and whose `pg_sig` is signed with the called script's name; only the 9998
"unknown merchant" error goes out unsigned, as the documentation says.
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING, Final
from xml.sax.saxutils import escape

import attrs
from aiohttp import web

from freedompay_async.signing import Element, pg_sig
from freedompay_async.testing._classic_state import ClassicItem

if TYPE_CHECKING:
    from collections.abc import Sequence

    from freedompay_async.testing._classic_state import Payment
    from freedompay_async.testing._fault import Fault

__all__ = [
    "BadFormError",
    "ClassicItem",
    "ClassicRecord",
    "error_reply",
    "fault_response",
    "garbage",
    "mask_field",
    "read_form",
    "script_of",
    "signed_items",
    "signed_reply",
    "status_items",
    "verify_request",
]


MAX_FORM_FIELDS: Final = 64
ERR_MERCHANT: Final = 9998
ERR_INTERNAL: Final = 1000


class BadFormError(ValueError):
    """The body is not a form the gateway reads."""


@attrs.frozen(kw_only=True)
class ClassicRecord:
    """
    One classic request as the emulator received it (`pg_card_token` masked, `pg_sig` dropped).

    Attributes:
        operation: The operation (`refund`, `card_list`, ...).
        path: The request path.
        fields: The fields received, in order.
        signature_valid: Whether its `pg_sig` verified.
        at: When it arrived, on `time.monotonic()`.
    """

    operation: str
    path: str
    fields: tuple[tuple[str, str], ...]
    signature_valid: bool
    at: float


def mask_field(name: str, value: str) -> str:
    if name == "pg_card_token":
        return "****" + value[-4:] if len(value) > 8 else "****"  # noqa: PLR2004
    return value


def script_of(path: str) -> str:
    """The script name a request to *path* is signed with: its last segment."""
    return path[path.rfind("/") + 1 :]


async def read_form(request: web.Request) -> list[tuple[str, str]]:
    """
    Read a form body's fields in the order sent.

    Raises:
        BadFormError: Not a urlencoded or multipart form, a file part, or too many fields.
    """
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise BadFormError("Content-Type must be a form")
    try:
        form = await request.post()
    except ValueError as exc:
        raise BadFormError("malformed form body") from exc
    fields: list[tuple[str, str]] = []
    for name, value in form.items():
        if not isinstance(value, str):
            raise BadFormError("file parts are not accepted")
        fields.append((name, value))
    if len(fields) > MAX_FORM_FIELDS:
        raise BadFormError("too many fields")
    return fields


def verify_request(script: str, fields: Sequence[tuple[str, str]], secret_key: str) -> bool:
    """Whether the request carries exactly one `pg_sig` equal to the one recomputed here."""
    claimed = [value for name, value in fields if name == "pg_sig"]
    if len(claimed) != 1:
        return False
    expected = pg_sig(script, [(n, v) for n, v in fields if n != "pg_sig"], secret_key)
    return hmac.compare_digest(expected, claimed[0].lower())


def _element(items: Sequence[ClassicItem]) -> Element:
    return Element(
        (name, value if isinstance(value, str) else _element(value)) for name, value in items
    )


def _xml(items: Sequence[ClassicItem]) -> str:
    out: list[str] = []
    for name, value in items:
        inner = escape(value) if isinstance(value, str) else _xml(value)
        out.append(f"<{name}>{inner}</{name}>")
    return "".join(out)


def _response(items: Sequence[ClassicItem]) -> web.Response:
    body = f'<?xml version="1.0" encoding="utf-8"?>\n<response>{_xml(items)}</response>\n'
    return web.Response(body=body.encode(), content_type="application/xml", charset="utf-8")


def signed_items(script: str, items: Sequence[ClassicItem], secret_key: str) -> list[ClassicItem]:
    """*items* with a fresh `pg_salt` and the `pg_sig` over them and it."""
    salted: list[ClassicItem] = [*items, ("pg_salt", secrets.token_hex(8))]
    return [*salted, ("pg_sig", pg_sig(script, _element(salted), secret_key))]


def signed_reply(script: str, items: Sequence[ClassicItem], secret_key: str) -> web.Response:
    """A signed `<response>` holding *items*."""
    return _response(signed_items(script, items, secret_key))


def error_reply(script: str, code: int, description: str, secret_key: str) -> web.Response:
    """A `pg_status=error` reply; signed unless the code is 9998."""
    items: list[ClassicItem] = [
        ("pg_status", "error"),
        ("pg_error_code", str(code)),
        ("pg_error_description", description),
    ]
    if code == ERR_MERCHANT:
        return _response(items)
    return signed_reply(script, items, secret_key)


def garbage(kind: str, items: Sequence[ClassicItem], size: int) -> web.Response:
    """The body of a `malformed_xml`, `doctype` or `oversized` fault."""
    text = f'<?xml version="1.0" encoding="utf-8"?>\n<response>{_xml(items)}</response>\n'
    if kind == "malformed_xml":
        text = text[: max(len(text) // 2, 1)] + "<<&\n"
    elif kind == "doctype":
        head = '<?xml version="1.0" encoding="utf-8"?>\n'
        text = (
            head
            + '<!DOCTYPE response [<!ENTITY fp "emulator entity">]>\n'
            + text[len(head) :].replace("</response>", "<note>&fp;</note></response>", 1)
        )
    else:
        text = text.replace("</response>", "<padding>" + "x" * size + "</padding></response>")
    return web.Response(body=text.encode(), content_type="application/xml", charset="utf-8")


def _money(value: object) -> str:
    return format(value, "f")


def status_items(payment: Payment, *, revoked_amount_tag: str) -> list[ClassicItem]:
    """The `get_status3` reply fields of *payment* (refund amounts negative, as documented)."""
    items: list[ClassicItem] = [
        ("pg_status", "ok"),
        ("pg_payment_id", str(payment.payment_id)),
        ("pg_order_id", payment.order_id),
        ("pg_currency", payment.currency),
        ("pg_amount", _money(payment.amount)),
        ("pg_can_reject", "1" if payment.hold and not payment.captured else "0"),
        ("pg_payment_method", "bankcard"),
        ("pg_payment_status", payment.status),
        ("pg_captured", "1" if payment.captured else "0"),
    ]
    if payment.clearing_amount is not None:
        items.append(("pg_clearing_amount", _money(payment.clearing_amount)))
    if payment.revocations:
        items.append((revoked_amount_tag, _money(payment.amount)))
        items.append(
            (
                "pg_revoked_payments",
                [
                    (
                        "pg_revoked_payment",
                        [("pg_payment_id", str(pid)), ("pg_payment_status", "success")],
                    )
                    for pid in payment.revocations
                ],
            )
        )
    if payment.refunds:
        items.append(("pg_refund_amount", _money(-payment.refunded)))
        items.append(
            (
                "pg_refund_payments",
                [
                    (
                        "pg_refund_payment",
                        [
                            ("pg_payment_id", str(row.payment_id)),
                            ("pg_payment_status", "success"),
                            ("pg_amount", _money(-row.amount)),
                            ("pg_payment_date", row.date),
                            ("pg_reference", f"{row.payment_id:012d}"),
                        ],
                    )
                    for row in payment.refunds
                ],
            )
        )
    return items


def fault_response(
    fault: Fault, script: str, request: web.Request, secret_key: str
) -> web.StreamResponse:
    """The reply a fault puts in place of the real one."""
    if fault.kind == "http_status":
        status = fault.status or 500
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
        return web.Response(status=status, text=f"{status} error\n", headers=headers)
    if fault.kind == "drop":
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)
    if fault.kind in ("malformed_xml", "doctype", "oversized"):
        return garbage(fault.kind, [("pg_status", "ok")], fault.size)
    code = fault.code if fault.code is not None else ERR_INTERNAL
    return error_reply(script, code, f"Error {code}", secret_key)
