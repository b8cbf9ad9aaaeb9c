"""The emulator, driven over loopback with hand-built requests (not the SDK client)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import xml.etree.ElementTree as ET
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from freedompay_async.signing import jws_detached, jws_payload
from freedompay_async.testing import (
    EmulatorStats,
    Fate,
    Fault,
    FreedomPayEmulator,
    RequestRecord,
    VirtualClock,
)
from freedompay_async.testing._state import (
    FAILED,
    INCOMPLETE,
    NEW,
    OK,
    PROCESS,
    TRANSITIONS,
    IllegalTransitionError,
    InvoiceBook,
)

MERCHANT = "123456"
SECRET = "emulator-secret-key"
DEFAULT_CARD = "card-0001-abcd"
DT_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:00$")
Fields = list[tuple[str, str]]


def multipart(fields: Fields) -> tuple[bytes, str]:
    """Build a multipart/form-data body by hand, one part per field."""
    boundary = "emulator-test-boundary-3b9f"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def parse(body: bytes) -> dict[str, str]:
    """Flatten a `<root>` reply into {tag: text}, nested tags as `parent/child`."""
    root = ET.fromstring(body)  # noqa: S314 - the emulator's own replies
    out: dict[str, str] = {}
    for child in root:
        if len(child):
            for sub in child:
                out[f"{child.tag}/{sub.tag}"] = sub.text or ""
        else:
            out[child.tag] = child.text or ""
    return out


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def xml(self) -> dict[str, str]:
        return parse(self.body)


class Api:
    """Signs and sends requests the way the wire contract describes."""

    def __init__(self, session: aiohttp.ClientSession, emu: FreedomPayEmulator) -> None:
        self.session = session
        self.emu = emu

    async def call(
        self,
        op: str,
        fields: Fields,
        *,
        body_format: str = "multipart",
        secret: str = SECRET,
        sign_path: str | None = None,
        merchant_id: str = MERCHANT,
        signature: str | None = "sign",
        signed_fields: Fields | None = None,
        read_timeout: float = 5.0,
    ) -> Reply:
        path = f"/v5/merchant/invoice/{op}"
        if body_format == "json":
            body = jws_payload(fields)
            content_type = "application/json"
            payload = jws_payload(signed_fields) if signed_fields is not None else body
        else:
            body, content_type = multipart(fields)
            payload = jws_payload(signed_fields if signed_fields is not None else fields)
        headers = {"Content-Type": content_type}
        if signature == "sign":
            headers["X-JWS-Signature"] = jws_detached(
                payload, secret_key=secret, path=sign_path or path, merchant_id=merchant_id
            )
        elif signature is not None:
            headers["X-JWS-Signature"] = signature
        async with self.session.post(
            self.emu.base_url + path,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=read_timeout),
        ) as response:
            return Reply(response.status, response.headers, await response.read())

    async def init(self, order_id: str = "order-1", **overrides: str) -> Reply:
        fields = {
            "order_id": order_id,
            "merchant_id": MERCHANT,
            "amount": "100",
            "description": "Счёт за услуги",
            "invoice_method": "qr",
            "currency": "KZT",
        }
        fields.update(overrides)
        return await self.call("init", list(fields.items()))

    async def pay(self, customer: str, card_token: str | None = None, **kw: Any) -> Reply:
        token = card_token or DEFAULT_CARD
        fields = [("customer", customer), ("user_id", "user-1"), ("card_token", token)]
        return await self.call("pay", fields, **kw)

    async def status(self, customer: str, op: str = "status", **kw: Any) -> Reply:
        return await self.call(op, [("merchant_id", MERCHANT), ("customer", customer)], **kw)


@pytest.fixture
async def emu():
    """A running emulator with seeded customer tokens."""
    async with FreedomPayEmulator(seed=7) as emulator:
        yield emulator


@pytest.fixture
async def session():
    """A raw aiohttp client session."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def api(emu, session):
    """A request signer bound to the emulator."""
    return Api(session, emu)


# -- lifecycle -----------------------------------------------------------------------------------


async def test_base_url_needs_a_running_emulator():
    """base_url raises before start and after close, and a closed emulator cannot restart."""
    emulator = FreedomPayEmulator()
    with pytest.raises(RuntimeError, match="not running"):
        _ = emulator.base_url
    async with emulator:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", emulator.base_url)
        with pytest.raises(RuntimeError, match="once"):
            await emulator.start()
    with pytest.raises(RuntimeError, match="not running"):
        _ = emulator.base_url
    with pytest.raises(RuntimeError, match="once"):
        await emulator.start()
    await emulator.close()


