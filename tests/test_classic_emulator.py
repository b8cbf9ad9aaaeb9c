"""The emulator's classic Merchant API over loopback, driven by a raw aiohttp client."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freedompay_async import (
    DecodeError,
    FreedomPayClient,
    FreedomPayError,
    GatewayError,
    HTTPStatusError,
    PaymentState,
    PaymentStatus,
    RefundResult,
)
from freedompay_async._classic import ClassicOptions, build_classic_request, decode_classic_reply
from freedompay_async._classic_models import ClassicOperation
from freedompay_async._classic_settle import settle_write
from freedompay_async._config import _Credentials
from freedompay_async._protocol import RawResponse
from freedompay_async.settlement import Verdict
from freedompay_async.testing import Fault, FreedomPayEmulator

OP = ClassicOperation
_salts = (f"salt{n}" for n in itertools.count())


class Raw:
    """A tiny classic client: the SDK's pure builder and decoder around one aiohttp session."""

    def __init__(self, emu: FreedomPayEmulator, session: aiohttp.ClientSession) -> None:
        self.emu = emu
        self.session = session
        self.creds = _Credentials(merchant_id=emu.merchant_id, secret_key=emu.secret_key)

    async def send(
        self,
        operation: ClassicOperation,
        params: dict[str, object],
        *,
        options: ClassicOptions | None = None,
        path: str | None = None,
        body: bytes | None = None,
    ) -> Any:
        request = build_classic_request(
            operation, params, credentials=self.creds, salt=next(_salts), options=options
        )
        async with self.session.post(
            self.emu.base_url + (path or request.path),
            data=body if body is not None else request.body,
            headers=dict(request.headers),
        ) as response:
            raw = RawResponse(
                status=response.status, headers=dict(response.headers), body=await response.read()
            )
        return decode_classic_reply(request, raw, credentials=self.creds, options=options)

    async def status(self, payment_id: int) -> PaymentStatus:
        result: PaymentStatus = await self.send(OP.PAYMENT_STATUS, {"payment_id": payment_id})
        return result


@pytest.fixture
async def raw(emulator: FreedomPayEmulator) -> AsyncIterator[Raw]:
    """A raw classic client bound to the emulator."""
    async with aiohttp.ClientSession() as session:
        yield Raw(emulator, session)


async def test_a_card_is_added_completed_listed_and_removed(raw: Raw) -> None:
    """Add gives a redirect URL; completing it issues a token that list shows and remove drops."""
    added = await raw.send(
        OP.CARD_ADD, {"user_id": "u-1", "back_link": "https://shop.example/back"}
    )
    assert f"pg_payment_id={added.payment_id}" in added.redirect_url
    async with raw.session.get(added.redirect_url) as page:
        assert page.status == 200
    assert await raw.send(OP.CARD_LIST, {"user_id": "u-1"}) == ()
    token = raw.emu.classic.complete_card_entry(added.payment_id)
    cards = await raw.send(OP.CARD_LIST, {"user_id": "u-1", "extended": True})
    assert [card.card_token for card in cards] == [token]
    assert cards[0].card_hash is not None
    assert "XX" in cards[0].card_hash
    assert cards[0].expiry_year == 2030
    assert await raw.send(OP.CARD_LIST, {"user_id": "u-2"}) == ()
    removed = await raw.send(OP.CARD_REMOVE, {"user_id": "u-1", "card_token": token})
    assert removed.card_hash == cards[0].card_hash
    assert await raw.send(OP.CARD_LIST, {"user_id": "u-1"}) == ()
    with pytest.raises(GatewayError) as caught:
        await raw.send(OP.CARD_REMOVE, {"user_id": "u-1", "card_token": token})
    assert caught.value.error_code == 340


async def test_both_card_add_scripts_are_served_and_the_admin_completes(raw: Raw) -> None:
    """cardstorage/add and add2 both work; the admin endpoint completes an entry over HTTP."""
    added = await raw.send(
        OP.CARD_ADD,
        {"user_id": "u-9", "back_link": "https://shop.example/back"},
        options=ClassicOptions(card_add_script="add"),
    )
    async with raw.session.post(
        raw.emu.base_url + "/_emulator/cardstorage/complete", json={"payment_id": added.payment_id}
    ) as response:
        data = await response.json()
    assert data["user_id"] == "u-9"
    assert raw.emu.classic.is_issued("u-9", data["card_token"])
    async with raw.session.post(
        raw.emu.base_url + "/_emulator/cardstorage/complete", json={"payment_id": added.payment_id}
    ) as again:
        assert again.status == 400


