"""
`FreedomPayEmulator`: the invoice API of `wire-contract.md`, served by aiohttp.web on loopback.

It is a second implementation of the contract, written from the contract and sharing only
`freedompay_async.signing` with the client, so one misreading cannot pass on both sides of the
wire. It verifies the detached JWS of every request, keeps each invoice in the state machine of
`_state`, counts the pay attempts it commits, and lets a test script what happens: the fate of a
payment (per invoice, per card token, or by default) and faults injected into the next matching
requests.

This module holds its lifecycle and wiring. The aiohttp glue is `_invoice_api` (the request
loop, faults applied to replies) and `_http` (bodies in, responses out); the decisions live apart
and hold no aiohttp: `_planner` (authentication, invoice rules, error codes), `_fault_queue`
(which fault strikes which request) and `_records` (what was seen). `_controls` holds the public
scripting, observation and waiting methods, `_admin` the JSON admin API under `/_emulator/` (no
signature), which drives the same controls from another process.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, Self

from aiohttp import web

from freedompay_async.testing._admin import AdminApi
from freedompay_async.testing._classic_server import ClassicGateway
from freedompay_async.testing._controls import EmulatorControls
from freedompay_async.testing._fault_queue import FaultQueue
from freedompay_async.testing._http import MAX_BODY_BYTES
from freedompay_async.testing._invoice_api import InvoiceApi
from freedompay_async.testing._planner import GatewayPlanner
from freedompay_async.testing._records import EmulatorStats, RequestRecord, Traffic
from freedompay_async.testing._scenario import Fate
from freedompay_async.testing._state import OK, InvoiceBook

if TYPE_CHECKING:
    from decimal import Decimal
    from types import TracebackType

__all__ = ["EmulatorStats", "FreedomPayEmulator", "RequestRecord"]

_API_PATH: Final = "/v5/merchant/invoice/{op:init|pay|status|info}"
_SHUTDOWN_TIMEOUT: Final = 1.0


class FreedomPayEmulator(EmulatorControls):
    """
    An in-process Freedom Pay invoice gateway for tests, on 127.0.0.1 and a free port.

    It serves `POST /v5/merchant/invoice/{init,pay,status,info}` with multipart or JSON bodies,
    verifies every request's `X-JWS-Signature` against `secret_key`, and answers in XML. Each pay
    ends according to a `Fate`: the card token's (`script_card`), else the invoice's own (given
    at creation), else `default_fate`. A pay on an invoice that is no longer `new` is refused
    with error 350 and commits nothing, except in *adversarial* mode, where every pay commits
    again so that `double_charged()` exposes a client that paid twice. Faults (`inject`) disturb
    the next matching requests. A test waits on it with `wait_until` and `wait_idle`, not sleeps.

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
        self._faults = FaultQueue()
        self._traffic = Traffic()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._closing: asyncio.Event | None = None
        self._closed = False
        self._classic = ClassicGateway(
            merchant_id=self._merchant_id,
            secret_key=secret_key,
            seed=seed,
            adversarial=adversarial,
            base_url=lambda: self._served_url,
            closing=lambda: self._closing,
            invoice_lookup=self._paid_invoice,
        )
        self._planner = GatewayPlanner(
            merchant_id=self._merchant_id,
            secret_key=secret_key,
            book=self._book,
            cards=self._cards,
            default_fate=self._default_fate,
            adversarial=adversarial,
            is_issued=self._classic.is_issued if require_issued_tokens else None,
            base_url=lambda: self._served_url,
        )
        self._api = InvoiceApi(
            planner=self._planner,
            faults=self._faults,
            traffic=self._traffic,
            served_url=lambda: self._served_url,
            closing=lambda: self._closing,
            notify=self._notify,
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
        app.router.add_post(_API_PATH, self._api.handle)
        AdminApi(self, self._book).add_routes(app.router)
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