def test_repr_hides_the_secret():
    """The emulator's repr shows the merchant id but never the secret key."""
    emulator = FreedomPayEmulator(secret_key="very-secret-value")
    assert "very-secret-value" not in repr(emulator)
    assert MERCHANT in repr(emulator)


# -- signatures ------------------------------------------------------------------------------


async def test_missing_signature_is_rejected(api, emu):
    """A request without X-JWS-Signature gets error 100 and is counted as rejected."""
    reply = await api.call("init", [("order_id", "o"), ("merchant_id", MERCHANT)], signature=None)
    assert reply.status == 200
    assert reply.xml["status"] == "error"
    assert reply.xml["error_code"] == "100"
    assert emu.stats.rejected_signatures == 1
    assert emu.stats.invoices == 0


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"secret": "wrong-key"}, "100"),
        ({"sign_path": "/v5/merchant/invoice/init"}, "100"),
        ({"signed_fields": [("customer", "other"), ("user_id", "user-1")]}, "100"),
        ({"signature": "not-a-jws"}, "100"),
        ({"merchant_id": "654321"}, "9998"),
    ],
    ids=["wrong-key", "other-endpoint", "tampered-fields", "malformed", "unknown-merchant"],
)
async def test_bad_signatures_are_refused(api, emu, kwargs, code):
    """A wrong key, path, payload or shape gives error 100; a foreign merchant id gives 9998."""
    customer = emu.create_invoice()
    reply = await api.pay(customer, **kwargs)
    assert reply.xml["status"] == "error"
    assert reply.xml["error_code"] == code
    assert emu.charges(customer) == 0
    assert emu.stats.rejected_signatures == (1 if code == "100" else 0)


async def test_json_body_is_verified_over_its_raw_bytes(api, emu):
    """A JSON body is accepted when signed as sent and refused when the bytes differ."""
    customer = emu.create_invoice()
    fields = [("customer", customer), ("user_id", "u"), ("card_token", "card-json-0001")]
    ok = await api.call("pay", fields, body_format="json")
    assert ok.xml["invoice_status"] == OK
    other = emu.create_invoice()
    spaced = [("customer", other), ("user_id", "u"), ("card_token", "card-json-0002")]
    refused = await api.call(
        "pay", spaced, body_format="json", signed_fields=[*spaced, ("extra", "x")]
    )
    assert refused.xml["error_code"] == "100"
    assert emu.charges(other) == 0
    assert emu.requests[0].content_type == "application/json"


async def test_uri_header_key_is_accepted(api, emu):
    """A JWS header naming the endpoint with `uri` instead of `path` verifies too."""
    customer = emu.create_invoice()
    fields = [("customer", customer), ("user_id", "u"), ("card_token", "card-uri-0001")]
    signature = jws_detached(
        jws_payload(fields),
        secret_key=SECRET,
        path="/v5/merchant/invoice/pay",
        merchant_id=MERCHANT,
        header_key="uri",
    )
    reply = await api.call("pay", fields, signature=signature)
    assert reply.xml["invoice_status"] == OK
    assert emu.requests[-1].jws_header["uri"] == "/v5/merchant/invoice/pay"


# -- init --------------------------------------------------------------------------------------


async def test_init_returns_a_qr_that_names_the_customer(api, emu):
    """Init creates a new invoice whose base64 QR decodes to a URL carrying its customer token."""
    reply = await api.init("order-42")
    data = reply.xml
    assert reply.headers["Content-Type"].startswith("application/xml")
    assert data["status"] == "ok"
    assert data["invoice_status"] == NEW
    assert int(data["invoice_id"]) > 0
    assert DT_RE.match(data["dt"])
    url = base64.b64decode(data["invoice_methods/qr"], validate=True).decode()
    assert url.startswith(emu.base_url + "/pay.html?")
    (customer,) = parse_qs(urlsplit(url).query)["customer"]
    assert re.fullmatch(r"[0-9a-f]{32}", customer)
    assert emu.invoice_status(customer) == NEW
    assert emu.charges(customer) == 0


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"amount": ""}, "200"),
        ({"amount": "abc"}, "200"),
        ({"amount": "-5"}, "200"),
        ({"invoice_method": "card"}, "200"),
        ({"currency": "TENGE"}, "200"),
        ({"merchant_id": "999"}, "9998"),
    ],
    ids=["no-amount", "bad-amount", "negative", "method", "currency", "foreign-merchant"],
)
async def test_init_validates_its_fields(api, emu, overrides, code):
    """Init refuses missing or invalid fields (200) and a foreign merchant id (9998)."""
    reply = await api.init(**overrides)
    assert reply.xml["status"] == "error"
    assert reply.xml["error_code"] == code
    assert emu.stats.invoices == 0