async def test_partial_refunds_stop_at_the_paid_amount(raw: Raw) -> None:
    """Refunds add up to the paid amount; one more cent is refused and commits nothing."""
    pid = raw.emu.classic.create_payment(Decimal("100.00"))
    first = await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal("30.25")})
    assert isinstance(first, RefundResult)
    assert first.refund_payment_id is not None
    await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal("69.75")})
    with pytest.raises(GatewayError) as caught:
        await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal("0.01")})
    assert caught.value.error_code == 490
    assert raw.emu.classic.refunds(pid) == [Decimal("30.25"), Decimal("69.75")]
    status = await raw.status(pid)
    assert status.state is PaymentState.REFUNDED
    assert status.refunded_total == Decimal(100)
    assert [r.payment_id for r in status.refunds] == [
        first.refund_payment_id,
        status.refunds[1].payment_id,
    ]


async def test_a_full_refund_takes_what_is_left(raw: Raw) -> None:
    """A refund without amount refunds the remainder."""
    pid = raw.emu.classic.create_payment(Decimal(50))
    await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal(20)})
    await raw.send(OP.REFUND, {"payment_id": pid})
    assert raw.emu.classic.refunds(pid) == [Decimal(20), Decimal(30)]


async def test_a_hold_is_captured_once_and_then_refundable(raw: Raw) -> None:
    """A hold refuses refunds, captures once (partially), refuses a second capture and cancel."""
    pid = raw.emu.classic.create_payment(Decimal(80), hold=True)
    with pytest.raises(GatewayError):
        await raw.send(OP.REFUND, {"payment_id": pid})
    assert (await raw.status(pid)).captured is False
    captured = await raw.send(OP.CAPTURE, {"payment_id": pid, "amount": Decimal(60)})
    assert captured.clearing_amount == Decimal(60)
    with pytest.raises(GatewayError):
        await raw.send(OP.CAPTURE, {"payment_id": pid})
    with pytest.raises(GatewayError):
        await raw.send(OP.CANCEL, {"payment_id": pid})
    with pytest.raises(GatewayError):
        await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal("60.01")})
    await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal(60)})
    assert raw.emu.classic.captures(pid) == 1
    assert raw.emu.classic.double_captured() == []


@pytest.mark.parametrize("tag", ["pg_revoke_amount", "pg_revoked_amount"])
async def test_a_cancelled_hold_shows_its_reversal_in_either_spelling(raw: Raw, tag: str) -> None:
    """Cancel reverses a hold; get_status3 writes the amount under the chosen tag."""
    raw.emu.classic.revoked_amount_tag = tag
    pid = raw.emu.classic.create_payment(Decimal(40), hold=True)
    cancelled = await raw.send(OP.CANCEL, {"payment_id": pid})
    status = await raw.status(pid)
    assert status.revoked_amount == Decimal(40)
    assert [r.payment_id for r in status.revocations] == [cancelled.cancel_payment_id]
    assert raw.emu.classic.payment_state(pid) == "revoked"
    with pytest.raises(GatewayError):
        await raw.send(OP.CAPTURE, {"payment_id": pid})


async def test_status_by_order_id_and_an_unknown_payment(raw: Raw) -> None:
    """get_status3 finds a payment by order id; an unknown id is error 340."""
    pid = raw.emu.classic.create_payment(Decimal(10), order_id="ORD-7")
    assert (await raw.send(OP.PAYMENT_STATUS, {"order_id": "ORD-7"})).payment_id == pid
    with pytest.raises(GatewayError) as caught:
        await raw.status(999)
    assert caught.value.error_code == 340


