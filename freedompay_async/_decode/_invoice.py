"""
Replies as models: the one place where reply bytes become a model or an exception.

Theory of operation. A reply is refused, in this order, when:

1. its HTTP status is not 2xx (`HTTPStatusError`; the `Retry-After` header stays in `.headers`);
2. it is larger than the size cap, empty, or holds `<!DOCTYPE` or `<!ENTITY` in any letter case
   (`DecodeError` before the parser sees a byte). A DTD is the door to entity expansion
   ("billion laughs") and external entities, and no invoice reply needs one. Two more walls stand
   behind the byte check, for documents in an encoding the check cannot read (UTF-16): every
   parser refuses a DOCTYPE declaration the moment expat reports one, and xmltodict's
   `disable_entities` refuses entity declarations;
3. it is not well-formed XML, or its single root element (named `<root>`, `<response>` or anything
   else: the name is ignored) holds text instead of child elements;
4. a field the model needs is malformed: a scalar tag that repeats, a tag that holds child
   elements where text belongs, a missing `status` (or `invoice_status`, except for init), a
   `status` other than `ok` or `error`, an amount that is not a plain decimal number, an integer
   that is not plain digits, a timestamp that is not ISO 8601 with an offset.

Each refusal is a `DecodeError` naming the tag at fault (`.tag`, None when the whole reply was
refused), chained from the parser's exception when there is one: no `KeyError`, `TypeError` or
`ExpatError` ever escapes. A well-formed `status=error` reply raises `GatewayError`.

What is tolerated: unknown tags (the gateway may add fields), empty or absent optional fields
(None), an unknown `invoice_status` (`InvoiceStatus.UNKNOWN`, the raw string kept), and a QR value
that does not decode (`qr_url` and `customer` are None, the raw value stays): derived values
never raise.

Messages never quote the reply: a field's value could be anything, and the exception already keeps
the first 2 KiB of the body in `.body`. Only the gateway's own `error_description` is quoted.

The byte screen, the DOCTYPE-refusing parser and `parse_ordered` live in `_harden`. xmltodict is
imported in this package and nowhere else, and the dict it builds never leaves this module: the
models receive converted values as keywords. Each reply is parsed exactly once.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict

import xmltodict

from freedompay_async._decode._harden import (
    _DECIMAL,
    _DEFAULT_MAX_BYTES,
    _HARDENED_EXPAT,
    _INT,
    _QUOTE_CHARS,
    _parser_message,
    _screen,
)
from freedompay_async._decode._qr import decode_qr
from freedompay_async._exceptions import DecodeError, GatewayError, HTTPStatusError
from freedompay_async._models import InvoiceInfo, InvoiceInit, InvoicePayment, InvoiceStatus
from freedompay_async._protocol import Operation
from freedompay_async.masking import printable, redact_text

if TYPE_CHECKING:
    from freedompay_async._protocol import RawResponse

__all__ = [
    "decode_info",
    "decode_init",
    "decode_payment",
]

#: The most digits `_INT` accepts.
_MAX_DIGITS = 30

# ---------------------------------------------------------------------------------------------
# decode_*: one reply to one model


def _error(raw: RawResponse, op: Operation, message: str, tag: str | None = None) -> DecodeError:
    return DecodeError(
        f"{op.value} reply refused: {message}",
        operation=op.value,
        status_code=raw.status,
        headers=raw.headers,
        body=raw.body,
        tag=tag,
        redact=raw.sensitive,
    )


def _fields(raw: RawResponse, op: Operation, max_bytes: int) -> dict[str, Any]:
    """
    Check the HTTP status and the hardening rules, parse once and settle `status`.

    Returns:
        The root element's children as xmltodict built them (text, None, dict or list).

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The body is refused or `status` is missing or malformed.
        GatewayError: The reply says `status=error`.
    """
    status_code = raw.status
    if not 200 <= status_code < 300:  # noqa: PLR2004 - the 2xx range
        raise HTTPStatusError(
            f"{op.value} failed: the gateway answered HTTP {status_code}",
            operation=op.value,
            status_code=status_code,
            headers=raw.headers,
            body=raw.body,
            redact=raw.sensitive,
        )
    body = raw.body
    problem = _screen(body, max_bytes)
    if problem is not None:
        raise _error(raw, op, problem)
    try:
        document = xmltodict.parse(
            body,
            expat=_HARDENED_EXPAT,
            xml_attribs=False,
            dict_constructor=dict,
            disable_entities=True,
            process_namespaces=False,
        )
        ((root, children),) = document.items()
    except Exception as exc:
        raise _error(raw, op, _parser_message(exc), getattr(exc, "tag", None)) from exc
    if children.__class__ is not dict:
        raise _error(raw, op, f"root element <{root}> holds no child elements", root)
    if "#text" in children:
        raise _error(raw, op, f"root element <{root}> mixes text and child elements", root)
    fields: dict[str, Any] = children
    status = _text(fields, "status", raw, op)
    if status == "ok":
        return fields
    if status == "error":
        raise _gateway_error(fields, raw, op)
    if status is None:
        raise _error(raw, op, "reply has no <status>", "status")
    raise _error(raw, op, "<status> is neither ok nor error", "status")


def _plain(children: dict[str, Any]) -> bool:
    """Whether every child is one text or empty: no repeated tag, no nested element."""
    for value in children.values():
        if value is not None and value.__class__ is not str:
            return False
    return True


def _gateway_error(children: dict[str, Any], raw: RawResponse, op: Operation) -> GatewayError:
    code = _int(children, "error_code", raw, op)
    description = _text(children, "error_description", raw, op)
    shown = (
        "no description"
        if description is None
        else printable(redact_text(description, raw.sensitive)[:_QUOTE_CHARS])
    )
    return GatewayError(
        f"{op.value} refused by the gateway: error {code}: {shown}",
        operation=op.value,
        error_code=code,
        error_description=description,
        redact=raw.sensitive,
    )


def _text(children: dict[str, Any], tag: str, raw: RawResponse, op: Operation) -> str | None:
    """Return a scalar child's text, None when it is absent or empty."""
    value = children.get(tag)
    if value is None or value.__class__ is str:
        return value
    if value.__class__ is list:
        raise _error(raw, op, f"<{tag}> appears more than once", tag)
    raise _error(raw, op, f"<{tag}> holds child elements where text belongs", tag)