async def test_unsupported_body_and_repeated_fields_are_refused(api, emu):
    """A form-urlencoded body and a repeated field both get error 200."""
    async with api.session.post(
        emu.base_url + "/v5/merchant/invoice/init",
        data=b"order_id=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as response:
        assert parse(await response.read())["error_code"] == "200"
    customer = emu.create_invoice()
    twice = [("customer", customer), ("customer", customer), ("user_id", "u"), ("card_token", "t")]
    reply = await api.call("pay", twice)
    assert reply.xml["error_code"] == "200"
    assert emu.charges(customer) == 0


async def test_json_init_reads_numbers_as_sent(api, emu):
    """A JSON init with a numeric merchant_id and amount is verified and read exactly."""
    fields = [
        ("order_id", "json-1"),
        ("merchant_id", int(MERCHANT)),
        ("amount", Decimal("99.90")),
        ("description", "d"),
        ("invoice_method", "qr"),
        ("currency", "KZT"),
    ]
    data = (await api.call("init", fields, body_format="json")).xml
    customer = parse_qs(urlsplit(base64.b64decode(data["invoice_methods/qr"]).decode()).query)
    info = (await api.status(customer["customer"][0], op="info")).xml
    assert info["amount"] == "99.90"
    assert info["order_id"] == "json-1"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"[1, 2]"),
        ("application/json", b"{not json"),
        ("application/json", b'{"customer": true}'),
        ("application/json", b'{"customer": {"a": 1}}'),
        ("multipart/form-data; boundary=zzz", b"no parts here at all"),
        ("multipart/form-data", b"--x\r\n\r\n--x--\r\n"),
    ],
    ids=["json-array", "json-broken", "json-bool", "json-nested", "mp-garbage", "mp-no-boundary"],
)
async def test_unreadable_bodies_get_error_200(emu, session, content_type, body):
    """A body that cannot be read as fields is answered with error 200 and changes nothing."""
    async with session.post(
        emu.base_url + "/v5/merchant/invoice/init",
        data=body,
        headers={"Content-Type": content_type, "X-JWS-Signature": "x..y"},
    ) as response:
        assert response.status == 200
        assert parse(await response.read())["error_code"] == "200"
    assert emu.stats.invoices == 0
    assert emu.stats.requests == 1


# -- pay fates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fate", "invoice_status", "charges", "extra"),
    [
        (Fate.paid(), OK, 1, {"status": "ok"}),
        (Fate.declined(error_code=1205), FAILED, 1, {"status": "ok", "error_code": "1205"}),
        (Fate.declined(), FAILED, 1, {"status": "ok", "error_description": "Payment declined"}),
        (Fate.pending_then_paid(), PROCESS, 1, {"status": "ok"}),
        (Fate.pending_then_failed(), PROCESS, 1, {"status": "ok"}),
        (Fate.expired(), INCOMPLETE, 0, {"status": "ok"}),
        (Fate.gateway_error(601, "Bad card"), NEW, 0, {"status": "error", "error_code": "601"}),
    ],
    ids=["paid", "declined-code", "declined", "pending-paid", "pending-failed", "expired", "gw"],
)
async def test_pay_follows_the_invoice_fate(api, fate, invoice_status, charges, extra):
    """Each fate gives its reply, its server-side status and its charge count."""
    emu = api.emu
    customer = emu.create_invoice(order_id="ord-fate", amount=Decimal("250.50"), fate=fate)
    data = (await api.pay(customer)).xml
    for key, value in extra.items():
        assert data[key] == value
    assert emu.invoice_status(customer) == invoice_status
    assert emu.charges(customer) == charges
    assert DT_RE.match(data["dt"])
    if data["status"] == "ok":
        assert data["invoice_status"] == invoice_status
        assert data["order_id"] == "ord-fate"
        assert data["amount"] == "250.50"
        assert data["currency"] == "KZT"
    if invoice_status in {OK, FAILED}:
        assert re.fullmatch(r"5483-18XX-XXXX-\d{4}", data["card_pan"])
        assert int(data["invoice_id"]) > 0
    else:
        assert "card_pan" not in data
        assert "invoice_id" not in data


@pytest.mark.parametrize(
    ("fate", "final"),
    [(Fate.pending_then_paid(polls=2), OK), (Fate.pending_then_failed(polls=2), FAILED)],
    ids=["then-paid", "then-failed"],
)
async def test_pending_invoice_settles_after_its_polls(api, emu, fate, final):
    """A pending pay answers process for `polls` status/info reads, then the terminal status."""
    customer = emu.create_invoice(fate=fate)
    assert (await api.pay(customer)).xml["invoice_status"] == PROCESS
    assert (await api.status(customer)).xml["invoice_status"] == PROCESS
    assert (await api.status(customer, op="info")).xml["invoice_status"] == PROCESS
    settled = (await api.status(customer)).xml
    assert settled["invoice_status"] == final
    assert "card_pan" in settled
    assert emu.invoice_status(customer) == final
    assert emu.charges(customer) == 1


