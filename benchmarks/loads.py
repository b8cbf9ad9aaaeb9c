"""
The four ways of paying one invoice that the benchmarks compare, and the closed-loop driver.

Every row does the same work for one request: build the three-field multipart body, sign its JWS
payload (HS512, detached) into `X-JWS-Signature`, POST it over a pooled keep-alive connection,
read the XML reply and check `status=ok`. They differ only in how:

1. `naive`: what a user writes by hand with aiohttp: `aiohttp.FormData` for the body,
   `response.text()` and a default `xmltodict.parse`, the dict is the result.
2. `raw`: the best hand-written aiohttp: the multipart body pre-serialised into one `bytes`,
   `response.read()`, one tuned `xmltodict.parse`, an attrs model with typed fields.
3. `sdk`: `FreedomPayClient.pay_invoice` (default retry policy, guard, gate) from worker tasks.
4. `batch`: `FreedomPayClient.pay_invoices` over the same requests.

Rows 1-3 are driven by `concurrency` worker tasks that take request numbers from one shared
iterator; row 4 is driven by the SDK's own workers. The connection pool holds
`min(concurrency, 100)` connections in every row (aiohttp's default limit; the SDK's
`max_concurrency`) unless a row is given its own `limit` (the latency-bound scenario sizes the
pool to its in-flight count).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Self
from xml.parsers import expat

import aiohttp
import attrs
import xmltodict

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

MERCHANT_ID = "548816"
SECRET_KEY = "bench-secret-key-5f0e2c"  # noqa: S105 - a benchmark's made-up key
USER_ID = "No65GFR755789T25642588"
CARD_TOKEN = "ef741cfc-f85e-41a0-84e6-2ba964912182"  # noqa: S105 - the documented example
PAY_PATH = "/v5/merchant/invoice/pay"
POOL_CAP = 100

ROWS = ("naive", "raw", "sdk", "batch")
ROW_TITLES = {
    "naive": "1. naive aiohttp (FormData + xmltodict)",
    "raw": "2. best raw aiohttp (bytes + xmltodict + attrs)",
    "sdk": "3. SDK pay_invoice (worker tasks)",
    "batch": "4. SDK pay_invoices",
}


def customer_token(tag: str, number: int) -> str:
    """Return a distinct 32-character customer token shaped like the gateway's."""
    return f"kz{tag}{number:026d}"


def pool_size(concurrency: int) -> int:
    """Return the connection pool size used for a concurrency level."""
    return min(concurrency, POOL_CAP)


# -- hand-written signing, shared by rows 1 and 2 -------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_JWS_HEADER_B64 = _b64url(
    json.dumps(
        {
            "path": PAY_PATH,
            "merchant_id": int(MERCHANT_ID),
            "method": "POST",
            "params": "",
            "alg": "HS512",
        },
        separators=(",", ":"),
    ).encode()
)
_SECRET = SECRET_KEY.encode()


def sign(payload: bytes) -> str:
    """Return the detached HS512 JWS of *payload* (the header is computed once)."""
    signing_input = f"{_JWS_HEADER_B64}.{_b64url(payload)}".encode("ascii")
    digest = hmac.new(_SECRET, signing_input, hashlib.sha512).digest()
    return f"{_JWS_HEADER_B64}..{_b64url(digest)}"


class _SessionRow:
    """A hand-written row's lifecycle: one aiohttp session with a pool sized for the level."""

    def __init__(self, base_url: str, concurrency: int, *, limit: int | None = None) -> None:
        self._url = base_url + PAY_PATH
        self._limit = pool_size(concurrency) if limit is None else limit
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self._limit))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()


# -- row 1: naive ------------------------------------------------------------------------------