async def test_commit_then_drop_on_refund_commits_exactly_once(raw: Raw) -> None:
    """A refund whose connection drops after commit is refunded once; status proves it."""
    pid = raw.emu.classic.create_payment(Decimal(100))
    before = await raw.status(pid)
    raw.emu.classic.inject(Fault.drop(after_commit=True), operation="refund")
    with pytest.raises(aiohttp.ClientError):
        await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal(15)})
    assert raw.emu.classic.refunds(pid) == [Decimal(15)]
    after = await raw.status(pid)
    finding = settle_write(
        OP.REFUND, amount=Decimal(15), before=before, after=after, read_at=1.0, last_write_at=0.0
    )
    assert finding.verdict is Verdict.SETTLED


async def test_faults_before_commit_change_nothing(raw: Raw) -> None:
    """An error-code or HTTP fault before commit leaves the payment untouched."""
    pid = raw.emu.classic.create_payment(Decimal(100))
    raw.emu.classic.inject(Fault.error_code(1000, after_commit=False), operation="refund")
    with pytest.raises(GatewayError) as caught:
        await raw.send(OP.REFUND, {"payment_id": pid})
    assert caught.value.error_code == 1000
    raw.emu.classic.inject(Fault.http_status(503, after_commit=False), operation="capture")
    raw.emu.classic.inject(Fault.http_status(503, after_commit=True), operation="refund")
    with pytest.raises(HTTPStatusError):
        await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal(5)})
    assert raw.emu.classic.refunds(pid) == [Decimal(5)]


async def test_a_stale_status_hides_the_latest_refund_once(raw: Raw) -> None:
    """stale_status shows the payment as before its latest write, then the truth again."""
    pid = raw.emu.classic.create_payment(Decimal(100))
    await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal(10)})
    raw.emu.classic.inject(Fault.stale_status(reads=1), payment_id=pid)
    assert (await raw.status(pid)).refunds == ()
    assert len((await raw.status(pid)).refunds) == 1


@pytest.mark.parametrize("kind", ["doctype", "malformed_xml", "oversized"])
async def test_garbage_replies_are_decode_errors(raw: Raw, kind: str) -> None:
    """The hostile-reply faults reach the client as DecodeError."""
    pid = raw.emu.classic.create_payment(Decimal(100))
    fault = Fault.from_dict(
        {"kind": kind, "size": 2 << 20} if kind == "oversized" else {"kind": kind}
    )
    raw.emu.classic.inject(fault, operation="payment_status")
    with pytest.raises(DecodeError):
        await raw.status(pid)


# -- signatures ----------------------------------------------------------------------------


async def test_every_request_of_every_operation_verifies_at_the_emulator(raw: Raw) -> None:
    """Each operation's request, as the SDK builds it, passes the emulator's own pg_sig check."""
    classic = raw.emu.classic
    added = await raw.send(OP.CARD_ADD, {"user_id": "u", "back_link": "https://s.example/b"})
    token = classic.complete_card_entry(added.payment_id)
    await raw.send(OP.CARD_LIST, {"user_id": "u"})
    await raw.send(OP.CARD_REMOVE, {"user_id": "u", "card_token": token})
    pid = classic.create_payment(Decimal(10), order_id="sig-1")
    hold = classic.create_payment(Decimal(10), hold=True)
    hold2 = classic.create_payment(Decimal(10), hold=True)
    await raw.status(pid)
    await raw.send(OP.PAYMENT_STATUS, {"order_id": "sig-1"})
    await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal("1.10")})
    await raw.send(OP.CAPTURE, {"payment_id": hold, "amount": Decimal(5)})
    await raw.send(OP.CANCEL, {"payment_id": hold2})
    seen = {record.operation for record in classic.requests}
    assert seen == {op.value for op in ClassicOperation}
    assert all(record.signature_valid for record in classic.requests)
    assert classic.rejected_signatures == 0
    assert all("pg_sig" not in dict(r.fields) for r in classic.requests)
    assert token not in repr(classic.requests)


