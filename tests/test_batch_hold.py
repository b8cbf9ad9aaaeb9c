"""A batch holds pays never sent while the gateway is down, and only those; reconcile reads wait."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable

import attrs
import pytest
from rawgate import RawGateway, raw_status, xml

from freedompay_async import (
    AmbiguousPaymentError,
    BatchProgress,
    CircuitOpenError,
    ConfigurationError,
    ConnectError,
    FreedomPayClient,
    FreedomPayError,
    HTTPStatusError,
    InvoiceStatus,
    PayOutcome,
    PayRequest,
    PollPolicy,
    PoolTimeout,
    RetryPolicy,
)
from freedompay_async._batch import TASK_NAME_PREFIX
from freedompay_async._call import Act, Call
from freedompay_async._hold import never_sent
from freedompay_async._models import InvoicePayment
from freedompay_async._protocol import Operation
from freedompay_async._retry import BreakerState, CircuitBreaker
from freedompay_async.cli._render import Progress
from freedompay_async.testing import Fault, FreedomPayEmulator, VirtualClock

ClientFactory = Callable[..., FreedomPayClient]

#: Breaker that opens after 5 failures and probes every 10 (virtual) seconds.
POLICY = RetryPolicy(
    attempts=2, deadline=30.0, reconcile_grace=0.5, breaker_threshold=5, breaker_cooldown=10.0
)


def _requests(customers: list[str]) -> list[PayRequest]:
    return [PayRequest(customer=c, user_id="u", card_token=f"card-{c}") for c in customers]


def _outcome(error: FreedomPayError | None) -> PayOutcome:
    request = PayRequest(customer="c", user_id="u", card_token="t")
    return PayOutcome(request=request, error=error)


def test_only_errors_that_prove_not_sent_are_held() -> None:
    """Breaker, connect errors, no gate slot and 429/503 are held; ambiguity and 4xx never are."""
    assert never_sent(_outcome(CircuitOpenError("open", operation="pay")))
    assert never_sent(_outcome(ConnectError("refused", operation="pay")))
    assert never_sent(_outcome(PoolTimeout("no slot", operation="pay")))
    assert never_sent(_outcome(HTTPStatusError("busy", status_code=503, operation="pay")))
    assert never_sent(_outcome(HTTPStatusError("slow down", status_code=429, operation="pay")))
    assert not never_sent(_outcome(HTTPStatusError("bad", status_code=502, operation="pay")))
    assert not never_sent(_outcome(HTTPStatusError("no", status_code=400, operation="pay")))
    assert not never_sent(_outcome(AmbiguousPaymentError("may have charged", customer="c")))
    assert not never_sent(_outcome(None))


async def test_a_batch_waits_out_refusals_and_pays_every_invoice_once(
    emulator: FreedomPayEmulator, make_client: ClientFactory
) -> None:
    """Pays refused with 503 open the breaker; the batch holds, probes, resumes and pays all."""
    customers = emulator.create_invoices(120)
    refusals = 30
    emulator.inject(Fault.http_status(503), operation="pay", times=refusals)
    seen: list[BatchProgress] = []
    async with (
        make_client(retry=POLICY) as client,
        contextlib.aclosing(
            client.pay_invoices(_requests(customers), concurrency=8, on_progress=seen.append)
        ) as outcomes,
    ):
        states = Counter([o.state async for o in outcomes])
    assert states == {"paid": 120}
    assert all(emulator.charges(c) == 1 for c in customers)
    stats = emulator.stats
    # Every pay request beyond one per invoice is one of the refusals: the wait sent nothing else.
    assert stats.faults_applied == refusals
    assert stats.by_operation["pay"] == 120 + refusals
    waiting = [p for p in seen if p.waiting_for_gateway]
    assert waiting
    assert max(p.held for p in waiting) >= 1
    assert not seen[-1].waiting_for_gateway


async def test_while_the_breaker_is_open_the_batch_sends_one_probe_per_cooldown(
    emulator: FreedomPayEmulator, make_client: ClientFactory
) -> None:
    """During a long outage the requests are the failures that opened the breaker plus probes."""
    customers = emulator.create_invoices(40)
    emulator.inject(Fault.http_status(503), operation="pay", times=10_000)
    clock = VirtualClock()
    tolerance = 60.0
    async with make_client(retry=POLICY, clock=clock) as client:
        start = clock.monotonic()
        async with contextlib.aclosing(
            client.pay_invoices(_requests(customers), concurrency=8, outage_tolerance=tolerance)
        ) as outcomes:
            done = [o async for o in outcomes]
        took = clock.monotonic() - start
    assert len(done) == 40
    assert {o.state for o in done} == {"error"}
    assert all(isinstance(o.error, CircuitOpenError | HTTPStatusError) for o in done)
    assert sum(emulator.charges(c) for c in customers) == 0
    pays = emulator.stats.by_operation["pay"]
    # Before the breaker opens each of the 8 workers sends at most `attempts` pays; after it,
    # one probe per cooldown (jittered by at most 20 %) until the tolerance ends.
    bound = 8 * POLICY.attempts + tolerance / POLICY.breaker_cooldown + 1
    assert pays <= bound, (pays, bound)
    assert tolerance <= took < tolerance + POLICY.deadline


async def test_outage_tolerance_zero_fails_fast_as_before(
    emulator: FreedomPayEmulator, make_client: ClientFactory
) -> None:
    """With outage_tolerance=0 an open breaker fails the rest of the batch at once."""
    customers = emulator.create_invoices(60)
    emulator.inject(Fault.http_status(503), operation="pay", times=10_000)
    async with (
        make_client(retry=POLICY) as client,
        contextlib.aclosing(
            client.pay_invoices(_requests(customers), concurrency=4, outage_tolerance=0)
        ) as outcomes,
    ):
        errors = Counter([type(o.error).__name__ async for o in outcomes])
    assert errors["CircuitOpenError"] >= 60 - 4 * POLICY.attempts
    assert emulator.stats.by_operation["pay"] <= 4 * POLICY.attempts


async def test_pays_that_may_have_charged_are_reconciled_not_held(
    emulator: FreedomPayEmulator, make_client: ClientFactory
) -> None:
    """Pays broken after commit open the breaker, are settled by status, never sent again."""
    customers = emulator.create_invoices(40)
    emulator.inject(Fault.drop(after_commit=True), operation="pay", times=12)
    async with (
        make_client(retry=POLICY) as client,
        contextlib.aclosing(client.pay_invoices(_requests(customers), concurrency=8)) as outcomes,
    ):
        states = Counter([o.state async for o in outcomes])
    assert states == {"paid": 40}
    assert all(emulator.charges(c) == 1 for c in customers)
    assert emulator.stats.by_operation["pay"] == 40


async def test_a_single_pay_still_fails_fast_when_the_breaker_is_open(
    emulator: FreedomPayEmulator, make_client: ClientFactory
) -> None:
    """`pay_invoice` (a web request) does not wait for the gateway: it raises CircuitOpenError."""
    customers = emulator.create_invoices(7)
    emulator.inject(Fault.http_status(503), operation="pay", times=100)
    policy = RetryPolicy(attempts=1, breaker_threshold=5, breaker_cooldown=10.0)
    async with make_client(retry=policy) as client:
        for customer in customers[:5]:
            with pytest.raises(HTTPStatusError):
                await client.pay_invoice(customer=customer, user_id="u", card_token="t")
        with pytest.raises(CircuitOpenError):
            await client.pay_invoice(customer=customers[5], user_id="u", card_token="t")
    assert emulator.stats.by_operation["pay"] == 5


@pytest.mark.parametrize("value", [-1.0, float("inf"), float("nan"), True, "300"])
async def test_outage_tolerance_is_validated(make_client: ClientFactory, value: object) -> None:
    """A negative, infinite or non-number outage tolerance is refused naming the option."""
    async with make_client() as client:
        with pytest.raises(ConfigurationError, match="outage_tolerance"):
            client.pay_invoices([], outage_tolerance=value)  # type: ignore[arg-type]


async def test_a_reconcile_read_succeeds_after_a_status_outage_shorter_than_the_deadline(
    emulator: FreedomPayEmulator,
) -> None:
    """A pay broken after commit, whose status reads fail for seconds, still settles as paid."""
    (customer,) = emulator.create_invoices(1)
    emulator.inject(Fault.drop(after_commit=True), operation="pay", times=1)
    outage_reads = 12
    emulator.inject(Fault.http_status(502), operation="status", times=outage_reads)
    clock = VirtualClock()
    policy = RetryPolicy(deadline=60.0, reconcile_grace=2.0, backoff_max=4.0)
    async with FreedomPayClient(
        emulator.merchant_id,
        emulator.secret_key,
        base_url=emulator.base_url,
        clock=clock,
        rng=random.Random(7),
        retry=policy,
    ) as client:
        start = clock.monotonic()
        payment = await client.pay_invoice(customer=customer, user_id="u", card_token="t")
        took = clock.monotonic() - start
    assert payment.invoice_status is InvoiceStatus.OK
    assert emulator.charges(customer) == 1
    assert emulator.stats.by_operation["pay"] == 1
    assert emulator.stats.by_operation["status"] == outage_reads + 1
    # The outage lasted seconds of the deadline, far beyond what a few quick reads would cover.
    assert 2.0 < took < policy.deadline


def test_the_one_resend_a_new_status_allows_passes_an_open_breaker() -> None:
    """A pay whose status proved it never landed is resent even while the breaker is open."""
    breaker = CircuitBreaker(1, 100.0)
    policy = RetryPolicy(reconcile_grace=2.0, resend_pay_if_new=True)
    call = Call(
        Operation.PAY,
        policy=policy,
        now=0.0,
        rng=random.Random(1),
        context={"customer": "c1"},
        poll=PollPolicy(),
        breaker=breaker,
    )
    assert call.next_step(0.0) is Act.SEND
    call.record(HTTPStatusError("bad gateway", status_code=502, operation="pay"), now=0.1)
    assert breaker.state is BreakerState.OPEN
    assert call.next_step(0.1) is Act.SLEEP
    call.woke()
    assert call.next_step(3.0) is Act.ASK_STATUS
    call.record(InvoicePayment(invoice_status=InvoiceStatus.NEW), now=3.1)
    assert call.next_step(3.2) is Act.SEND
    call.record(InvoicePayment(invoice_status=InvoiceStatus.OK), now=3.3)
    assert call.next_step(3.3) is Act.DONE
    # Any other pay meets the open breaker (the resend's success closed it: open it again).
    breaker.record(failure=True, now=4.0)
    other = Call(
        Operation.PAY,
        policy=policy,
        now=4.0,
        rng=random.Random(1),
        context={"customer": "c2"},
        breaker=breaker,
    )
    assert other.next_step(4.1) is Act.FAIL
    assert isinstance(other.error, CircuitOpenError)


def test_the_cli_progress_line_says_when_the_batch_waits_for_the_gateway(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The plain progress line shows "waiting for the gateway" at once, and drops it after."""
    progress = Progress("Paying", 10, rich=False)
    waiting = BatchProgress(
        submitted=10,
        in_flight=8,
        done=2,
        by_state={"paid": 2},
        elapsed=1.0,
        held=7,
        waiting_for_gateway=True,
    )
    progress.batch(waiting)
    assert "waiting for the gateway (7 held)" in capsys.readouterr().err
    assert "waiting for the gateway" in progress.line()
    progress.batch(attrs.evolve(waiting, held=0, waiting_for_gateway=False))
    assert "waiting" not in capsys.readouterr().err
    assert "waiting" not in progress.line()


