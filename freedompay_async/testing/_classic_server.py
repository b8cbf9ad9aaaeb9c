"""
`ClassicGateway`: the emulator's classic Merchant API, beside its invoice API.

It serves saved cards, get_status3, revoke, cancel and do_capture from the same aiohttp
application as the invoice API.

Every request's `pg_sig` is recomputed (script name from the path) and a bad or missing one is
answered with error 100 and counted; an unknown merchant gets the unsigned 9998 error. Faults are
the invoice API's `Fault`s, queued per operation (`card_add`, `card_list`, `card_remove`,
`payment_status`, `refund`, `cancel`, `capture`) and optionally per payment id. A fault before
commit replaces the processing; after commit (e.g. `Fault.drop()` on `refund`: the refund is
committed, then the connection is dropped) it replaces the reply. A `stale_status` fault makes
`payment_status` show the payment as it was before its latest write (status lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Final

import attrs
from aiohttp import web

from freedompay_async.testing._classic_plans import (
    find_payment,
    plan_card,
    plan_write,
    require_unique,
    required,
)
from freedompay_async.testing._classic_state import (
    CardStore,
    ClassicRefusalError,
    Payment,
    PaymentBook,
)
from freedompay_async.testing._classic_wire import (
    BadFormError,
    ClassicItem,
    ClassicRecord,
    error_reply,
    fault_response,
    mask_field,
    read_form,
    script_of,
    signed_reply,
    status_items,
    verify_request,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from freedompay_async.testing._scenario import Fault

__all__ = ["CLASSIC_OPERATIONS", "ClassicGateway"]

CLASSIC_OPERATIONS: Final = (
    "card_add",
    "card_list",
    "card_remove",
    "payment_status",
    "refund",
    "cancel",
    "capture",
)
_BY_SCRIPT: Final = {
    "add": "card_add",
    "add2": "card_add",
    "list": "card_list",
    "remove": "card_remove",
    "get_status3.php": "payment_status",
    "revoke.php": "refund",
    "cancel.php": "cancel",
    "do_capture.php": "capture",
}
_ERR_SIGNATURE: Final = 100
_ERR_REQUEST: Final = 200
_ERR_INTERNAL: Final = 1000
_ERR_MERCHANT: Final = 9998


@attrs.define
class _Queued:
    fault: Fault
    operations: frozenset[str]
    payment_id: int | None
    remaining: int


class ClassicGateway:
    """
    The classic Merchant API of `FreedomPayEmulator` (reach it as `emulator.classic`).

    Args:
        merchant_id: The merchant id accepted.
        secret_key: The key requests are verified and replies signed with.
        seed: Seed for card tokens.
        adversarial: A second capture of a captured hold commits again (exposes double capture).
        base_url: Returns the emulator's base URL (for card-entry redirect URLs).
        closing: Returns the event set when the emulator closes (ends pending delays).
        invoice_lookup: Finds a paid invoice, so its invoice id works as a payment id.
    """

    def __init__(
        self,
        *,
        merchant_id: str,
        secret_key: str,
        seed: int | None,
        adversarial: bool,
        base_url: Callable[[], str],
        closing: Callable[[], asyncio.Event | None],
        invoice_lookup: Callable[[int | None, str | None], tuple[int, str, Decimal, str] | None],
    ) -> None:
        self._merchant_id = merchant_id
        self._secret_key = secret_key
        self._base_url = base_url
        self._closing = closing
        self._lookup = invoice_lookup
        self.cards = CardStore(random.Random(seed))  # noqa: S311 - test tokens, not secrets
        self.payments = PaymentBook(adversarial=adversarial)
        self._faults: list[_Queued] = []
        self._records: list[ClassicRecord] = []
        self.rejected_signatures = 0
        #: The tag `get_status3` writes the cancelled amount under: the docs' `pg_revoke_amount`
        #: or the mobile SDK's `pg_revoked_amount`.
        self.revoked_amount_tag = "pg_revoke_amount"

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add the classic endpoints and their admin helpers to the emulator's router."""
        router.add_post("/v1/merchant/{mid}/cardstorage/{script:add|add2|list|remove}", self._serve)
        router.add_post(r"/{script:(get_status3|revoke|cancel|do_capture)\.php}", self._serve)
        router.add_get("/v1/merchant/{mid}/cardstorage/view", self._view)
        router.add_post("/_emulator/cardstorage/complete", self._admin_complete)

    # -- scripting and observation ------------------------------------------------------------

    def create_payment(
        self,
        amount: Decimal = Decimal(100),
        *,
        currency: str = "KZT",
        order_id: str | None = None,
        hold: bool = False,
    ) -> int:
        """
        Record a successful payment: captured at once, or a *hold* awaiting capture or cancel.

        Returns:
            Its payment id.
        """
        return self.payments.add(
            amount=amount, currency=currency, order_id=order_id, hold=hold
        ).payment_id

    def complete_card_entry(self, payment_id: int) -> str:
        """
        Complete the card entry a `cardstorage/add` opened, as the user would on its page.

        Returns:
            The token issued to the entry's user.

        Raises:
            KeyError: No pending entry has this payment id.
        """
        return self.cards.complete(payment_id)[1]

    def save_card(self, user_id: str) -> str:
        """Save a card for *user_id* directly and return its token."""
        return self.cards.issue(user_id)

    def is_issued(self, user_id: str, card_token: str) -> bool:
        """Whether *card_token* is a live saved card of *user_id*."""
        return self.cards.issued(user_id, card_token)

    def _known(self, payment_id: int) -> Payment:
        payment = self.payments.get(payment_id)
        if payment is None:
            raise KeyError(f"no payment {payment_id}")
        return payment

    def refunds(self, payment_id: int) -> list[Decimal]:
        """The amounts of the committed refunds of a payment, in order."""
        return [row.amount for row in self._known(payment_id).refunds]

    def captures(self, payment_id: int) -> int:
        """How many captures of a payment committed (more than 1: captured twice)."""
        return self._known(payment_id).captures

    def cancels(self, payment_id: int) -> int:
        """How many cancels of a payment committed."""
        return self._known(payment_id).cancels

    def payment_state(self, payment_id: int) -> str:
        """A payment's `pg_payment_status` as the server knows it (no read is counted)."""
        return self._known(payment_id).status

    def double_captured(self) -> list[int]:
        """Payment ids with more than one committed capture."""
        return [p.payment_id for p in self.payments if p.captures > 1]

    @property
    def requests(self) -> list[ClassicRecord]:
        """Every classic request received, oldest first."""
        return list(self._records)

    def inject(
        self,
        fault: Fault,
        *,
        operation: str | None = None,
        times: int = 1,
        payment_id: int | None = None,
    ) -> None:
        """
        Queue *fault* for the next *times* matching classic requests.

        Args:
            fault: The fault.
            operation: One of `CLASSIC_OPERATIONS` or `*`; None means `refund`, or
                `payment_status` for a `stale_status` fault.
            times: How many requests it strikes (a `stale_status` fault: times its reads).
            payment_id: Only requests about this payment.

        Raises:
            ValueError: An unknown operation, *times* < 1, or `stale_status` on a write.
        """
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be an integer >= 1, got {times!r}")
        stale = fault.kind == "stale_status"
        if operation is None:
            operations = frozenset({"payment_status" if stale else "refund"})
        elif operation == "*":
            operations = frozenset({"payment_status"} if stale else CLASSIC_OPERATIONS)
        elif operation in CLASSIC_OPERATIONS:
            operations = frozenset({operation})
        else:
            raise ValueError(f"operation must be one of {', '.join(CLASSIC_OPERATIONS)} or '*'")
        if stale and operations != {"payment_status"}:
            raise ValueError("a stale_status fault applies to payment_status only")
        remaining = times * fault.reads if stale else times
        self._faults.append(_Queued(fault, operations, payment_id, remaining))

    def clear_faults(self) -> None:
        """Drop every queued classic fault."""
        self._faults.clear()

    # -- serving ------------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        script = script_of(request.path)
        operation = _BY_SCRIPT[script]
        try:
            fields = await read_form(request)
        except BadFormError as exc:
            return error_reply(script, _ERR_REQUEST, f"Invalid request: {exc}", self._secret_key)
        valid = verify_request(script, fields, self._secret_key)
        shown = tuple((n, mask_field(n, v)) for n, v in fields if n != "pg_sig")
        self._records.append(
            ClassicRecord(
                operation=operation,
                path=request.path,
                fields=shown,
                signature_valid=valid,
                at=time.monotonic(),
            )
        )
        values = dict(fields)
        mids = {values.get("pg_merchant_id"), request.match_info.get("mid", self._merchant_id)}
        if mids != {self._merchant_id}:
            return error_reply(script, _ERR_MERCHANT, "Unknown merchant", self._secret_key)
        if not valid:
            self.rejected_signatures += 1
            return error_reply(script, _ERR_SIGNATURE, "Invalid signature", self._secret_key)
        try:
            require_unique(fields)
            required(values, "pg_salt")
            payment, run = self._plan(operation, values)
        except ClassicRefusalError as exc:
            return error_reply(script, exc.code, exc.description, self._secret_key)
        return await self._reply(operation, script, request, payment, run)

    def _payment(self, values: Mapping[str, str]) -> Payment:
        return find_payment(values, payments=self.payments, lookup=self._lookup)

    def _plan(
        self, operation: str, values: Mapping[str, str]
    ) -> tuple[Payment | None, Callable[[], list[ClassicItem]]]:
        """Check the fields; return the payment concerned and how to process the request."""
        if operation.startswith("card_"):
            plan = plan_card(
                operation,
                values,
                cards=self.cards,
                payments=self.payments,
                merchant_id=self._merchant_id,
                base_url=self._base_url(),
            )
            return None, plan
        payment = self._payment(values)
        if operation == "payment_status":
            return payment, lambda: self._status(payment)
        return payment, plan_write(
            operation, values, payment, payments=self.payments, remember=self._remember
        )

    def _status(self, payment: Payment) -> list[ClassicItem]:
        return status_items(payment, revoked_amount_tag=self.revoked_amount_tag)

    def _remember(self, payment: Payment) -> None:
        """Keep the status a lagging read shows: the payment before this write."""
        payment.previous = list(self._status(payment))

    def _take_fault(self, operation: str, payment: Payment | None) -> Fault | None:
        payment_id = payment.payment_id if payment is not None else None
        for index, entry in enumerate(self._faults):
            if operation not in entry.operations:
                continue
            if entry.payment_id is not None and entry.payment_id != payment_id:
                continue
            entry.remaining -= 1
            if entry.remaining <= 0:
                del self._faults[index]
            return entry.fault
        return None

    def _run(self, script: str, run: Callable[[], list[ClassicItem]]) -> web.Response:
        try:
            return signed_reply(script, run(), self._secret_key)
        except ClassicRefusalError as exc:
            return error_reply(script, exc.code, exc.description, self._secret_key)

    async def _reply(
        self,
        operation: str,
        script: str,
        request: web.Request,
        payment: Payment | None,
        run: Callable[[], list[ClassicItem]],
    ) -> web.StreamResponse:
        fault = self._take_fault(operation, payment)
        if fault is None:
            return self._run(script, run)
        if fault.kind == "stale_status" and payment is not None:
            shown = payment.previous if payment.previous is not None else self._status(payment)
            return signed_reply(script, shown, self._secret_key)
        if fault.kind == "delay":
            if fault.after_commit:
                response = self._run(script, run)
                await self._delay(fault.seconds)
                return response
            await self._delay(fault.seconds)
            return self._run(script, run)
        if fault.after_commit:
            self._run(script, run)
        return fault_response(fault, script, request, self._secret_key)

    async def _delay(self, seconds: float) -> None:
        closing = self._closing()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                if closing is None:  # pragma: no cover - handlers run only after start()
                    await asyncio.sleep(seconds)
                else:
                    await closing.wait()

    # -- the card-entry page and its admin helper ---------------------------------------------

    async def _view(self, request: web.Request) -> web.StreamResponse:
        payment_id = request.query.get("pg_payment_id", "")
        return web.Response(
            text=f"<html><body>Card entry for payment {payment_id}</body></html>",
            content_type="text/html",
        )

    async def _admin_complete(self, request: web.Request) -> web.StreamResponse:
        try:
            data = await request.json()
            payment_id = data["payment_id"]
            user_id, token = self.cards.complete(_admin_payment_id(payment_id))
        except (ValueError, TypeError, KeyError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"user_id": user_id, "card_token": token})


def _admin_payment_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("payment_id must be an integer")
    return value