async def test_card_script_wins_over_invoice_and_default_fates(session):
    """A scripted card decides the pay; otherwise the invoice's fate, else the default fate."""
    async with FreedomPayEmulator(default_fate=Fate.declined(7)) as emulator:
        api = Api(session, emulator)
        emulator.script_card("card-expired-0001", Fate.expired())
        scripted = emulator.create_invoice(fate=Fate.paid())
        own = emulator.create_invoice(fate=Fate.paid())
        default = emulator.create_invoice()
        await api.pay(scripted, card_token="card-expired-0001")
        await api.pay(own)
        await api.pay(default)
        assert emulator.invoice_status(scripted) == INCOMPLETE
        assert emulator.invoice_status(own) == OK
        assert emulator.invoice_status(default) == FAILED


async def test_second_pay_is_refused_and_commits_nothing(api, emu):
    """A pay on an invoice that is no longer new gets error 350 and no second charge."""
    customer = emu.create_invoice()
    await api.pay(customer)
    again = (await api.pay(customer)).xml
    assert again["status"] == "error"
    assert again["error_code"] == "350"
    assert emu.charges(customer) == 1
    assert emu.double_charged() == []
    missing = (await api.pay("0" * 32)).xml
    assert missing["error_code"] == "340"


async def test_adversarial_mode_commits_every_pay(session):
    """In adversarial mode a second pay commits again, so the double charge is visible."""
    async with FreedomPayEmulator(adversarial=True) as emulator:
        api = Api(session, emulator)
        customer = emulator.create_invoice()
        clean = emulator.create_invoice()
        await api.pay(customer)
        await api.pay(clean)
        again = (await api.pay(customer)).xml
        assert again["status"] == "ok"
        assert again["invoice_status"] == OK
        assert emulator.charges(customer) == 2
        assert emulator.double_charged() == [customer]
        assert emulator.stats.double_charges == 1
        assert emulator.stats.committed_pays == 3


# -- status and info ---------------------------------------------------------------------------


async def test_status_and_info_find_an_invoice_by_any_single_key(api, emu):
    """Status finds an invoice by customer, order_id or invoice_id; info adds the QR."""
    customer = emu.create_invoice(order_id="ord-77", description="Coffee & cake")
    paid = (await api.pay(customer)).xml
    by_order = (await api.call("status", [("merchant_id", MERCHANT), ("order_id", "ord-77")])).xml
    by_id = (
        await api.call("status", [("merchant_id", MERCHANT), ("invoice_id", paid["invoice_id"])])
    ).xml
    assert by_order["invoice_status"] == by_id["invoice_status"] == OK
    info = (await api.status(customer, op="info")).xml
    assert info["description"] == "Coffee & cake"
    qr_url = base64.b64decode(info["invoice_methods/qr"]).decode()
    assert parse_qs(urlsplit(qr_url).query)["customer"] == [customer]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ([("merchant_id", MERCHANT)], "200"),
        ([("merchant_id", MERCHANT), ("customer", "a"), ("order_id", "b")], "200"),
        ([("customer", "a")], "200"),
        ([("merchant_id", MERCHANT), ("invoice_id", "12x")], "200"),
        ([("merchant_id", "42"), ("customer", "a")], "9998"),
        ([("merchant_id", MERCHANT), ("customer", "f" * 32)], "340"),
        ([("merchant_id", MERCHANT), ("invoice_id", "1")], "340"),
    ],
    ids=["no-key", "two-keys", "no-merchant", "bad-id", "foreign", "unknown", "unknown-id"],
)
async def test_status_refuses_bad_lookups(api, fields, code):
    """Status needs merchant_id and exactly one known key."""
    reply = (await api.call("status", fields)).xml
    assert reply["status"] == "error"
    assert reply["error_code"] == code


def test_state_machine_refuses_edges_it_does_not_have():
    """The transition table allows new->process->ok|failed and new->incomplete, nothing else."""
    assert TRANSITIONS[PROCESS] == {OK, FAILED}
    book = InvoiceBook(seed=1)
    invoice = book.create(
        order_id=None, amount=Decimal(1), currency="KZT", description="d", fate=None
    )
    book.move(invoice, OK)
    with pytest.raises(IllegalTransitionError):
        book.move(invoice, PROCESS)
    assert invoice.status == OK


