"""
The merchant's side of Freedom Pay's callbacks: Check and Result notifications.

Freedom Pay calls the merchant's `check_url` before it takes the money (a *Check*) and its
`result_url` once the payment is settled (a *Result*). Each notification is a set of `pg_*` fields,
sent as form fields (GET or POST) or as one `pg_xml` field holding `<request>…</request>`, and
signed with `pg_sig` under the last path segment of the merchant's own callback URL. The merchant
answers HTTP 200 with a signed XML `<response>`: `pg_status` (`ok`, `rejected` or `error`),
`pg_description`, the incoming `pg_salt`, and `pg_sig`.

What this module guarantees:

- **Fail closed.** Nothing is parsed into a model before the signature verifies; a notification
  without `pg_sig`, with two, or with a wrong one raises `SignatureError`, whose message holds
  neither the signature nor the key. Every received field is signed, unknown ones included.
- **Typed, strict fields.** Amounts are `Decimal`, ids `int`, flags `bool`, the payment date a
  naive `datetime`. A missing required field, a repeated field or a malformed value raises
  `DecodeError` naming the field (`.tag`), never quoting its value.
- **At-least-once delivery handled.** Freedom Pay repeats a Result until it gets HTTP 200 (every
  half hour for two hours) and expects the same answer each time. `ReplayGuard` answers a repeated
  notification (same kind, `pg_payment_id` and `pg_salt`) with the bytes it sent the first time,
  without calling the business callback again, also while the first call is still running.
- **A small `aiohttp.web` handler.** `make_handler` (or `CallbackHandler.handle`) wires it
  together: read the form (or `pg_xml`), take the script name from the request path, verify, call
  the merchant's async callback, answer with the signed reply. A notification that does not
  verify or does not decode is answered `error` (signed) and logged as a warning without any
  secret, signature or card token; the business callback never sees it. A business callback that
  raises is answered HTTP 500, so Freedom Pay tries again later.

A Result may be refused (`rejected`) only when it says `pg_can_reject=1`
(`ResultNotification.can_reject`); otherwise the payment stands completed whatever the answer,
and the handler logs a warning when the callback rejects anyway.

Form fields in bracket notation (`cart[0][sku]`) are regrouped as PHP does before the signature
is checked, since the sender signs the nested structure; a plain field name that repeats is
refused.
"""

from __future__ import annotations

from freedompay_async.callbacks._handler import CallbackHandler, make_handler
from freedompay_async.callbacks._models import (
    CallbackAnswer,
    CallbackStatus,
    CheckNotification,
    Notification,
    ResultNotification,
)
from freedompay_async.callbacks._parse import parse_check, parse_notification, parse_result
from freedompay_async.callbacks._replay import ReplayGuard
from freedompay_async.callbacks._reply import build_reply

__all__ = [
    "CallbackAnswer",
    "CallbackHandler",
    "CallbackStatus",
    "CheckNotification",
    "Notification",
    "ReplayGuard",
    "ResultNotification",
    "build_reply",
    "make_handler",
    "parse_check",
    "parse_notification",
    "parse_result",
]
