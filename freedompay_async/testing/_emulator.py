"""
`FreedomPayEmulator`: the invoice API of `wire-contract.md`, served by aiohttp.web on loopback.

It is a second implementation of the contract, written from the contract and sharing only
`freedompay_async.signing` with the client, so one misreading cannot pass on both sides of the
wire. It verifies the detached JWS of every request, keeps each invoice in the state machine of
`_state`, counts the pay attempts it commits, and lets a test script what happens: the fate of a
payment (per invoice, per card token, or by default) and faults injected into the next matching
requests.

A small JSON admin API under `/_emulator/` (no signature) drives the same controls from another
process.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import http
import json
import logging
import time
from collections import deque
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final, Self

import attrs
from aiohttp import web

from freedompay_async.signing import verify_jws_detached
from freedompay_async.testing._classic_server import ClassicGateway
from freedompay_async.testing._scenario import Fate, Fault
from freedompay_async.testing._state import (
    NEW,
    OK,
    IllegalTransitionError,
    Invoice,
    InvoiceBook,
    mask_pan,
)
from freedompay_async.testing._wire import (
    MAX_BODY_BYTES,
    BadRequestError,
    XmlItem,
    decode_jws_header,
    error_items,
    gateway_dt,
    invoice_items,
    qr_value,
    read_fields,
    xml_body,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import TracebackType

__all__ = ["EmulatorStats", "FreedomPayEmulator", "RequestRecord"]

_log = logging.getLogger("freedompay_async.testing")

OPERATIONS: Final = ("init", "pay", "status", "info")
_READS: Final = frozenset({"status", "info"})
_API_PATH: Final = "/v5/merchant/invoice/{op:init|pay|status|info}"
_MAX_RECORDS: Final = 100_000
_MAX_ADMIN_COUNT: Final = 1_000_000
_SHUTDOWN_TIMEOUT: Final = 1.0
_HTML_STATUSES: Final = frozenset({502, 504})

_ERR_SIGNATURE: Final = 100
_ERR_REQUEST: Final = 200
_ERR_NOT_FOUND: Final = 340
_ERR_NOT_PAYABLE: Final = 350
_ERR_INTERNAL: Final = 1000
_ERR_MERCHANT: Final = 9998

_INIT_REQUIRED: Final = (
    "order_id",
    "merchant_id",
    "amount",
    "description",
    "invoice_method",
    "currency",
)
_PAY_REQUIRED: Final = ("customer", "user_id", "card_token")
_LOOKUP_KEYS: Final = ("customer", "order_id", "invoice_id")
_FAULT_TARGET_KEYS: Final = frozenset({"operation", "times", "customer"})


def _mask_token(token: str) -> str:
    """Keep only a card token's last four characters."""
    return "****" + token[-4:] if len(token) > 8 else "****"  # noqa: PLR2004


@attrs.frozen(kw_only=True)
class RequestRecord:
    """
    One API request as the emulator received it (card tokens masked, no signature).

    Attributes:
        operation: `init`, `pay`, `status` or `info`.
        fields: The fields received, in order; `card_token` masked to its last four characters.
        content_type: The request's media type, e.g. `multipart/form-data`.
        at: When it arrived, on `time.monotonic()`.
        jws_header: The decoded protected header of `X-JWS-Signature` (empty when absent).
    """

    operation: str
    fields: Mapping[str, str]
    content_type: str
    at: float
    jws_header: Mapping[str, object]


@attrs.frozen(kw_only=True)
class EmulatorStats:
    """
    A snapshot of what the emulator has seen (admin requests are not counted).

    Attributes:
        requests: API requests received.
        by_operation: API requests per operation.
        in_flight: Requests being handled at the time of the snapshot.
        max_in_flight: The most requests handled at the same time.
        committed_pays: Pay attempts committed, over all invoices.
        double_charges: Invoices with more than one committed pay.
        rejected_signatures: Requests refused for a missing or bad signature (error 100).
        faults_applied: Injected faults that struck.
        invoices: Invoices held.
        first_request_at: `time.monotonic()` of the first request, or None.
        last_request_at: `time.monotonic()` of the latest request, or None.
    """

    requests: int
    by_operation: Mapping[str, int]
    in_flight: int
    max_in_flight: int
    committed_pays: int
    double_charges: int
    rejected_signatures: int
    faults_applied: int
    invoices: int
    first_request_at: float | None
    last_request_at: float | None

    @property
    def mean_rate(self) -> float:
        """Requests per second between the first and the latest request (0.0 if undefined)."""
        if self.first_request_at is None or self.last_request_at is None:
            return 0.0
        span = self.last_request_at - self.first_request_at
        return self.requests / span if span > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """
        Return the snapshot as a JSON-ready dictionary.

        Returns:
            Every attribute by name.
        """
        data = attrs.asdict(self)
        data["by_operation"] = dict(self.by_operation)
        return data