async def test_a_tampered_or_misdirected_request_is_rejected(raw: Raw) -> None:
    """A changed amount, or a refund's body sent to cancel.php, fails pg_sig: error 100."""
    pid = raw.emu.classic.create_payment(Decimal(100), hold=True)
    raw.emu.classic.create_payment(Decimal(100))
    request = build_classic_request(
        OP.REFUND, {"payment_id": pid, "amount": Decimal(1)}, credentials=raw.creds, salt="t1"
    )
    forged = request.body.replace(b"pg_refund_amount=1", b"pg_refund_amount=9")
    with pytest.raises(GatewayError) as caught:
        await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal(1)}, body=forged)
    assert caught.value.error_code == 100
    cancel = build_classic_request(OP.CANCEL, {"payment_id": pid}, credentials=raw.creds, salt="t2")
    with pytest.raises(GatewayError) as caught:
        await raw.send(
            OP.CANCEL,
            {"payment_id": pid},
            path="/do_capture.php",
            body=cancel.body,
            options=ClassicOptions(verify_replies=False),  # the reply is signed for do_capture
        )
    assert caught.value.error_code == 100
    assert raw.emu.classic.rejected_signatures == 2
    assert raw.emu.classic.captures(pid) == 0
    assert raw.emu.classic.cancels(pid) == 0


async def test_an_unknown_merchant_gets_the_unsigned_9998_error(raw: Raw) -> None:
    """A request for another merchant id is refused with 9998, unsigned, as documented."""
    raw.creds = _Credentials(merchant_id="999", secret_key=raw.emu.secret_key)
    with pytest.raises(GatewayError) as caught:
        await raw.send(OP.CARD_LIST, {"user_id": "u"})
    assert caught.value.error_code == 9998


# -- saved cards and the invoice pay path --------------------------------------------------


async def test_pay_takes_only_tokens_issued_for_that_user_when_switched_on() -> None:
    """With require_issued_tokens, pay refuses foreign tokens; the paid invoice is refundable."""
    async with FreedomPayEmulator(seed=3, require_issued_tokens=True) as emu:
        token = emu.classic.save_card("alice")
        async with FreedomPayClient(
            emu.merchant_id, emu.secret_key, base_url=emu.base_url
        ) as client:
            for user, card in (("alice", "made-up-token"), ("bob", token)):
                init = await client.init_invoice(
                    order_id=f"o-{user}", amount=Decimal(70), description="d"
                )
                assert init.customer is not None
                with pytest.raises(GatewayError):
                    await client.pay_invoice(customer=init.customer, user_id=user, card_token=card)
                assert emu.charges(init.customer) == 0
            init = await client.init_invoice(order_id="o-ok", amount=Decimal(70), description="d")
            assert init.customer is not None
            paid = await client.pay_invoice(
                customer=init.customer, user_id="alice", card_token=token
            )
        assert paid.invoice_id is not None
        async with aiohttp.ClientSession() as session:
            raw = Raw(emu, session)
            status = await raw.status(paid.invoice_id)
            assert status.amount == Decimal(70)
            await raw.send(OP.REFUND, {"payment_id": paid.invoice_id, "amount": Decimal(20)})
        assert emu.classic.refunds(paid.invoice_id) == [Decimal(20)]


async def test_the_switch_is_off_by_default(emulator: FreedomPayEmulator) -> None:
    """Without the switch, any token pays, as before."""
    customer = emulator.create_invoice()
    async with FreedomPayClient(
        emulator.merchant_id, emulator.secret_key, base_url=emulator.base_url
    ) as client:
        paid = await client.pay_invoice(customer=customer, user_id="u", card_token="anything")
    assert paid.invoice_status.value == "ok"


# -- a fault schedule against a refund driven by the settle rule ---------------------------

FAULTS = st.sampled_from(
    [
        ("refund", Fault.drop(after_commit=True)),
        ("refund", Fault.drop(after_commit=False)),
        ("refund", Fault.http_status(503, after_commit=True)),
        ("refund", Fault.http_status(502, after_commit=False)),
        ("refund", Fault.error_code(1000, after_commit=True)),
        ("refund", Fault.error_code(1000, after_commit=False)),
        ("refund", Fault.malformed_xml(after_commit=True)),
        ("payment_status", Fault.stale_status(reads=2)),
        ("payment_status", Fault.stale_status(reads=4)),
        ("payment_status", Fault.http_status(500)),
        ("payment_status", Fault.drop(after_commit=False)),
    ]
)


async def _refund_once(raw: Raw, pid: int, amount: Decimal) -> str:
    """Refund at most once: after any doubt, read the status and resend only if not landed."""
    return await _write_once(raw, OP.REFUND, pid, amount)