class NaiveRow(_SessionRow):
    """`aiohttp.FormData` multipart and a default `xmltodict.parse`, as a user writes it."""

    async def pay(self, customer: str) -> dict[str, Any]:
        """Pay one invoice; return the reply's fields as xmltodict built them."""
        assert self._session is not None
        fields = {"customer": customer, "user_id": USER_ID, "card_token": CARD_TOKEN}
        payload = json.dumps(fields, separators=(",", ":")).encode()
        form = aiohttp.FormData(default_to_multipart=True)
        for name, value in fields.items():
            form.add_field(name, value)
        headers = {"Accept": "application/xml", "X-JWS-Signature": sign(payload)}
        async with self._session.post(self._url, data=form, headers=headers) as response:
            text = await response.text()
            status = response.status
        root = xmltodict.parse(text)["root"]
        if status != 200 or root["status"] != "ok":
            raise RuntimeError(f"pay refused: HTTP {status}")
        return root


# -- row 2: best raw ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True, slots=True)
class Payment:
    """The hand-written model of row 2."""

    invoice_status: str
    order_id: str | None
    invoice_id: int | None
    customer: str
    amount: Decimal | None
    currency: str | None
    card_pan: str | None
    dt: datetime | None


_BOUNDARY = "bench-raw-2f6a9c41d3"
_CONTENT_TYPE = f"multipart/form-data; boundary={_BOUNDARY}"
_PART = f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="'
_TAIL = (
    f'{_PART}user_id"\r\n\r\n{USER_ID}\r\n'
    f'{_PART}card_token"\r\n\r\n{CARD_TOKEN}\r\n'
    f"--{_BOUNDARY}--\r\n"
)


class RawRow(_SessionRow):
    """One pre-serialised `bytes` body, `read()`, one tuned parse, an attrs model."""

    async def pay(self, customer: str) -> Payment:
        """Pay one invoice; return the typed model."""
        assert self._session is not None
        payload = (
            f'{{"customer":"{customer}","user_id":"{USER_ID}","card_token":"{CARD_TOKEN}"}}'
        ).encode()
        body = f'{_PART}customer"\r\n\r\n{customer}\r\n{_TAIL}'.encode()
        headers = {
            "Content-Type": _CONTENT_TYPE,
            "Accept": "application/xml",
            "X-JWS-Signature": sign(payload),
        }
        async with self._session.post(self._url, data=body, headers=headers) as response:
            raw = await response.read()
            status = response.status
        return decode_raw(raw, status, customer)


def decode_raw(raw: bytes, status: int, customer: str) -> Payment:
    """Row 2's decoder: one tuned parse and explicit conversions into the attrs model."""
    root = xmltodict.parse(raw, xml_attribs=False, dict_constructor=dict, disable_entities=True)[
        "root"
    ]
    if status != 200 or root.get("status") != "ok":
        raise RuntimeError(f"pay refused: HTTP {status}")
    invoice_id = root.get("invoice_id")
    amount = root.get("amount")
    dt = root.get("dt")
    return Payment(
        invoice_status=root["invoice_status"],
        order_id=root.get("order_id"),
        invoice_id=None if invoice_id is None else int(invoice_id),
        customer=customer,
        amount=None if amount is None else Decimal(amount),
        currency=root.get("currency"),
        card_pan=root.get("card_pan"),
        dt=None if dt is None else datetime.fromisoformat(dt),
    )


def parse_flat(raw: bytes) -> dict[str, str | None]:
    """
    Parse a flat `<root>` reply with expat directly: a reference for what a parser swap saves.

    It keeps only the root's leaf children, as `{tag: text or None}`; it is not a general parser
    and is not used by any row.
    """
    parser = expat.ParserCreate()
    parser.buffer_text = True
    fields: dict[str, str | None] = {}
    text: list[str] = []
    depth = 0

    def start(_name: str, _attributes: object) -> None:
        nonlocal depth
        depth += 1
        text.clear()

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        if depth == 1:
            fields[name] = "".join(text).strip() or None

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    parser.Parse(raw, True)  # noqa: FBT003 - expat's positional `isfinal`
    return fields


# -- rows 3 and 4: the SDK ---------------------------------------------------------------------