async def test_expire_makes_a_new_invoice_incomplete(api, emu):
    """expire() makes a new invoice incomplete so pay is refused; a process one cannot expire."""
    customer = emu.create_invoice()
    emu.expire(customer)
    assert emu.invoice_status(customer) == INCOMPLETE
    assert (await api.pay(customer)).xml["error_code"] == "350"
    pending = emu.create_invoice(fate=Fate.pending_then_paid())
    await api.pay(pending)
    with pytest.raises(ValueError, match="process"):
        emu.expire(pending)
    with pytest.raises(KeyError):
        emu.expire("nope")


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "charges", "content_type"),
    [
        (Fault.http_status(503, retry_after="2"), 0, "text/plain"),
        (Fault.http_status(500, after_commit=True), 1, "text/plain"),
        (Fault.http_status(502), 0, "text/html"),
        (Fault.http_status(504, after_commit=True), 1, "text/html"),
        (Fault.http_status(429, retry_after="Wed, 21 Oct 2026 07:28:00 GMT"), 0, "text/plain"),
    ],
    ids=["503-before", "500-after", "502-before", "504-after", "429-date"],
)
async def test_http_status_fault(api, emu, fault, charges, content_type):
    """An HTTP status fault answers that status with a non-XML body, before or after commit."""
    customer = emu.create_invoice()
    emu.inject(fault)
    reply = await api.pay(customer)
    assert reply.status == fault.status
    assert reply.headers["Content-Type"].startswith(content_type)
    assert not reply.body.startswith(b"<?xml")
    assert reply.headers.get("Retry-After") == fault.retry_after
    assert emu.charges(customer) == charges
    assert emu.stats.faults_applied == 1


@pytest.mark.parametrize("after_commit", [False, True], ids=["before", "after"])
async def test_error_code_fault(api, emu, after_commit):
    """An error-code fault answers status=error 1000, having committed only if after_commit."""
    customer = emu.create_invoice()
    emu.inject(Fault.error_code(after_commit=after_commit))
    data = (await api.pay(customer)).xml
    assert (data["status"], data["error_code"]) == ("error", "1000")
    assert emu.charges(customer) == int(after_commit)


@pytest.mark.parametrize("after_commit", [False, True], ids=["before", "after"])
async def test_drop_fault_disconnects_without_reply(api, emu, after_commit):
    """A drop fault closes the connection with no reply, after committing only if after_commit."""
    customer = emu.create_invoice()
    emu.inject(Fault.drop(after_commit=after_commit))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.pay(customer)
    assert emu.charges(customer) == int(after_commit)
    other = emu.create_invoice()
    assert (await api.pay(other)).xml["invoice_status"] == OK


async def test_delay_after_commit_outlasts_a_read_timeout(api, emu):
    """A delay after commit charges at once, while the client times out waiting for the reply."""
    customer = emu.create_invoice()
    emu.inject(Fault.delay(0.5))
    with pytest.raises(TimeoutError):
        await api.pay(customer, read_timeout=0.1)
    assert emu.charges(customer) == 1


async def test_delay_before_commit_still_processes_after_the_client_gave_up(api, emu):
    """A delay before commit processes the pay later, even when the client has timed out."""
    customer = emu.create_invoice()
    emu.inject(Fault.delay(0.2, after_commit=False))
    with pytest.raises(TimeoutError):
        await api.pay(customer, read_timeout=0.05)
    assert emu.charges(customer) == 0
    async with asyncio.timeout(10):
        await emu.wait_until(lambda: emu.charges(customer) > 0)
        await emu.wait_idle()
    assert emu.charges(customer) == 1


async def test_delay_before_commit_replies_late(api, emu):
    """A delay before commit holds the request, then processes and replies normally."""
    customer = emu.create_invoice()
    emu.inject(Fault.delay(0.15, after_commit=False))
    started = time.monotonic()
    data = (await api.pay(customer)).xml
    assert time.monotonic() - started >= 0.14
    assert data["invoice_status"] == OK
    assert emu.charges(customer) == 1


async def test_close_ends_pending_delays_promptly(session):
    """Closing the emulator does not wait for a long delay fault to run out."""
    emulator = FreedomPayEmulator()
    await emulator.start()
    api = Api(session, emulator)
    customer = emulator.create_invoice()
    emulator.inject(Fault.delay(30))
    task = asyncio.create_task(api.pay(customer, read_timeout=10))
    async with asyncio.timeout(10):  # committed, now held by the delay
        await emulator.wait_until(lambda: emulator.charges(customer) == 1)
    assert emulator.stats.in_flight == 1
    started = time.monotonic()
    await emulator.close()
    assert time.monotonic() - started < 2
    with pytest.raises(aiohttp.ClientError):
        await task
    assert emulator.charges(customer) == 1