async def _write_once(
    raw: Raw, operation: ClassicOperation, pid: int, amount: Decimal | None
) -> str:
    """Write at most once: after any doubt, read the status and resend only if not landed."""

    async def read() -> PaymentStatus | None:
        for _ in range(6):
            try:
                return await raw.status(pid)
            except (FreedomPayError, aiohttp.ClientError):
                continue
        return None

    before = await read()
    if before is None:
        return "unknown"
    last_write: float | None = None
    clock = asyncio.get_running_loop().time
    for _ in range(4):
        if last_write is not None:
            verdict = Verdict.IN_DOUBT
            for _ in range(2):  # a lagging status may outlast these reads: then stay in doubt
                after = await read()
                if after is None:
                    break
                found = settle_write(
                    operation,
                    amount=amount,
                    before=before,
                    after=after,
                    read_at=clock(),
                    last_write_at=last_write,
                )
                verdict = found.verdict
                if verdict is not Verdict.IN_DOUBT:
                    break
            if verdict is Verdict.SETTLED:
                return "settled"
            if verdict is not Verdict.NOT_LANDED:
                return "in_doubt"
        last_write = clock()
        try:
            await raw.send(operation, {"payment_id": pid, "amount": amount})
        except GatewayError as exc:
            if exc.error_code != 1000:
                return "refused"
        except (FreedomPayError, aiohttp.ClientError):
            pass
        else:
            return "refunded"
    return "in_doubt"


@settings(max_examples=40, deadline=None)
@given(schedule=st.lists(FAULTS, max_size=5), cents=st.integers(min_value=1, max_value=10_000))
def test_no_fault_schedule_refunds_more_than_asked(
    schedule: list[tuple[str, Fault]], cents: int
) -> None:
    """Drops, 5xx, 1000s and status lag never make a settle-first refund land twice."""
    amount = Decimal(cents) / 100

    async def scenario() -> str:
        async with FreedomPayEmulator(seed=5) as emu, aiohttp.ClientSession() as session:
            pid = emu.classic.create_payment(Decimal(200))
            for operation, fault in schedule:
                emu.classic.inject(fault, operation=operation)
            outcome = await _refund_once(Raw(emu, session), pid, amount)
            refunds = emu.classic.refunds(pid)
            assert sum(refunds, Decimal(0)) <= amount
            assert len(refunds) <= 1
            if outcome in ("refunded", "settled"):
                assert refunds == [amount]
            return outcome

    assert asyncio.run(scenario()) in {"refunded", "settled", "in_doubt", "refused", "unknown"}


# -- the emulator refuses what the gateway would ----------------------------------------------