def _int(children: dict[str, Any], tag: str, raw: RawResponse, op: Operation) -> int | None:
    text = _text(children, tag, raw, op)
    if text is None:
        return None
    # Plain ASCII digits, the usual id, are checked without the regular expression.
    if not (text.isdigit() and text.isascii() and len(text) <= _MAX_DIGITS) and (
        _INT.fullmatch(text) is None
    ):
        raise _error(raw, op, f"<{tag}> is not an integer", tag)
    return int(text)


def _amount(children: dict[str, Any], raw: RawResponse, op: Operation) -> Decimal | None:
    text = _text(children, "amount", raw, op)
    if text is None:
        return None
    if _DECIMAL.fullmatch(text) is None:
        raise _error(raw, op, "<amount> is not a plain decimal number", "amount")
    return Decimal(text)


def _dt(children: dict[str, Any], raw: RawResponse, op: Operation) -> datetime | None:
    text = _text(children, "dt", raw, op)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _error(raw, op, "<dt> is not an ISO 8601 timestamp", "dt") from exc
    if moment.tzinfo is None:
        raise _error(raw, op, "<dt> has no UTC offset", "dt")
    return moment


def _invoice_status(
    children: dict[str, Any], raw: RawResponse, op: Operation
) -> tuple[InvoiceStatus, str]:
    text = _text(children, "invoice_status", raw, op)
    if text is None:
        raise _error(raw, op, "reply has no <invoice_status>", "invoice_status")
    return InvoiceStatus.parse(text), text


def _qr(children: dict[str, Any], raw: RawResponse, op: Operation) -> str | None:
    """Return the raw `invoice_methods/qr` text, None when either element is absent or empty."""
    methods = children.get("invoice_methods")
    if methods is None:
        return None
    if methods.__class__ is not dict:
        kind = "appears more than once" if methods.__class__ is list else "holds no <qr>"
        raise _error(raw, op, f"<invoice_methods> {kind}", "invoice_methods")
    return _text(methods, "qr", raw, op)


class _PaymentFields(TypedDict):
    invoice_status: InvoiceStatus
    invoice_status_raw: str
    order_id: str | None
    invoice_id: int | None
    customer: str | None
    amount: Decimal | None
    currency: str | None
    card_pan: str | None
    error_code: int | None
    error_description: str | None
    dt: datetime | None