async def test_wait_idle_returns_once_a_held_request_is_processed(api, emu):
    """wait_idle waits for a request held by a delay fault, and returns after it committed."""
    customer = emu.create_invoice()
    emu.inject(Fault.delay(0.3, after_commit=False))
    task = asyncio.create_task(api.pay(customer, read_timeout=10))
    async with asyncio.timeout(10):
        await emu.wait_until(lambda: emu.stats.in_flight == 1)
        assert emu.charges(customer) == 0
        await emu.wait_idle()
    assert emu.stats.in_flight == 0
    assert emu.charges(customer) == 1
    assert (await task).xml["invoice_status"] == OK


async def test_wait_idle_and_wait_until_return_at_once_when_already_true(emu):
    """With nothing in flight, wait_idle returns without waiting; so does a true condition."""
    async with asyncio.timeout(1):
        await emu.wait_idle()
        await emu.wait_until(lambda: True)


async def test_wait_until_is_bounded_by_the_callers_timeout(emu):
    """A condition that never holds keeps wait_until waiting until the caller's timeout."""
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await emu.wait_until(lambda: False)
    assert time.monotonic() - started >= 0.15


async def test_malformed_xml_fault(api, emu):
    """A malformed-XML fault answers 200 with XML that does not parse, after committing."""
    customer = emu.create_invoice()
    emu.inject(Fault.malformed_xml())
    reply = await api.pay(customer)
    assert reply.status == 200
    with pytest.raises(ET.ParseError):
        parse(reply.body)
    assert emu.charges(customer) == 1


async def test_doctype_fault(api, emu):
    """A DOCTYPE fault answers a reply declaring an entity and using it."""
    customer = emu.create_invoice()
    emu.inject(Fault.doctype())
    body = (await api.pay(customer)).body
    assert b"<!DOCTYPE" in body
    assert b"<!ENTITY" in body
    assert b"&fp;" in body
    assert emu.charges(customer) == 1


async def test_oversized_fault(api, emu):
    """An oversized fault answers a well-formed reply of exactly the requested size."""
    customer = emu.create_invoice()
    emu.inject(Fault.oversized(size=300_000))
    reply = await api.pay(customer)
    assert len(reply.body) == 300_000
    assert reply.xml["invoice_status"] == OK


async def test_stale_status_fault_hides_a_charge_for_some_reads(api, emu):
    """A stale-status fault shows `new` for N reads after a charge, then the truth."""
    customer = emu.create_invoice()
    await api.pay(customer)
    emu.inject(Fault.stale_status(reads=2))
    first = (await api.status(customer)).xml
    second = (await api.status(customer, op="info")).xml
    assert first["invoice_status"] == second["invoice_status"] == NEW
    assert "card_pan" not in first
    assert (await api.status(customer)).xml["invoice_status"] == OK
    assert emu.charges(customer) == 1
    with pytest.raises(ValueError, match="status and info"):
        emu.inject(Fault.stale_status(), operation="pay")


async def test_faults_match_customer_operation_and_count(api, emu):
    """A fault strikes only matching requests, `times` times; clear_faults empties the queue."""
    target = emu.create_invoice()
    bystander = emu.create_invoice()
    emu.inject(Fault.error_code(), customer=target)
    assert (await api.pay(bystander)).xml["status"] == "ok"
    assert (await api.pay(target)).xml["error_code"] == "1000"
    emu.inject(Fault.http_status(503), operation="*", times=2)
    assert (await api.init("o-any")).status == 503
    assert (await api.status(bystander)).status == 503
    assert (await api.status(bystander)).status == 200
    emu.inject(Fault.http_status(503), operation="init", times=5)
    assert emu.pending_faults == 5
    emu.clear_faults()
    assert (await api.init("o-clear")).status == 200
    with pytest.raises(ValueError, match="operation"):
        emu.inject(Fault.drop(), operation="refund")


async def test_rejected_request_does_not_consume_a_fault(api, emu):
    """A request refused for its signature leaves the queued fault for the next good one."""
    customer = emu.create_invoice()
    emu.inject(Fault.http_status(503))
    assert (await api.pay(customer, secret="bad")).xml["error_code"] == "100"
    assert emu.pending_faults == 1
    assert (await api.pay(customer)).status == 503


# -- observations ------------------------------------------------------------------------------


