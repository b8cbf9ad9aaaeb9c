"""At most one charge per invoice under any fault schedule, against an adversarial emulator."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freedompay_async import (
    AmbiguousPaymentError,
    FreedomPayClient,
    FreedomPayError,
    GatewayError,
    InvoicePayment,
    InvoiceStatus,
    PaymentPending,
    PayRequest,
    PollPolicy,
    RetryPolicy,
    Timeouts,
)
from freedompay_async.testing import Fate, Fault, FreedomPayEmulator, VirtualClock

#: Replies by which the gateway refuses a pay before its money path: never committed.
REFUSALS = frozenset({429, 503})
#: A delay fault outlasts the real read timeout used whenever one is drawn.
READ_TIMEOUT = 0.05
DELAY = 0.12
MAX_RESPONSE_BYTES = 4096


@attrs.frozen
class Shot:
    """One fault aimed at one invoice's requests of one operation."""

    fault: Fault
    operation: str
    times: int


@attrs.frozen
class Item:
    """One invoice of the schedule: its fate and the faults aimed at it."""

    fate: Fate
    shots: tuple[Shot, ...]


@attrs.frozen
class Schedule:
    """One example: the invoices, how they are paid, and the client's policies."""

    items: tuple[Item, ...]
    batch: bool
    concurrency: int
    wait: bool
    retry: RetryPolicy
    poll: PollPolicy
    seed: int

    @property
    def slow(self) -> bool:
        """Whether any delay fault was drawn (then the real read timeout is short)."""
        return any(s.fault.kind == "delay" for item in self.items for s in item.shots)


fates = st.one_of(
    st.just(Fate.paid()),
    st.builds(Fate.declined, st.sampled_from([None, 5])),
    st.builds(Fate.pending_then_paid, st.integers(min_value=0, max_value=3)),
    st.builds(Fate.pending_then_failed, st.integers(min_value=0, max_value=3)),
    st.just(Fate.expired()),
    st.just(Fate.gateway_error(600)),
)
either = st.booleans()
# What §5 promises about a pay: 429/503 are refusals (never committed); everything else may strike
# before or after the commit.
pay_faults = st.one_of(
    st.builds(
        Fault.http_status,
        st.sampled_from([429, 503]),
        retry_after=st.sampled_from([None, "0", "1", "3"]),
    ),
    st.builds(Fault.http_status, st.sampled_from([500, 502, 504]), after_commit=either),
    st.builds(Fault.error_code, st.just(1000), after_commit=either),
    st.builds(Fault.drop, after_commit=either),
    st.builds(Fault.delay, st.just(DELAY), after_commit=either),
    st.builds(Fault.malformed_xml, after_commit=either),
    st.builds(Fault.doctype, after_commit=either),
    st.builds(Fault.oversized, st.just(2 * MAX_RESPONSE_BYTES), after_commit=either),
)
read_faults = st.one_of(
    st.builds(Fault.http_status, st.sampled_from([429, 500, 502, 503, 504]), after_commit=either),
    st.builds(Fault.error_code, st.sampled_from([1000, 600]), after_commit=either),
    st.builds(Fault.drop, after_commit=either),
    st.builds(Fault.delay, st.just(DELAY), after_commit=either),
    st.builds(Fault.malformed_xml),
    st.builds(Fault.stale_status, st.integers(min_value=1, max_value=3)),
)
shots = st.one_of(
    st.builds(Shot, pay_faults, st.just("pay"), st.integers(min_value=1, max_value=3)),
    st.builds(Shot, read_faults, st.just("status"), st.integers(min_value=1, max_value=3)),
)
items = st.builds(Item, fates, st.lists(shots, max_size=4).map(tuple))


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    """Fates, per-request faults and policies for one pay_invoice call or one small batch."""
    batch = draw(st.booleans())
    count = draw(st.integers(min_value=2, max_value=4)) if batch else 1
    retry = RetryPolicy(
        attempts=draw(st.integers(min_value=1, max_value=5)),
        deadline=draw(st.sampled_from([0.5, 2.0, 10.0, 60.0])),
        backoff_base=draw(st.sampled_from([0.0, 0.1, 0.5])),
        reconcile_grace=draw(st.sampled_from([0.0, 0.5, 2.0])),
        resend_pay_if_new=False,
        budget=draw(st.sampled_from([None, 10, 500])),
        breaker_threshold=draw(st.sampled_from([None, 2, 20])),
    )
    poll = PollPolicy(
        interval=draw(st.sampled_from([0.1, 1.0])),
        factor=1.5,
        max_interval=2.0,
        timeout=draw(st.sampled_from([0.0, 1.0, 30.0])),
    )
    return Schedule(
        items=tuple(draw(st.lists(items, min_size=count, max_size=count))),
        batch=batch,
        concurrency=draw(st.integers(min_value=1, max_value=4)),
        wait=draw(st.booleans()),
        retry=retry,
        poll=poll,
        seed=draw(st.integers(min_value=0, max_value=2**16)),
    )