async def test_a_reconcile_read_outlives_a_real_status_outage_on_a_raw_gateway() -> None:
    """A raw gateway answers status 502 for 2.5 s after an ambiguous pay; the pay ends paid once."""
    outage = 2.5
    began: list[float] = []

    def status(_customer: str) -> bytes:
        if time.monotonic() - began[0] < outage:
            return raw_status(502)
        return xml("ok")

    def pay(_customer: str) -> bytes:
        began.append(time.monotonic())
        return raw_status(502)  # charged, then the reply says nothing about it

    policy = RetryPolicy(attempts=4, deadline=10.0, reconcile_grace=0.2, backoff_max=0.5)
    async with (
        RawGateway(on_pay=pay, on_status=status) as gateway,
        FreedomPayClient(
            "123456", "not-a-real-secret", base_url=gateway.url, retry=policy, rng=random.Random(3)
        ) as client,
    ):
        start = time.monotonic()
        payment = await client.pay_invoice(customer="c1", user_id="u", card_token="t")
        took = time.monotonic() - start
    assert payment.invoice_status is InvoiceStatus.OK
    assert gateway.charges["c1"] == 1
    # More failed reads than the policy's attempts, spread over the outage, within the deadline.
    assert gateway.requests["status"] > policy.attempts
    assert outage <= took < policy.deadline


class _Stop(Exception):
    """Raised from `on_progress` to stop a batch while it waits."""


async def test_stopping_a_batch_that_waits_for_the_gateway_leaves_nothing_behind(
    emulator: FreedomPayEmulator, make_client: ClientFactory
) -> None:
    """A batch stopped while it holds pays and probes ends its tasks at once and charges nobody."""
    customers = emulator.create_invoices(50)
    emulator.inject(Fault.http_status(503), operation="pay", times=10_000)

    def stop_when_held(progress: BatchProgress) -> None:
        if progress.waiting_for_gateway and progress.held >= 3:
            raise _Stop

    async with make_client(retry=POLICY) as client:

        async def drain() -> None:
            async with contextlib.aclosing(
                client.pay_invoices(_requests(customers), concurrency=8, on_progress=stop_when_held)
            ) as outcomes:
                async for _ in outcomes:
                    pass

        with pytest.raises(_Stop):
            await drain()
        leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith(TASK_NAME_PREFIX)]
        assert [t for t in leftovers if not t.done()] == []
        assert client._transport.gate.in_use == 0
    assert sum(emulator.charges(c) for c in customers) == 0
    assert emulator.stats.by_operation["pay"] <= 8 * POLICY.attempts
