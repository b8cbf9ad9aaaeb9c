"""
The one JSON shape of a pay outcome, written by `pay-batch` and stored by the arq workers.

A record never holds the card token; a PAN goes through `masking.mask_pan`. The same
fields appear in every record (None when unknown), so a reader can rely on them:

| field | meaning |
|---|---|
| `customer`, `user_id`, `key`, `line` | the request; `line`: its CSV line, if it came from one |
| `state` | `paid` `failed` `expired` `pending` `ambiguous` `error`, or `sending` (see below) |
| `source` | `pay` (a pay call), `status` (settled by a status read), `intent` (about to pay) |
| `invoice_status`, `invoice_id`, `order_id`, `amount`, `currency`, `card_pan` | the payment |
| `error`, `message` | the exception's class and message |
| `error_code`, `error_description` | the gateway's code and text (a refusal or a decline) |
| `attempts`, `elapsed` | requests sent for the item; seconds it took |
| `claim` | how a duplicate guard decided, when one did |
| `finished_at` | Unix time the record was made |

An `intent` record (`state` `sending`) is written before a pay is handed to the gateway, so a
run killed mid-pay leaves proof that the pay may have been sent.
"""

from __future__ import annotations

import time
from typing import Any, Final

from freedompay_async import GatewayError, PayOutcome, PayRequest
from freedompay_async.masking import mask_pan

__all__ = [
    "INTENT_STATE",
    "RECORD_FIELDS",
    "TERMINAL_STATES",
    "intent_record",
    "jsonable",
    "outcome_record",
]

#: The `state` of an intent record.
INTENT_STATE: Final = "sending"
#: The states after which an invoice must never be paid again.
TERMINAL_STATES: Final = frozenset({"paid", "failed", "expired"})
#: Every record's keys, in order.
RECORD_FIELDS: Final = (
    "customer",
    "user_id",
    "key",
    "line",
    "state",
    "source",
    "invoice_status",
    "invoice_id",
    "order_id",
    "amount",
    "currency",
    "card_pan",
    "error",
    "message",
    "error_code",
    "error_description",
    "attempts",
    "elapsed",
    "claim",
    "finished_at",
)


def jsonable(value: object) -> object:
    """
    Return *value* if JSON has it (None, str, int, float, bool), else its `str()`.

    Args:
        value: Any value, e.g. a `PayRequest.key`.

    Returns:
        A JSON-ready scalar.
    """
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _blank(request: PayRequest, *, line: int | None, key: object, source: str) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
    record.update(
        customer=request.customer,
        user_id=request.user_id,
        key=jsonable(request.key if key is None else key),
        line=line,
        source=source,
        attempts=0,
        elapsed=0.0,
        finished_at=round(time.time(), 3),
    )
    return record


def outcome_record(
    outcome: PayOutcome,
    *,
    line: int | None = None,
    key: object = None,
    source: str = "pay",
    claim: str | None = None,
) -> dict[str, Any]:
    """
    Describe an outcome as a JSON-ready dictionary, without the card token.

    Args:
        outcome: The outcome.
        line: The CSV line of the request, when it came from one.
        key: The correlation key to record (default: `outcome.request.key`).
        source: `pay` or `status` (how the outcome was learned).
        claim: How a duplicate guard decided, when known.

    Returns:
        The record; its keys are `RECORD_FIELDS`.
    """
    record = _blank(outcome.request, line=line, key=key, source=source)
    payment = outcome.payment
    error = outcome.error
    record.update(state=outcome.state, attempts=outcome.attempts, claim=claim)
    record["elapsed"] = round(outcome.elapsed, 3)
    if payment is not None:
        record.update(
            invoice_status=payment.invoice_status.value,
            invoice_id=payment.invoice_id,
            order_id=payment.order_id,
            amount=str(payment.amount) if payment.amount is not None else None,
            currency=payment.currency,
            card_pan=mask_pan(payment.card_pan) if payment.card_pan is not None else None,
            error_code=payment.error_code,
            error_description=payment.error_description,
        )
    if error is not None:
        record.update(error=type(error).__name__, message=str(error))
        if isinstance(error, GatewayError):
            record.update(error_code=error.error_code, error_description=error.error_description)
    return record


def intent_record(
    request: PayRequest, *, line: int | None = None, key: object = None
) -> dict[str, Any]:
    """
    Describe a pay about to be sent (state `sending`, source `intent`).

    Args:
        request: The request about to be paid.
        line: Its CSV line, when it came from one.
        key: The correlation key to record (default: `request.key`).

    Returns:
        The record; its keys are `RECORD_FIELDS`.
    """
    record = _blank(request, line=line, key=key, source="intent")
    record["state"] = INTENT_STATE
    return record
