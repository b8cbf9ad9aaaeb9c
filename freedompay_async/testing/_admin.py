"""
The emulator's admin API under `/_emulator/`: JSON, no signature, not counted in the stats.

Every route drives a public control of `FreedomPayEmulator`, so another process can script
invoices, card fates and faults, and read the counters.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from freedompay_async.testing._http import json_response
from freedompay_async.testing._planner import ReplyError, parse_amount
from freedompay_async.testing._scenario import Fate, Fault

if TYPE_CHECKING:
    from collections.abc import Mapping

    from freedompay_async.testing._emulator import FreedomPayEmulator
    from freedompay_async.testing._state import InvoiceBook

__all__ = ["AdminApi"]

_MAX_ADMIN_COUNT: Final = 1_000_000
_FAULT_TARGET_KEYS: Final = frozenset({"operation", "times", "customer"})


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


class AdminApi:
    """The admin routes of one emulator."""

    def __init__(self, emulator: FreedomPayEmulator, book: InvoiceBook) -> None:
        self._emulator = emulator
        self._book = book

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add the admin routes to *router*."""
        router.add_get("/_emulator/", self._admin_index)
        router.add_post("/_emulator/invoices", self._admin_invoices)
        router.add_get("/_emulator/invoices/{customer}", self._admin_invoice)
        router.add_post("/_emulator/cards", self._admin_cards)
        router.add_post("/_emulator/faults", self._admin_faults)
        router.add_delete("/_emulator/faults", self._admin_clear_faults)
        router.add_post("/_emulator/expire", self._admin_expire)
        router.add_get("/_emulator/stats", self._admin_stats)

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
        return json_response({"base_url": self._emulator.base_url, "routes": routes})

    async def _admin_invoices(self, request: web.Request) -> web.StreamResponse:
        data = await self._admin_json(request)
        try:
            count = _admin_count(data)
            fate = self._fate_or_none(data)
            amount = parse_amount(str(data.get("amount", "100")))
            currency = _admin_str(data, "currency") or "KZT"
            description = _admin_str(data, "description") or "Invoice"
            order_id = _admin_str(data, "order_id")
        except (ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        except ReplyError as exc:
            return json_response({"error": exc.description}, status=400)
        if order_id is not None:
            if count != 1:
                return json_response({"error": "order_id needs count 1"}, status=400)
            customers = [
                self._emulator.create_invoice(
                    order_id=order_id,
                    amount=amount,
                    currency=currency,
                    description=description,
                    fate=fate,
                )
            ]
        else:
            customers = self._emulator.create_invoices(
                count, fate=fate, amount=amount, currency=currency, description=description
            )
        return json_response({"customers": customers})

    async def _admin_invoice(self, request: web.Request) -> web.StreamResponse:
        invoice = self._book.by_customer(request.match_info["customer"])
        if invoice is None:
            return json_response({"error": "no such invoice"}, status=404)
        return json_response(
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
            return json_response({"error": str(exc)}, status=400)
        self._emulator.script_card(str(card_token), fate)
        return json_response({"ok": True})

    async def _admin_faults(self, request: web.Request) -> web.StreamResponse:
        data = await self._admin_json(request)
        try:
            raw = data.get("fault")
            if raw is None and "kind" in data:  # the flat form: the fault's keys at top level
                raw = {k: v for k, v in data.items() if k not in _FAULT_TARGET_KEYS}
            fault = Fault.from_dict(raw)
            operation = _admin_str(data, "operation")
            customer = _admin_str(data, "customer")
            self._emulator.inject(
                fault, operation=operation, times=data.get("times", 1), customer=customer
            )
        except (ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        return json_response({"ok": True, "pending_faults": self._emulator.pending_faults})

    async def _admin_clear_faults(self, _request: web.Request) -> web.StreamResponse:
        self._emulator.clear_faults()
        return json_response({"ok": True})

    async def _admin_expire(self, request: web.Request) -> web.StreamResponse:
        data = await self._admin_json(request)
        customer = data.get("customer")
        if not isinstance(customer, str) or self._book.by_customer(customer) is None:
            return json_response({"error": "no such invoice"}, status=404)
        try:
            self._emulator.expire(customer)
        except ValueError as exc:
            return json_response({"error": str(exc)}, status=409)
        return json_response({"ok": True, "status": self._emulator.invoice_status(customer)})

    async def _admin_stats(self, request: web.Request) -> web.StreamResponse:
        data = self._emulator.stats.to_dict()
        data["double_charged"] = self._emulator.double_charged()
        data["pending_faults"] = self._emulator.pending_faults
        if request.query.get("customers") in {"1", "true", "yes"}:
            data["invoices"] = {
                invoice.customer: {"status": invoice.status, "charges": invoice.charges}
                for invoice in self._book
            }
        return json_response(data)