async def _post_form(raw: Raw, path: str, fields: list[tuple[str, str]]) -> GatewayError:
    """Send hand-made (signed) form fields and return the GatewayError the reply decodes to."""
    from urllib.parse import urlencode

    from freedompay_async.signing import pg_sig

    signed = [*fields, ("pg_sig", pg_sig(path.rsplit("/", 1)[-1], fields, raw.emu.secret_key))]
    async with raw.session.post(
        raw.emu.base_url + path,
        data=urlencode(signed),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as response:
        body = await response.read()
    request = build_classic_request(OP.CANCEL, {"payment_id": 1}, credentials=raw.creds, salt="x")
    reply = RawResponse(status=200, headers={}, body=body)
    with pytest.raises(GatewayError) as caught:
        decode_classic_reply(
            request, reply, credentials=raw.creds, options=ClassicOptions(verify_replies=False)
        )
    return caught.value


@pytest.mark.parametrize(
    "fields",
    [
        [("pg_merchant_id", "123456"), ("pg_payment_id", "1")],
        [("pg_merchant_id", "123456"), ("pg_payment_id", "x1"), ("pg_salt", "s")],
        [("pg_merchant_id", "123456"), ("pg_salt", "s")],
        [("pg_merchant_id", "123456"), ("pg_payment_id", "1"), ("pg_salt", "s"), ("pg_salt", "t")],
        [
            ("pg_merchant_id", "123456"),
            ("pg_payment_id", "PID"),
            ("pg_salt", "s"),
            ("pg_refund_amount", "-1"),
        ],
        [
            ("pg_merchant_id", "123456"),
            ("pg_payment_id", "PID"),
            ("pg_salt", "s"),
            ("pg_refund_amount", "ten"),
        ],
    ],
    ids=["no-salt", "bad-id", "no-id", "repeated", "negative", "not-a-number"],
)
async def test_malformed_requests_get_error_200(raw: Raw, fields: list[tuple[str, str]]) -> None:
    """Missing salt or id, a non-numeric id, a repeated field or a bad amount: error 200."""
    pid = str(raw.emu.classic.create_payment(Decimal(10)))
    error = await _post_form(raw, "/revoke.php", [(n, pid if v == "PID" else v) for n, v in fields])
    assert error.error_code == 200


async def test_a_non_form_body_is_refused(raw: Raw) -> None:
    """JSON is not a form: error 200, nothing recorded as valid."""
    async with raw.session.post(raw.emu.base_url + "/cancel.php", json={"a": 1}) as response:
        body = await response.read()
    assert b"<pg_error_code>200</pg_error_code>" in body


def test_inject_refuses_unknown_operations_and_stale_writes() -> None:
    """Inject validates its operation, times and the stale_status target."""
    emu = FreedomPayEmulator()
    with pytest.raises(ValueError, match="operation"):
        emu.classic.inject(Fault.drop(), operation="pay")
    with pytest.raises(ValueError, match="payment_status only"):
        emu.classic.inject(Fault.stale_status(), operation="refund")
    with pytest.raises(ValueError, match="times"):
        emu.classic.inject(Fault.drop(), times=0)
    emu.classic.inject(Fault.drop(), operation="*")
    emu.classic.clear_faults()
    with pytest.raises(KeyError):
        emu.classic.refunds(1)


async def test_a_delayed_refund_commits_and_answers_late(raw: Raw) -> None:
    """A delay fault after commit still commits; before commit, it waits then processes."""
    pid = raw.emu.classic.create_payment(Decimal(10))
    raw.emu.classic.inject(Fault.delay(0.01), operation="refund")
    raw.emu.classic.inject(Fault.delay(0.01, after_commit=False), operation="refund")
    await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal(1)})
    await raw.send(OP.REFUND, {"payment_id": pid, "amount": Decimal(2)})
    assert raw.emu.classic.refunds(pid) == [Decimal(1), Decimal(2)]


async def test_card_add_echoes_the_order_id(raw: Raw) -> None:
    """The order id given to cardstorage/add comes back in the reply."""
    added = await raw.send(
        OP.CARD_ADD,
        {"user_id": "u", "back_link": "https://s.example/b", "order_id": "card-7"},
    )
    assert added.order_id == "card-7"


CAPTURE_FAULTS = st.sampled_from(
    [
        ("capture", Fault.drop(after_commit=True)),
        ("capture", Fault.drop(after_commit=False)),
        ("capture", Fault.http_status(504, after_commit=True)),
        ("capture", Fault.error_code(1000, after_commit=True)),
        ("capture", Fault.error_code(1000, after_commit=False)),
        ("payment_status", Fault.stale_status(reads=4)),
        ("payment_status", Fault.http_status(500)),
    ]
)


@settings(max_examples=30, deadline=None)
@given(schedule=st.lists(CAPTURE_FAULTS, max_size=5), partial=st.booleans())
def test_no_fault_schedule_captures_twice(schedule: list[tuple[str, Fault]], partial: bool) -> None:
    """On an emulator that would commit a second capture, a settle-first capture commits once."""
    amount = Decimal(60) if partial else None

    async def scenario() -> str:
        async with (
            FreedomPayEmulator(seed=6, adversarial=True) as emu,
            aiohttp.ClientSession() as session,
        ):
            pid = emu.classic.create_payment(Decimal(80), hold=True)
            for operation, fault in schedule:
                emu.classic.inject(fault, operation=operation)
            outcome = await _write_once(Raw(emu, session), OP.CAPTURE, pid, amount)
            assert emu.classic.captures(pid) <= 1
            assert emu.classic.double_captured() == []
            if outcome in ("refunded", "settled"):
                assert emu.classic.captures(pid) == 1
            return outcome

    assert asyncio.run(scenario()) in {"refunded", "settled", "in_doubt", "refused", "unknown"}