@attrs.define
class _QueuedFault:
    fault: Fault
    operations: frozenset[str]
    customer: str | None
    remaining: int


class _ReplyError(Exception):
    """A request that is answered with `status=error` before anything is processed."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(code, description)
        self.code = code
        self.description = description


def _xml_response(items: Sequence[XmlItem], status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=xml_body(items), content_type="application/xml", charset="utf-8"
    )


def _json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data), content_type="application/json", charset="utf-8"
    )


def _http_error_response(fault: Fault) -> web.Response:
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


def _garbage_response(fault: Fault, items: Sequence[XmlItem]) -> web.Response:
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


def _unique(fields: Sequence[tuple[str, str]]) -> dict[str, str]:
    values = dict(fields)
    if len(values) != len(fields):
        raise _ReplyError(_ERR_REQUEST, "Invalid request: a field is repeated")
    return values


def _admin_count(data: Mapping[str, Any]) -> int:
    count = data.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError("count must be an integer")
    if not 0 <= count <= _MAX_ADMIN_COUNT:
        raise ValueError(f"count must be 0-{_MAX_ADMIN_COUNT}")
    return count


def _admin_str(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{key} must be a non-empty string")
    return value


def _require(fields: Mapping[str, str], names: Sequence[str]) -> None:
    for name in names:
        if not fields.get(name):
            raise _ReplyError(_ERR_REQUEST, f"Invalid request: field {name} is required")


def _parse_amount(text: str) -> Decimal:
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise _ReplyError(_ERR_REQUEST, "Invalid request: amount is not a number") from exc
    if not amount.is_finite() or amount <= 0:
        raise _ReplyError(_ERR_REQUEST, "Invalid request: amount must be positive")
    return amount


class FreedomPayEmulator:
    """
    An in-process Freedom Pay invoice gateway for tests, on 127.0.0.1 and a free port.

    It serves `POST /v5/merchant/invoice/{init,pay,status,info}` with multipart or JSON bodies,
    verifies every request's `X-JWS-Signature` against `secret_key`, and answers in XML. Each pay
    ends according to a `Fate`: the card token's (`script_card`), else the invoice's own (given
    at creation), else `default_fate`. A pay on an invoice that is no longer `new` is refused
    with error 350 and commits nothing, except in *adversarial* mode, where every pay commits
    again so that `double_charged()` exposes a client that paid twice. Faults (`inject`) disturb
    the next matching requests.

    The admin API (JSON, no signature, not counted in `stats`) offers the same controls to
    another process:

    - `GET /_emulator/` → the list of these routes.
    - `POST /_emulator/invoices` `{"count": 3, "fate": {"kind": "declined", "error_code": 5},
      "amount": "100", "currency": "KZT"}` (or `"order_id"` with count 1) →
      `{"customers": [...]}`.
    - `GET /_emulator/invoices/{customer}` → its status, charges, order and invoice ids.
    - `POST /_emulator/cards` `{"card_token": "...", "fate": {...}}`.
    - `POST /_emulator/faults` `{"fault": {"kind": "drop"}, "operation": "pay", "times": 1,
      "customer": null}` (the fault's keys may also sit at the top level);
      `DELETE /_emulator/faults` clears the queue.
    - `POST /_emulator/expire` `{"customer": "..."}`.
    - `GET /_emulator/stats` → `EmulatorStats.to_dict()` plus `double_charged` and
      `pending_faults`; with `?customers=1` also `invoices`: `{customer: {status, charges}}`.

    Fates and faults take their `to_dict()` form. Invalid input answers 400 with `{"error"}`.

    Args:
        merchant_id: The merchant id the emulator accepts; anything else gets error 9998.
        secret_key: The key signatures are checked with.
        host: The address to listen on.
        port: The port, 0 for a free one.
        adversarial: Commit every pay, even on an invoice that is no longer `new`.
        default_fate: The fate of a pay when neither the card nor the invoice has one
            (None: paid).
        keepalive_timeout: Seconds an idle keep-alive connection stays open.
        seed: Seed for customer tokens, for reproducible runs.
        require_issued_tokens: Make pay accept only a card token that `classic` issued for the
            request's `user_id` (saved through `cardstorage/add` or `classic.save_card`); any
            other token gets error 200 and commits nothing. Off by default.

    The classic Merchant API (saved cards, `get_status3.php`, `revoke.php`, `cancel.php`,
    `do_capture.php`) is served beside the invoice API; `classic` scripts and observes it. A
    paid invoice's `invoice_id` works there as its payment id.

    Raises:
        ValueError: An argument is empty or out of range.
    """

    def __init__(
        self,
        *,
        merchant_id: str = "123456",
        secret_key: str = "emulator-secret-key",  # noqa: S107 - a test fixture's key
        host: str = "127.0.0.1",
        port: int = 0,
        adversarial: bool = False,
        default_fate: Fate | None = None,
        keepalive_timeout: float = 75.0,
        seed: int | None = None,
        require_issued_tokens: bool = False,
    ) -> None:
        if not merchant_id or not secret_key:
            raise ValueError("merchant_id and secret_key must not be empty")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:  # noqa: PLR2004
            raise ValueError(f"port must be 0-65535, got {port!r}")
        if not keepalive_timeout > 0:
            raise ValueError(f"keepalive_timeout must be > 0, got {keepalive_timeout!r}")
        self._merchant_id = str(merchant_id)
        self._secret_key = secret_key
        self._host = host
        self._port = port
        self._adversarial = adversarial
        self._default_fate = default_fate if default_fate is not None else Fate.paid()
        self._keepalive_timeout = float(keepalive_timeout)
        self._book = InvoiceBook(seed=seed)
        self._cards: dict[str, Fate] = {}
        self._faults: list[_QueuedFault] = []
        self._records: deque[RequestRecord] = deque(maxlen=_MAX_RECORDS)
        self._requests = 0
        self._by_operation = dict.fromkeys(OPERATIONS, 0)
        self._in_flight = 0
        self._max_in_flight = 0
        self._rejected = 0
        self._faults_applied = 0
        self._first_at: float | None = None
        self._last_at: float | None = None
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._closing: asyncio.Event | None = None
        self._closed = False
        self._require_issued_tokens = require_issued_tokens
        self._classic = ClassicGateway(
            merchant_id=self._merchant_id,
            secret_key=secret_key,
            seed=seed,
            adversarial=adversarial,
            base_url=lambda: self._served_url,
            closing=lambda: self._closing,
            invoice_lookup=self._paid_invoice,
        )

    def __repr__(self) -> str:
        where = self._base_url or "not started"
        return f"FreedomPayEmulator(merchant_id={self._merchant_id!r}, {where})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """
        Start listening.

        Raises:
            RuntimeError: The emulator is already started, or was closed.
        """
        if self._runner is not None or self._closed:
            raise RuntimeError("FreedomPayEmulator can be started once")
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(_API_PATH, self._api)
        app.router.add_get("/_emulator/", self._admin_index)
        app.router.add_post("/_emulator/invoices", self._admin_invoices)
        app.router.add_get("/_emulator/invoices/{customer}", self._admin_invoice)
        app.router.add_post("/_emulator/cards", self._admin_cards)
        app.router.add_post("/_emulator/faults", self._admin_faults)
        app.router.add_delete("/_emulator/faults", self._admin_clear_faults)
        app.router.add_post("/_emulator/expire", self._admin_expire)
        app.router.add_get("/_emulator/stats", self._admin_stats)
        self._classic.add_routes(app.router)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self._keepalive_timeout,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{shown}:{port}"

    async def close(self) -> None:
        """Stop listening and end pending delays; idempotent."""
        self._closed = True
        if self._closing is not None:
            self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """
        The URL to point a client at, e.g. `http://127.0.0.1:43123`.

        Raises:
            RuntimeError: The emulator is not running.
        """
        if self._base_url is None or self._runner is None:
            raise RuntimeError("FreedomPayEmulator is not running; use start() or async with")
        return self._base_url

    @property
    def _served_url(self) -> str:
        """The base URL for replies, still known while a request finishes during close."""
        return self._base_url or ""

    @property
    def merchant_id(self) -> str:
        """The merchant id the emulator accepts."""
        return self._merchant_id

    @property
    def secret_key(self) -> str:
        """The secret key the emulator verifies signatures with."""
        return self._secret_key

    @property
    def classic(self) -> ClassicGateway:
        """The classic Merchant API: saved cards, payments, refunds, faults and counters."""
        return self._classic

    def _paid_invoice(
        self, invoice_id: int | None, order_id: str | None
    ) -> tuple[int, str, Decimal, str] | None:
        """A paid invoice by id or order id, as the classic API sees a payment."""
        if invoice_id is not None:
            invoice = self._book.by_id(invoice_id)
        else:
            invoice = self._book.by_order(order_id) if order_id is not None else None
        if invoice is None or invoice.status != OK:
            return None
        return invoice.invoice_id, invoice.order_id, invoice.amount, invoice.currency

    @property
    def adversarial(self) -> bool:
        """Whether every pay commits, even on an invoice that is no longer `new`."""
        return self._adversarial

    # -- scripting ---------------------------------------------------------------------------

    def create_invoice(
        self,
        *,
        order_id: str | None = None,
        amount: Decimal = Decimal(100),
        currency: str = "KZT",
        description: str = "Invoice",
        fate: Fate | None = None,
    ) -> str:
        """
        Create a `new` invoice directly, without an init request.

        Args:
            order_id: The merchant's order id; None assigns `order-<invoice id>`.
            amount: The amount.
            currency: The currency code.
            description: The description.
            fate: The invoice's own fate (a scripted card token still wins).

        Returns:
            The customer token that pay needs.
        """
        invoice = self._book.create(
            order_id=order_id, amount=amount, currency=currency, description=description, fate=fate
        )
        return invoice.customer

    def create_invoices(
        self,
        count: int,
        *,
        fate: Fate | None = None,
        amount: Decimal = Decimal(100),
        currency: str = "KZT",
        description: str = "Invoice",
    ) -> list[str]:
        """
        Create *count* `new` invoices directly (fast enough for tens of thousands).

        Args:
            count: How many.
            fate: Their fate (a scripted card token still wins).
            amount: The amount of each.
            currency: The currency code.
            description: The description.

        Returns:
            Their customer tokens, in creation order.

        Raises:
            ValueError: *count* is negative.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an integer >= 0, got {count!r}")
        create = self._book.create
        return [
            create(
                order_id=None, amount=amount, currency=currency, description=description, fate=fate
            ).customer
            for _ in range(count)
        ]

    def script_card(self, card_token: str, fate: Fate) -> None:
        """
        Decide the fate of every later pay made with *card_token*, whatever the invoice.

        Args:
            card_token: The card token.
            fate: Its fate.
        """
        self._cards[card_token] = fate

    def expire(self, customer: str) -> None:
        """
        Let a `new` invoice expire: it becomes `incomplete`. A terminal invoice is left as is.

        Args:
            customer: The invoice's customer token.

        Raises:
            KeyError: No such invoice.
            ValueError: The invoice is `process`, which the state machine cannot expire.
        """
        invoice = self._book.get(customer)
        try:
            self._book.expire(invoice)
        except IllegalTransitionError as exc:
            raise ValueError(str(exc)) from exc

    def inject(
        self,
        fault: Fault,
        *,
        operation: str | None = None,
        times: int = 1,
        customer: str | None = None,
    ) -> None:
        """
        Queue *fault* for the next *times* matching requests.

        Faults strike in the order they were queued; a request takes at most one. A request is
        matched after its signature and fields were checked, so a rejected request never
        consumes a fault. A `stale_status` fault covers `fault.reads` reads per time.

        Args:
            fault: The fault.
            operation: `init`, `pay`, `status`, `info` or `*` (any); None means `pay`, or
                status and info for a `stale_status` fault.
            times: How many requests it strikes.
            customer: Only requests about this invoice (pay, status and info; an init never
                matches); None matches any.

        Raises:
            ValueError: An unknown operation, *times* < 1, or `stale_status` on init or pay.
        """
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be an integer >= 1, got {times!r}")
        if operation is None:
            operations = _READS if fault.kind == "stale_status" else frozenset({"pay"})
        elif operation == "*":
            operations = _READS if fault.kind == "stale_status" else frozenset(OPERATIONS)
        elif operation in OPERATIONS:
            operations = frozenset({operation})
        else:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)} or '*'")
        if fault.kind == "stale_status" and not operations <= _READS:
            raise ValueError("a stale_status fault applies to status and info only")
        remaining = times * fault.reads if fault.kind == "stale_status" else times
        self._faults.append(_QueuedFault(fault, operations, customer, remaining))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """How many fault strikes are still queued."""
        return sum(entry.remaining for entry in self._faults)

    # -- observations ------------------------------------------------------------------------

    def charges(self, customer: str) -> int:
        """
        Return the committed pay attempts on an invoice.

        Args:
            customer: The invoice's customer token.

        Returns:
            The count; more than 1 means the invoice was charged twice.

        Raises:
            KeyError: No such invoice.
        """
        return self._book.get(customer).charges

    def double_charged(self) -> list[str]:
        """
        Return the customer tokens of invoices with more than one committed pay.

        Returns:
            The tokens, in creation order.
        """
        return [invoice.customer for invoice in self._book if invoice.charges > 1]

    def invoice_status(self, customer: str) -> str:
        """
        Return an invoice's status as the server knows it, without counting a read.

        Args:
            customer: The invoice's customer token.

        Returns:
            `new`, `process`, `ok`, `failed` or `incomplete`.

        Raises:
            KeyError: No such invoice.
        """
        return self._book.get(customer).status

    @property
    def stats(self) -> EmulatorStats:
        """A snapshot of the counters."""
        return EmulatorStats(
            requests=self._requests,
            by_operation=dict(self._by_operation),
            in_flight=self._in_flight,
            max_in_flight=self._max_in_flight,
            committed_pays=self._book.committed,
            double_charges=self._book.double_charged_count,
            rejected_signatures=self._rejected,
            faults_applied=self._faults_applied,
            invoices=len(self._book),
            first_request_at=self._first_at,
            last_request_at=self._last_at,
        )

    @property
    def requests(self) -> list[RequestRecord]:
        """The latest API requests (at most 100,000), oldest first, card tokens masked."""
        return list(self._records)

    def max_rate(self, window: float) -> float:
        """
        Return the highest request rate seen in any *window* seconds of the kept requests.

        Args:
            window: The window length in seconds, > 0.

        Returns:
            Requests per second: the most arrivals within one window, divided by *window*.

        Raises:
            ValueError: *window* is not positive.
        """
        if not window > 0:
            raise ValueError(f"window must be > 0, got {window!r}")
        times = [record.at for record in self._records]
        best = 0
        for start, at in enumerate(times):
            end = bisect.bisect_left(times, at + window, lo=start)
            best = max(best, end - start)
        return best / window

    # -- the API -----------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return await self._serve(request.match_info["op"], request)
        finally:
            self._in_flight -= 1

    async def _serve(self, operation: str, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        self._requests += 1
        self._by_operation[operation] += 1
        if self._first_at is None:
            self._first_at = now
        self._last_at = now
        signature = request.headers.get("X-JWS-Signature")
        try:
            fields, payload = await read_fields(request)
        except BadRequestError as exc:
            self._record(operation, [], request, now, signature)
            return _xml_response(error_items(_ERR_REQUEST, f"Invalid request: {exc}"))
        self._record(operation, fields, request, now, signature)
        try:
            self._authenticate(signature, payload, request.path)
            invoice, run = self._plan(operation, _unique(fields))
        except _ReplyError as exc:
            return _xml_response(error_items(exc.code, exc.description))
        return await self._reply(operation, request, invoice, run)

    def _record(
        self,
        operation: str,
        fields: Sequence[tuple[str, str]],
        request: web.Request,
        at: float,
        signature: str | None,
    ) -> None:
        shown = {
            name: _mask_token(value) if name == "card_token" else value for name, value in fields
        }
        self._records.append(
            RequestRecord(
                operation=operation,
                fields=shown,
                content_type=request.content_type,
                at=at,
                jws_header=decode_jws_header(signature),
            )
        )

    def _authenticate(self, signature: str | None, payload: bytes, path: str) -> None:
        if not signature:
            self._rejected += 1
            raise _ReplyError(_ERR_SIGNATURE, "Signature is missing")
        try:
            header = verify_jws_detached(signature, payload, secret_key=self._secret_key)
        except ValueError as exc:
            self._rejected += 1
            raise _ReplyError(_ERR_SIGNATURE, "Invalid signature") from exc
        target = header.get("path", header.get("uri"))
        if target != path or header.get("method", "POST") != "POST":
            self._rejected += 1
            raise _ReplyError(_ERR_SIGNATURE, "Signature is for another endpoint")
        self._check_merchant(header.get("merchant_id"))

    def _check_merchant(self, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise _ReplyError(_ERR_MERCHANT, "Unknown merchant")
        if str(value) != self._merchant_id:
            raise _ReplyError(_ERR_MERCHANT, "Unknown merchant")

    def _plan(
        self, operation: str, fields: Mapping[str, str]
    ) -> tuple[Invoice | None, Callable[[], list[XmlItem]]]:
        """Check a request's fields; return its invoice (if any) and how to process it."""
        if operation == "init":
            return None, self._plan_init(fields)
        if operation == "pay":
            return self._plan_pay(fields)
        return self._plan_read(fields, info=operation == "info")

    def _plan_init(self, fields: Mapping[str, str]) -> Callable[[], list[XmlItem]]:
        _require(fields, _INIT_REQUIRED)
        self._check_merchant(fields["merchant_id"])
        amount = _parse_amount(fields["amount"])
        if fields["invoice_method"] != "qr":
            raise _ReplyError(_ERR_REQUEST, "Invalid request: invoice_method must be qr")
        currency = fields["currency"]
        if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):  # noqa: PLR2004
            raise _ReplyError(_ERR_REQUEST, "Invalid request: currency must be a 3-letter code")

        def run() -> list[XmlItem]:
            invoice = self._book.create(
                order_id=fields["order_id"],
                amount=amount,
                currency=currency,
                description=fields["description"],
                fate=None,
            )
            return [
                ("status", "ok"),
                ("invoice_status", invoice.status),
                ("invoice_id", str(invoice.invoice_id)),
                ("invoice_methods", [("qr", qr_value(self._served_url, invoice.customer))]),
                ("dt", gateway_dt()),
            ]

        return run

    def _plan_pay(
        self, fields: Mapping[str, str]
    ) -> tuple[Invoice | None, Callable[[], list[XmlItem]]]:
        _require(fields, _PAY_REQUIRED)
        card_token = fields["card_token"]
        if self._require_issued_tokens and not self._classic.is_issued(
            fields["user_id"], card_token
        ):
            raise _ReplyError(_ERR_REQUEST, "Invalid request: card_token unknown for this user_id")
        invoice = self._book.by_customer(fields["customer"])

        def run() -> list[XmlItem]:
            if invoice is None:
                return error_items(_ERR_NOT_FOUND, "Invoice not found")
            if invoice.status != NEW:
                if not self._adversarial:
                    return error_items(_ERR_NOT_PAYABLE, "Invoice is not payable")
                self._book.commit(invoice)
                if invoice.card_pan is None:
                    invoice.card_pan = mask_pan(card_token)
                return invoice_items(invoice)
            fate = self._cards.get(card_token) or invoice.fate or self._default_fate
            if not self._book.apply_fate(invoice, fate, card_token):
                return error_items(
                    fate.error_code if fate.error_code is not None else 600,
                    fate.description or "General error",
                )
            return invoice_items(invoice)

        return invoice, run

    def _plan_read(
        self, fields: Mapping[str, str], *, info: bool
    ) -> tuple[Invoice | None, Callable[[], list[XmlItem]]]:
        _require(fields, ("merchant_id",))
        self._check_merchant(fields["merchant_id"])
        keys = [key for key in _LOOKUP_KEYS if key in fields]
        if len(keys) != 1 or not fields[keys[0]]:
            raise _ReplyError(
                _ERR_REQUEST,
                "Invalid request: give exactly one of customer, order_id, invoice_id",
            )
        key = keys[0]
        value = fields[key]
        if key == "customer":
            invoice = self._book.by_customer(value)
        elif key == "order_id":
            invoice = self._book.by_order(value)
        else:
            if not (value.isascii() and value.isdigit()):
                raise _ReplyError(_ERR_REQUEST, "Invalid request: invoice_id must be an integer")
            invoice = self._book.by_id(int(value))

        def run() -> list[XmlItem]:
            if invoice is None:
                return error_items(_ERR_NOT_FOUND, "Invoice not found")
            self._book.read(invoice)
            return invoice_items(invoice, base_url=self._served_url if info else None)

        return invoice, run

    def _take_fault(self, operation: str, customer: str | None) -> Fault | None:
        for index, entry in enumerate(self._faults):
            if operation not in entry.operations:
                continue
            if entry.customer is not None and entry.customer != customer:
                continue
            if entry.fault.kind == "stale_status" and customer is None:
                continue
            entry.remaining -= 1
            if entry.remaining <= 0:
                del self._faults[index]
            self._faults_applied += 1
            return entry.fault
        return None

    async def _reply(
        self,
        operation: str,
        request: web.Request,
        invoice: Invoice | None,
        run: Callable[[], list[XmlItem]],
    ) -> web.StreamResponse:
        customer = invoice.customer if invoice is not None else None
        fault = self._take_fault(operation, customer)
        if fault is None:
            return _xml_response(run())
        _log.debug("fault %s on %s (customer %s)", fault.kind, operation, customer)
        if fault.kind == "stale_status" and invoice is not None:  # matched only with an invoice
            shown = invoice_items(
                invoice,
                shown_status=NEW,
                base_url=self._served_url if operation == "info" else None,
            )
            return _xml_response(shown)
        if fault.kind == "delay" and not fault.after_commit:
            if await self._delay(fault.seconds):
                return self._drop(request)
            return _xml_response(run())
        items = run() if fault.after_commit else error_items(_ERR_INTERNAL, "Internal error")
        if fault.kind == "delay":
            if await self._delay(fault.seconds):
                return self._drop(request)
            return _xml_response(items)
        return self._faulty_response(fault, request, items)

    def _faulty_response(
        self, fault: Fault, request: web.Request, items: Sequence[XmlItem]
    ) -> web.StreamResponse:
        if fault.kind == "http_status":
            return _http_error_response(fault)
        if fault.kind == "error_code":
            code = fault.code if fault.code is not None else _ERR_INTERNAL
            description = "Internal error" if code == _ERR_INTERNAL else f"Error {code}"
            return _xml_response(error_items(code, description))
        if fault.kind == "drop":
            return self._drop(request)
        return _garbage_response(fault, items)

    async def _delay(self, seconds: float) -> bool:
        """Wait *seconds*, or less if the emulator closes; return whether it is closing."""
        closing = self._closing
        if closing is None:  # pragma: no cover - handlers run only after start()
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await closing.wait()
        return closing.is_set()

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        """Close the connection without a reply; aiohttp then drops the response below."""
        transport = request.transport
        if transport is not None:
            transport.close()
        return web.Response(status=500)

    # -- the admin API -----------------------------------------------------------------------

    @staticmethod
    async def _admin_json(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError as exc:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "body must be JSON"}), content_type="application/json"
            ) from exc
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "body must be a JSON object"}),
                content_type="application/json",
            )
        return data

    @staticmethod
    def _fate_or_none(data: Mapping[str, Any]) -> Fate | None:
        raw = data.get("fate")
        return None if raw is None else Fate.from_dict(raw)

    async def _admin_index(self, request: web.Request) -> web.StreamResponse:
        routes = [
            f"{route.method} {route.resource.canonical}"
            for route in request.app.router.routes()
            if route.resource is not None
            and route.resource.canonical.startswith("/_emulator/")
            and route.method != "HEAD"
            and route.resource.canonical != "/_emulator/"
        ]
        return _json_response({"base_url": self.base_url, "routes": routes})

    async def _admin_invoices(self, request: web.Request) -> web.StreamResponse:
        data = await self._admin_json(request)
        try:
            count = _admin_count(data)
            fate = self._fate_or_none(data)
            amount = _parse_amount(str(data.get("amount", "100")))
            currency = _admin_str(data, "currency") or "KZT"
            description = _admin_str(data, "description") or "Invoice"
            order_id = _admin_str(data, "order_id")
        except (ValueError, TypeError) as exc:
            return _json_response({"error": str(exc)}, status=400)
        except _ReplyError as exc:
            return _json_response({"error": exc.description}, status=400)
        if order_id is not None:
            if count != 1:
                return _json_response({"error": "order_id needs count 1"}, status=400)
            customers = [
                self.create_invoice(
                    order_id=order_id,
                    amount=amount,
                    currency=currency,
                    description=description,
                    fate=fate,
                )
            ]
        else:
            customers = self.create_invoices(
                count, fate=fate, amount=amount, currency=currency, description=description
            )
        return _json_response({"customers": customers})

    async def _admin_invoice(self, request: web.Request) -> web.StreamResponse:
        invoice = self._book.by_customer(request.match_info["customer"])
        if invoice is None:
            return _json_response({"error": "no such invoice"}, status=404)
        return _json_response(
            {
                "customer": invoice.customer,
                "order_id": invoice.order_id,
                "invoice_id": invoice.invoice_id,
                "status": invoice.status,
                "charges": invoice.charges,
                "amount": format(invoice.amount, "f"),
                "currency": invoice.currency,
            }
        )

    async def _admin_cards(self, request: web.Request) -> web.StreamResponse:
        data = await self._admin_json(request)
        try:
            card_token = _admin_str(data, "card_token", required=True)
            fate = Fate.from_dict(data.get("fate"))
        except (ValueError, TypeError) as exc:
            return _json_response({"error": str(exc)}, status=400)
        self.script_card(str(card_token), fate)
        return _json_response({"ok": True})

    async def _admin_faults(self, request: web.Request) -> web.StreamResponse:
        data = await self._admin_json(request)
        try:
            raw = data.get("fault")
            if raw is None and "kind" in data:  # the flat form: the fault's keys at top level
                raw = {k: v for k, v in data.items() if k not in _FAULT_TARGET_KEYS}
            fault = Fault.from_dict(raw)
            operation = _admin_str(data, "operation")
            customer = _admin_str(data, "customer")
            self.inject(fault, operation=operation, times=data.get("times", 1), customer=customer)
        except (ValueError, TypeError) as exc:
            return _json_response({"error": str(exc)}, status=400)
        return _json_response({"ok": True, "pending_faults": self.pending_faults})

    async def _admin_clear_faults(self, _request: web.Request) -> web.StreamResponse:
        self.clear_faults()
        return _json_response({"ok": True})

    async def _admin_expire(self, request: web.Request) -> web.StreamResponse:
        data = await self._admin_json(request)
        customer = data.get("customer")
        if not isinstance(customer, str) or self._book.by_customer(customer) is None:
            return _json_response({"error": "no such invoice"}, status=404)
        try:
            self.expire(customer)
        except ValueError as exc:
            return _json_response({"error": str(exc)}, status=409)
        return _json_response({"ok": True, "status": self.invoice_status(customer)})

    async def _admin_stats(self, request: web.Request) -> web.StreamResponse:
        data = self.stats.to_dict()
        data["double_charged"] = self.double_charged()
        data["pending_faults"] = self.pending_faults
        if request.query.get("customers") in {"1", "true", "yes"}:
            data["invoices"] = {
                invoice.customer: {"status": invoice.status, "charges": invoice.charges}
                for invoice in self._book
            }
        return _json_response(data)