def _payment_fields(
    children: dict[str, Any], raw: RawResponse, op: Operation, customer: str | None
) -> _PaymentFields:
    status, status_raw = _invoice_status(children, raw, op)
    return {
        "invoice_status": status,
        "invoice_status_raw": status_raw,
        "order_id": _text(children, "order_id", raw, op),
        "invoice_id": _int(children, "invoice_id", raw, op),
        "customer": customer,
        "amount": _amount(children, raw, op),
        "currency": _text(children, "currency", raw, op),
        "card_pan": _text(children, "card_pan", raw, op),
        "error_code": _int(children, "error_code", raw, op),
        "error_description": _text(children, "error_description", raw, op),
        "dt": _dt(children, raw, op),
    }


def decode_init(
    raw: RawResponse,
    *,
    max_bytes: int = _DEFAULT_MAX_BYTES,
    qr_customer_param: str = "customer",
) -> InvoiceInit:
    """
    Decode the reply to an init request.

    Args:
        raw: The reply as the transport read it.
        max_bytes: Largest body accepted.
        qr_customer_param: The query parameter of the QR's URL that holds the customer token.

    Returns:
        The new invoice; `invoice_status` is `NEW` (raw None) when the reply carries none, and
        `qr_url`/`customer` are None when the QR value does not decode.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused (see the module docstring).
        GatewayError: The reply says `status=error`.
    """
    op = Operation.INIT
    children = _fields(raw, op, max_bytes)
    status_raw = _text(children, "invoice_status", raw, op)
    status = InvoiceStatus.NEW if status_raw is None else InvoiceStatus.parse(status_raw)
    qr = _qr(children, raw, op)
    qr_url, customer = decode_qr(qr, customer_param=qr_customer_param)
    return InvoiceInit(
        invoice_id=_int(children, "invoice_id", raw, op),
        invoice_status=status,
        invoice_status_raw=status_raw,
        qr=qr,
        qr_url=qr_url,
        customer=customer,
        order_id=_text(children, "order_id", raw, op),
        dt=_dt(children, raw, op),
    )


def decode_payment(
    raw: RawResponse,
    *,
    operation: Operation = Operation.PAY,
    max_bytes: int = _DEFAULT_MAX_BYTES,
    customer: str | None = None,
) -> InvoicePayment:
    """
    Decode the reply to a pay or status request.

    Args:
        raw: The reply as the transport read it.
        operation: `Operation.PAY` or `Operation.STATUS`; named in errors.
        max_bytes: Largest body accepted.
        customer: The customer token the call used, copied into the model (replies may omit it).

    Returns:
        The invoice's payment state.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused (see the module docstring); `invoice_status` is required.
        GatewayError: The reply says `status=error`.
    """
    children = _fields(raw, operation, max_bytes)
    if _plain(children):
        # The usual reply: every field a single text or empty, so only the conversions remain.
        get = children.get
        status_raw = get("invoice_status")
        if status_raw is not None:
            return InvoicePayment(
                invoice_status=InvoiceStatus.parse(status_raw),
                invoice_status_raw=status_raw,
                order_id=get("order_id"),
                invoice_id=_int(children, "invoice_id", raw, operation),
                customer=customer,
                amount=_amount(children, raw, operation),
                currency=get("currency"),
                card_pan=get("card_pan"),
                error_code=_int(children, "error_code", raw, operation),
                error_description=get("error_description"),
                dt=_dt(children, raw, operation),
            )
    return InvoicePayment(**_payment_fields(children, raw, operation, customer))


def decode_info(
    raw: RawResponse,
    *,
    max_bytes: int = _DEFAULT_MAX_BYTES,
    qr_customer_param: str = "customer",
    customer: str | None = None,
) -> InvoiceInfo:
    """
    Decode the reply to an info request.

    Args:
        raw: The reply as the transport read it.
        max_bytes: Largest body accepted.
        qr_customer_param: The query parameter of the QR's URL that holds the customer token.
        customer: The customer token the call used; when None, the one in the QR's URL is used.

    Returns:
        The invoice's payment state with its description and QR.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused (see the module docstring); `invoice_status` is required.
        GatewayError: The reply says `status=error`.
    """
    op = Operation.INFO
    children = _fields(raw, op, max_bytes)
    fields = _payment_fields(children, raw, op, customer)
    qr = _qr(children, raw, op)
    qr_url, qr_customer = decode_qr(qr, customer_param=qr_customer_param)
    if customer is None:
        fields["customer"] = qr_customer
    return InvoiceInfo(
        **fields,
        description=_text(children, "description", raw, op),
        qr=qr,
        qr_url=qr_url,
    )