class SdkRow:
    """`FreedomPayClient.pay_invoice` with the default policies, from worker tasks."""

    def __init__(
        self, base_url: str, concurrency: int, *, limit: int | None = None, **options: Any
    ) -> None:
        from freedompay_async import FreedomPayClient

        self.client = FreedomPayClient(
            MERCHANT_ID,
            SECRET_KEY,
            base_url=base_url,
            max_concurrency=pool_size(concurrency) if limit is None else limit,
            **options,
        )

    async def __aenter__(self) -> Self:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def pay(self, customer: str) -> object:
        """Pay one invoice through the SDK."""
        payment = await self.client.pay_invoice(
            customer=customer, user_id=USER_ID, card_token=CARD_TOKEN
        )
        if payment.invoice_status.value != "ok":
            raise RuntimeError(f"unexpected invoice_status {payment.invoice_status_raw}")
        return payment


class Tally:
    """
    Latencies and failures of one phase.

    Args:
        record: Keep each request's latency and start time; the memory benchmark turns this off
            so that its own lists do not show up as the SDK's memory.
    """

    def __init__(self, *, record: bool = True) -> None:
        self.record = record
        self.latencies: list[float] = []
        self.starts: list[float] = []
        self.errors = 0
        self.first_error: str | None = None

    def fail(self, error: BaseException | str) -> None:
        """Count one failed request, keeping the first description."""
        self.errors += 1
        if self.first_error is None:
            self.first_error = error if isinstance(error, str) else repr(error)


async def drive(
    pay: Callable[[str], Awaitable[object]],
    *,
    tag: str,
    warmup: int,
    count: int,
    concurrency: int,
    tally: Tally,
    on_mark: Callable[[], object],
) -> None:
    """
    Run `warmup + count` pays from *concurrency* worker tasks sharing one iterator of numbers.

    The workers run without a pause from warm-up into the measured phase: *on_mark* is called
    when the first measured number is taken, and only measured requests are recorded, so the
    measurement sees a steady state, never the burst of all workers starting at once.
    """
    numbers = iter(range(warmup + count))
    latencies = tally.latencies
    starts = tally.starts
    clock = time.perf_counter

    async def worker() -> None:
        for number in numbers:  # bounded: the iterator holds exactly warmup + count numbers
            if number == warmup:
                on_mark()
            customer = customer_token(tag, number)
            began = clock()
            try:
                await pay(customer)
            except Exception as exc:
                tally.fail(exc)
                continue
            if number >= warmup:
                latencies.append(clock() - began)
                starts.append(began)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def drive_batch(
    row: SdkRow,
    *,
    tag: str,
    warmup: int,
    count: int,
    concurrency: int,
    tally: Tally,
    on_mark: Callable[[], object] | None = None,
    on_outcome: Callable[[int], object] | None = None,
) -> None:
    """
    Run `warmup + count` pays through one `pay_invoices`; latency is each outcome's `elapsed`.

    *on_mark* is called when the batch's feeder takes the first measured request; only measured
    requests (`outcome.request.key >= warmup`) are recorded.
    """
    from contextlib import aclosing

    from freedompay_async import PayRequest

    def requests() -> Iterator[PayRequest]:
        for number in range(warmup + count):
            if number == warmup and on_mark is not None:
                on_mark()
            yield PayRequest(
                customer=customer_token(tag, number),
                user_id=USER_ID,
                card_token=CARD_TOKEN,
                key=number,
            )

    latencies = tally.latencies
    starts = tally.starts
    clock = time.perf_counter
    done = 0
    async with aclosing(row.client.pay_invoices(requests(), concurrency=concurrency)) as outcomes:
        async for outcome in outcomes:
            done += 1
            if outcome.state != "paid":
                tally.fail(f"{outcome.state}: {outcome.error!r}")
            elif tally.record and outcome.request.key >= warmup:
                latencies.append(outcome.elapsed)
                starts.append(clock() - outcome.elapsed)
            if on_outcome is not None:
                on_outcome(done)