async def test_in_flight_is_counted_per_request(api, emu):
    """Concurrent requests raise max_in_flight to their number; in_flight returns to zero."""
    customers = emu.create_invoices(5)
    emu.inject(Fault.delay(0.2, after_commit=False), operation="status", times=5)
    replies = await asyncio.gather(*(api.status(customer) for customer in customers))
    assert {reply.xml["invoice_status"] for reply in replies} == {NEW}
    stats = emu.stats
    assert isinstance(stats, EmulatorStats)
    assert stats.max_in_flight == 5
    assert stats.in_flight == 0
    assert stats.by_operation["status"] == 5
    assert stats.requests == 5


async def test_requests_are_recorded_with_card_tokens_masked(api, emu):
    """Every request is recorded in order with its fields, the card token masked, and a rate."""
    customer = emu.create_invoice()
    await api.pay(customer, card_token="4111-secret-token-9876")
    await api.status(customer)
    records = emu.requests
    assert [record.operation for record in records] == ["pay", "status"]
    pay = records[0]
    assert isinstance(pay, RequestRecord)
    assert pay.fields["card_token"] == "****9876"
    assert "secret" not in repr(records)
    assert pay.jws_header["path"] == "/v5/merchant/invoice/pay"
    assert pay.content_type == "multipart/form-data"
    assert emu.max_rate(60.0) == pytest.approx(2 / 60.0)
    stats = emu.stats
    assert stats.to_dict()["by_operation"] == {"init": 0, "pay": 1, "status": 1, "info": 0}
    assert stats.mean_rate > 0
    assert stats.first_request_at is not None
    assert stats.last_request_at is not None
    assert stats.first_request_at <= stats.last_request_at


def test_many_invoices_are_created_fast_and_unique():
    """create_invoices makes 10,000 distinct new invoices without HTTP, in well under a second."""
    emulator = FreedomPayEmulator(seed=3)
    started = time.perf_counter()
    customers = emulator.create_invoices(10_000, fate=Fate.expired())
    assert time.perf_counter() - started < 1.0
    assert len(set(customers)) == 10_000
    assert emulator.stats.invoices == 10_000
    assert emulator.invoice_status(customers[-1]) == NEW
    again = FreedomPayEmulator(seed=3).create_invoices(3)
    assert again == customers[:3]


async def test_idle_keepalive_connection_is_closed():
    """With a short keepalive_timeout the emulator closes an idle connection after a reply."""
    async with FreedomPayEmulator(keepalive_timeout=0.1) as emulator:
        customer = emulator.create_invoice()
        body = jws_payload([("merchant_id", MERCHANT), ("customer", customer)])
        path = "/v5/merchant/invoice/status"
        signature = jws_detached(body, secret_key=SECRET, path=path, merchant_id=MERCHANT)
        host, port = urlsplit(emulator.base_url).hostname, urlsplit(emulator.base_url).port
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"X-JWS-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
            headers = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", headers, re.IGNORECASE)[1])
            reply = await reader.readexactly(length)
            assert parse(reply)["invoice_status"] == NEW
            started = time.monotonic()
            assert await asyncio.wait_for(reader.read(1), timeout=3) == b""
            assert time.monotonic() - started < 2
        finally:
            writer.close()
            await writer.wait_closed()


# -- admin API ---------------------------------------------------------------------------------


async def test_admin_api_drives_the_emulator(api, emu, session):
    """The JSON admin API creates invoices, scripts cards and faults, expires and reports."""
    base = emu.base_url + "/_emulator"
    async with session.post(
        base + "/invoices", json={"count": 2, "fate": {"kind": "declined", "error_code": 5}}
    ) as response:
        first, second = (await response.json())["customers"]
    async with session.post(
        base + "/cards", json={"card_token": "card-admin-0001", "fate": {"kind": "paid"}}
    ) as response:
        assert response.status == 200
    async with session.post(
        base + "/faults", json={"fault": {"kind": "error_code", "code": 1000}, "customer": second}
    ) as response:
        assert (await response.json())["pending_faults"] == 1
    assert (await api.pay(first)).xml["invoice_status"] == FAILED
    assert (await api.pay(second, card_token="card-admin-0001")).xml["error_code"] == "1000"
    assert (await api.pay(second, card_token="card-admin-0001")).xml["invoice_status"] == OK
    async with session.post(base + "/invoices", json={"order_id": "adm-1"}) as response:
        (third,) = (await response.json())["customers"]
    async with session.post(base + "/expire", json={"customer": third}) as response:
        assert (await response.json())["status"] == INCOMPLETE
    async with session.get(base + f"/invoices/{second}") as response:
        assert (await response.json())["charges"] == 1
    async with session.get(base + "/stats?customers=1") as response:
        stats = await response.json()
    assert stats["committed_pays"] == 2
    assert stats["double_charged"] == []
    assert stats["invoices"][first] == {"status": FAILED, "charges": 1}
    assert stats["by_operation"]["pay"] == 3
    flat = {"kind": "drop", "after_commit": False, "operation": "init", "times": 2}
    async with session.post(base + "/faults", json=flat) as response:
        assert (await response.json())["pending_faults"] == 2
    async with session.delete(base + "/faults") as response:
        assert response.status == 200
    assert emu.pending_faults == 0