@pytest.fixture(scope="module")
def rig() -> Iterator[tuple[asyncio.Runner, FreedomPayEmulator]]:
    """One loop and one adversarial emulator for every example of the property."""
    runner = asyncio.Runner()
    emulator = FreedomPayEmulator(adversarial=True, seed=11)
    runner.run(emulator.start())
    try:
        yield runner, emulator
    finally:
        runner.run(emulator.close())
        runner.close()


async def _run(
    emu: FreedomPayEmulator,
    plan: Schedule,
    client_for: Callable[..., FreedomPayClient],
    until_idle: Callable[..., Awaitable[None]],
) -> list[tuple[str, Item, object]]:
    """Set up the invoices and faults, pay them, and return (customer, item, result) triples."""
    customers = [emu.create_invoice(fate=item.fate) for item in plan.items]
    for customer, item in zip(customers, plan.items, strict=True):
        for shot in item.shots:
            emu.inject(shot.fault, operation=shot.operation, times=shot.times, customer=customer)
    read = READ_TIMEOUT if plan.slow else 2.0
    client = client_for(
        emu,
        timeouts=Timeouts(connect=2.0, read=read, pool=2.0),
        retry=plan.retry,
        poll=plan.poll,
        clock=VirtualClock(),
        rng=random.Random(plan.seed),
        max_response_bytes=MAX_RESPONSE_BYTES,
    )
    results: dict[str, object] = {}
    async with client:
        if plan.batch:
            requests = [
                PayRequest(customer=c, user_id="u", card_token=f"tok-{c}") for c in customers
            ]
            async for outcome in client.pay_invoices(
                requests, concurrency=plan.concurrency, wait=plan.wait
            ):
                customer = outcome.request.customer
                assert customer not in results, "one outcome per request"
                results[customer] = outcome.error if outcome.error is not None else outcome.payment
            assert len(results) == len(customers), "one outcome per request"
        else:
            (customer,) = customers
            try:
                results[customer] = await client.pay_invoice(
                    customer=customer, user_id="u", card_token=f"tok-{customer}", wait=plan.wait
                )
            except FreedomPayError as exc:
                results[customer] = exc
    await until_idle(emu)
    emu.clear_faults()
    return [(c, item, results[c]) for c, item in zip(customers, plan.items, strict=True)]


def _pays_received(emu: FreedomPayEmulator, customer: str) -> int:
    """How many pay requests for *customer* the emulator received, from its own request log."""
    return sum(
        1
        for record in emu.requests
        if record.operation == "pay" and record.fields.get("customer") == customer
    )


def _refused_by_the_gateway(emu: FreedomPayEmulator, customer: str, item: Item) -> bool:
    """
    Whether every pay the emulator received for *customer* struck a refusal (429 or 503).

    The emulator applies a customer's pay faults in the order they were queued, one strike per
    request, so request *n* met strike *n*; a request past the queued strikes met none and, on
    the adversarial emulator, committed.
    """
    strikes = [
        shot.fault for shot in item.shots if shot.operation == "pay" for _ in range(shot.times)
    ]
    received = _pays_received(emu, customer)
    return received <= len(strikes) and all(
        fault.kind == "http_status" and fault.status in REFUSALS for fault in strikes[:received]
    )


def _check(emu: FreedomPayEmulator, customer: str, item: Item, result: object, wait: bool) -> None:
    """Assert the money rules for one invoice's end state."""
    fate = item.fate
    charges = emu.charges(customer)
    assert charges <= 1, f"{customer} charged {charges} times ({fate}, {result!r})"
    if isinstance(result, InvoicePayment):
        status = result.invoice_status
        if wait:
            assert result.is_terminal, result
        if status in {InvoiceStatus.OK, InvoiceStatus.FAILED}:
            assert charges == 1, (fate, result)
        elif status is InvoiceStatus.INCOMPLETE:
            assert charges == 0, (fate, result)
        elif status is InvoiceStatus.PROCESS:
            assert charges == 1, (fate, result)  # only a committed pay is processing
        return
    if isinstance(result, PaymentPending):
        assert result.payment is not None
        assert result.payment.customer == customer
        return
    if isinstance(result, AmbiguousPaymentError):
        assert result.customer == customer
        return
    if isinstance(result, GatewayError):
        assert fate.kind == "gateway_error", (fate, result)
        assert charges == 0
        return
    # Any other error tells the caller the pay was not made, so it may be paid again: the
    # emulator's own records must show that no pay of this invoice got past a refusal.
    assert isinstance(result, FreedomPayError), f"unclassified end: {result!r}"
    assert _refused_by_the_gateway(emu, customer, item), (
        f"{result!r} claims the pay was not made, but the emulator received "
        f"{_pays_received(emu, customer)} pay request(s) it did not all refuse ({item})"
    )
    assert charges == 0, (fate, result)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=schedules())
def test_no_invoice_is_ever_charged_twice(
    rig: tuple[asyncio.Runner, FreedomPayEmulator],
    client_for: Callable[..., FreedomPayClient],
    until_idle: Callable[..., Awaitable[None]],
    plan: Schedule,
) -> None:
    """Any fates, faults and policies: charges <= 1, and every call ends in a classified way."""
    runner, emu = rig
    for customer, item, result in runner.run(_run(emu, plan, client_for, until_idle)):
        _check(emu, customer, item, result, plan.wait)
    assert emu.double_charged() == []
