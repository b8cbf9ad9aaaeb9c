"""
The invoice API's aiohttp handler: read a request, let the planner decide, apply a fault, answer.

Nothing here decides an outcome: `_planner` authenticates and plans, `_fault_queue` picks the
fault, `_records` counts. This module only sequences them around the sockets, so that a fault
strikes before or after the commit and a delayed reply ends when the emulator closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from freedompay_async.testing._http import (
    BadRequestError,
    drop,
    garbage_response,
    http_error_response,
    read_fields,
    xml_response,
)
from freedompay_async.testing._planner import ERR_INTERNAL, ERR_REQUEST, ReplyError, unique
from freedompay_async.testing._state import NEW
from freedompay_async.testing._wire import error_items, invoice_items

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from aiohttp import web

    from freedompay_async.testing._fault import Fault
    from freedompay_async.testing._fault_queue import FaultQueue
    from freedompay_async.testing._planner import GatewayPlanner
    from freedompay_async.testing._records import Traffic
    from freedompay_async.testing._state import Invoice
    from freedompay_async.testing._wire import XmlItem

__all__ = ["InvoiceApi"]

_log = logging.getLogger("freedompay_async.testing")


class InvoiceApi:
    """
    The handler behind `POST /v5/merchant/invoice/{init,pay,status,info}`.

    Args:
        planner: Authenticates and plans each request.
        faults: The fault queue.
        traffic: The counters and request log.
        served_url: The base URL replies link to.
        closing: The emulator's closing event (None before start).
        notify: Called whenever a request starts, commits or ends.
    """

    def __init__(
        self,
        *,
        planner: GatewayPlanner,
        faults: FaultQueue,
        traffic: Traffic,
        served_url: Callable[[], str],
        closing: Callable[[], asyncio.Event | None],
        notify: Callable[[], None],
    ) -> None:
        self._planner = planner
        self._faults = faults
        self._traffic = traffic
        self._served_url = served_url
        self._closing = closing
        self._notify = notify

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """
        Answer one invoice API request.

        Args:
            request: The request; its path names the operation.

        Returns:
            The reply, or a dropped connection when a fault says so.
        """
        self._traffic.enter()
        self._notify()
        try:
            return await self._serve(request.match_info["op"], request)
        finally:
            self._traffic.leave()
            self._notify()

    async def _serve(self, operation: str, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        self._traffic.arrived(operation, now)
        signature = request.headers.get("X-JWS-Signature")
        try:
            fields, payload = await read_fields(request)
        except BadRequestError as exc:
            self._record(operation, [], request, now, signature)
            return xml_response(error_items(ERR_REQUEST, f"Invalid request: {exc}"))
        self._record(operation, fields, request, now, signature)
        try:
            self._planner.authenticate(signature, payload, request.path)
            invoice, run = self._planner.plan(operation, unique(fields))
        except ReplyError as exc:
            return xml_response(error_items(exc.code, exc.description))
        return await self._reply(operation, request, invoice, self._committing(run))

    def _record(
        self,
        operation: str,
        fields: Sequence[tuple[str, str]],
        request: web.Request,
        at: float,
        signature: str | None,
    ) -> None:
        self._traffic.record(
            operation, fields, content_type=request.content_type, at=at, signature=signature
        )

    def _committing(self, run: Callable[[], list[XmlItem]]) -> Callable[[], list[XmlItem]]:
        """*run*, then a wake-up for `wait_until`: processing may have changed an invoice."""

        def wrapped() -> list[XmlItem]:
            try:
                return run()
            finally:
                self._notify()

        return wrapped

    async def _reply(
        self,
        operation: str,
        request: web.Request,
        invoice: Invoice | None,
        run: Callable[[], list[XmlItem]],
    ) -> web.StreamResponse:
        customer = invoice.customer if invoice is not None else None
        fault = self._faults.take(operation, customer)
        if fault is None:
            return xml_response(run())
        _log.debug("fault %s on %s (customer %s)", fault.kind, operation, customer)
        if fault.kind == "stale_status" and invoice is not None:  # matched only with an invoice
            shown = invoice_items(
                invoice,
                shown_status=NEW,
                base_url=self._served_url() if operation == "info" else None,
            )
            return xml_response(shown)
        if fault.kind == "delay" and not fault.after_commit:
            if await self._delay(fault.seconds):
                return drop(request)
            return xml_response(run())
        items = run() if fault.after_commit else error_items(ERR_INTERNAL, "Internal error")
        if fault.kind == "delay":
            if await self._delay(fault.seconds):
                return drop(request)
            return xml_response(items)
        return self._faulty_response(fault, request, items)

    def _faulty_response(
        self, fault: Fault, request: web.Request, items: Sequence[XmlItem]
    ) -> web.StreamResponse:
        if fault.kind == "http_status":
            return http_error_response(fault)
        if fault.kind == "error_code":
            code = fault.code if fault.code is not None else ERR_INTERNAL
            description = "Internal error" if code == ERR_INTERNAL else f"Error {code}"
            return xml_response(error_items(code, description))
        if fault.kind == "drop":
            return drop(request)
        return garbage_response(fault, items)

    async def _delay(self, seconds: float) -> bool:
        """Wait *seconds*, or less if the emulator closes; return whether it is closing."""
        closing = self._closing()
        if closing is None:  # pragma: no cover - handlers run only after start()
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await closing.wait()
        return closing.is_set()