@pytest.mark.parametrize(
    ("route", "payload", "status"),
    [
        ("/invoices", {"count": 1, "fate": {"kind": "lucky"}}, 400),
        ("/invoices", {"count": "2"}, 400),
        ("/invoices", {"count": 2, "order_id": "x"}, 400),
        ("/cards", {"card_token": "", "fate": {"kind": "paid"}}, 400),
        ("/faults", {"fault": {"kind": "delay"}}, 400),
        ("/faults", {"fault": {"kind": "drop", "after_commit": "yes"}}, 400),
        ("/faults", {"fault": {"kind": "drop"}, "times": 0}, 400),
        ("/expire", {"customer": "nobody"}, 404),
    ],
    ids=["fate", "count-type", "order-count", "card", "delay-seconds", "flag", "times", "expire"],
)
async def test_admin_api_rejects_bad_input(emu, session, route, payload, status):
    """The admin API answers 400 (or 404) with an error message for invalid input."""
    async with session.post(emu.base_url + "/_emulator" + route, json=payload) as response:
        assert response.status == status
        assert "error" in await response.json()
    assert emu.pending_faults == 0


# -- scenario values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        Fate.paid(),
        Fate.declined(),
        Fate.declined(51, description="Insufficient funds"),
        Fate.pending_then_paid(3),
        Fate.pending_then_failed(0),
        Fate.expired(),
        Fate.gateway_error(),
        Fault.http_status(429, retry_after="1"),
        Fault.error_code(1000, after_commit=True),
        Fault.drop(after_commit=False),
        Fault.delay(0.5),
        Fault.malformed_xml(),
        Fault.doctype(after_commit=False),
        Fault.oversized(1024),
        Fault.stale_status(4),
    ],
    ids=repr,
)
def test_scenario_values_round_trip_through_json(value):
    """Fate and Fault survive to_dict -> JSON -> from_dict unchanged."""
    data = json.loads(json.dumps(value.to_dict()))
    assert type(value).from_dict(data) == value


@pytest.mark.parametrize(
    ("maker", "data"),
    [
        (Fate.from_dict, {"kind": "won"}),
        (Fate.from_dict, {"kind": "paid", "polls": 1}),
        (Fate.from_dict, {"kind": "pending_then_paid", "polls": -1}),
        (Fault.from_dict, {"kind": "http_status", "status": 200}),
        (Fault.from_dict, {"kind": "delay", "seconds": -1}),
        (Fault.from_dict, {"kind": "oversized", "size": 0}),
        (Fault.from_dict, {"kind": "nap"}),
    ],
    ids=["fate-kind", "fate-key", "polls", "status", "seconds", "size", "fault-kind"],
)
def test_invalid_scenario_values_are_refused(maker, data):
    """from_dict refuses unknown kinds, unknown keys and out-of-range values."""
    with pytest.raises(ValueError, match=r"\w"):
        maker(data)


# -- virtual clock -----------------------------------------------------------------------------


async def test_virtual_clock_sleeps_instantly_and_records():
    """VirtualClock.sleep advances time at once, records requests and treats negatives as 0."""
    clock = VirtualClock()
    assert (clock.monotonic(), clock.time()) == (0.0, 1_700_000_000.0)
    started = time.monotonic()
    await clock.sleep(3600)
    await clock.sleep(-5)
    await clock.sleep(0.5)
    assert time.monotonic() - started < 0.5
    assert clock.monotonic() == 3600.5
    assert clock.time() == 1_700_003_600.5
    assert clock.sleeps == [3600, -5, 0.5]
    clock.advance(10)
    assert clock.monotonic() == 3610.5
    with pytest.raises(ValueError, match="advance"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="NaN"):
        await clock.sleep(float("nan"))


async def test_virtual_clock_sleep_yields_to_other_tasks():
    """A virtual sleep yields to the loop once, so a concurrently scheduled task runs."""
    clock = VirtualClock(monotonic=100.0, time=0.0)
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    task = asyncio.create_task(other())
    await clock.sleep(0)
    assert ran == ["other"]
    await task
    assert clock.monotonic() == 100.0
    assert clock.time() == 0.0
