"""`FreedomPayClient.pay_invoices` against the emulator over loopback: counts, bounds, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import warnings
from collections import Counter
from collections.abc import Callable, Iterator

from freedompay_async import (
    DuplicatePayError,
    FreedomPayClient,
    PayOutcome,
    PayRequest,
)
from freedompay_async._batch import TASK_NAME_PREFIX
from freedompay_async.testing import Fate, Fault, FreedomPayEmulator, VirtualClock

ClientFactory = Callable[..., FreedomPayClient]


def leftover_batch_tasks() -> list[asyncio.Task[object]]:
    """Return unfinished tasks that a batch created."""
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith(TASK_NAME_PREFIX) and not task.done()
    ]


def assert_no_connection_in_use(client: FreedomPayClient) -> None:
    """Check that the client holds no gate slot, no queued waiter and no checked-out socket."""
    transport = client._transport
    assert transport.gate.in_use == 0
    assert transport.gate.waiting == 0
    session = transport._session
    assert session is not None
    connector = session.connector
    assert connector is not None
    assert len(connector._acquired) == 0


def requests_for(customers: list[str]) -> Iterator[PayRequest]:
    """Yield one request per customer, each with its own card token."""
    for number, customer in enumerate(customers):
        yield PayRequest(
            customer=customer, user_id=f"user-{number}", card_token=f"card-{number:06d}", key=number
        )


async def test_ten_thousand_requests_yield_the_scripted_outcomes(
    emulator: FreedomPayEmulator, make_client: ClientFactory
) -> None:
    """10,000 requests yield 10,000 outcomes with the scripted counts, at most 64 in flight."""
    scripted = [
        (7000, Fate.paid()),
        (800, Fate.pending_then_paid(polls=1)),
        (1000, Fate.declined(51)),
        (300, Fate.pending_then_failed(polls=1)),
        (500, Fate.expired()),
        (400, Fate.gateway_error(600)),
    ]
    customers = [c for count, fate in scripted for c in emulator.create_invoices(count, fate=fate)]
    random.Random(5).shuffle(customers)
    # A short real delay before the first 1,000 pays are processed lets requests overlap at the
    # server, so its in-flight count shows what the batch allows (the gate would allow 256).
    emulator.inject(Fault.delay(0.002, after_commit=False), operation="pay", times=1000)
    seen: Counter[str] = Counter()
    states: Counter[str] = Counter()
    # The 10,000 invoices are long-lived: keep full collections from rescanning them all the time.
    gc.collect()
    gc.freeze()
    try:
        # JSON bodies: the emulator parses them faster than multipart; the batch is the subject.
        async with make_client(max_concurrency=256, body_format="json") as client:
            async with contextlib.aclosing(
                client.pay_invoices(requests_for(customers), concurrency=64)
            ) as outcomes:
                async for outcome in outcomes:
                    seen[outcome.request.customer] += 1
                    states[outcome.state] += 1
            assert_no_connection_in_use(client)
    finally:
        gc.unfreeze()
    assert sum(seen.values()) == 10_000
    assert set(seen) == set(customers)
    assert max(seen.values()) == 1
    assert states == {"paid": 7800, "failed": 1300, "expired": 500, "error": 400}
    stats = emulator.stats
    assert 32 <= stats.max_in_flight <= 64
    assert stats.committed_pays == 7000 + 800 + 1000 + 300
    assert stats.double_charges == 0
    assert stats.by_operation["pay"] == 10_000


async def test_concurrency_bounds_the_requests_in_flight(
    emulator: FreedomPayEmulator, make_client: ClientFactory
) -> None:
    """With concurrency 4 on a client allowing 64, the gateway never sees more than 4 at once."""
    customers = emulator.create_invoices(300, fate=Fate.pending_then_paid(polls=2))
    emulator.inject(Fault.delay(0.001, after_commit=False), operation="*", times=1200)
    async with make_client(max_concurrency=64) as client:
        outcomes = [o async for o in client.pay_invoices(requests_for(customers), concurrency=4)]
    assert len(outcomes) == 300
    assert {o.state for o in outcomes} == {"paid"}
    assert 2 <= emulator.stats.max_in_flight <= 4


async def test_the_same_customer_twice_in_a_batch_is_paid_once() -> None:
    """A duplicate customer is refused with a DuplicatePayError; the gateway charged once."""
    async with FreedomPayEmulator(seed=3, adversarial=True) as emu:
        twice, other = emu.create_invoices(2, fate=Fate.paid())
        batch = [
            PayRequest(customer=twice, user_id="u1", card_token="card-0001", key="first"),
            PayRequest(customer=other, user_id="u2", card_token="card-0002", key="other"),
            PayRequest(customer=twice, user_id="u1", card_token="card-0001", key="again"),
        ]
        async with FreedomPayClient(
            emu.merchant_id, emu.secret_key, base_url=emu.base_url, clock=VirtualClock()
        ) as client:
            outcomes = [o async for o in client.pay_invoices(batch, concurrency=3)]
        assert len(outcomes) == 3
        for_twice = [o for o in outcomes if o.request.customer == twice]
        assert sorted(o.state for o in for_twice) == ["error", "paid"]
        refused = next(o for o in for_twice if o.state == "error")
        assert isinstance(refused.error, DuplicatePayError)
        assert "already" in str(refused.error)
        assert refused.attempts == 0
        assert emu.charges(twice) == 1
        assert emu.charges(other) == 1
        assert emu.double_charged() == []


async def test_a_duplicate_of_an_earlier_batch_is_refused(
    emulator: FreedomPayEmulator, make_client: ClientFactory
) -> None:
    """A customer paid by an earlier batch on the same client is refused and not sent again."""
    (customer,) = emulator.create_invoices(1)
    async with make_client() as client:
        first = [o async for o in client.pay_invoices(requests_for([customer]))]
        again = [o async for o in client.pay_invoices(requests_for([customer]))]
    assert [o.state for o in first] == ["paid"]
    assert [o.state for o in again] == ["error"]
    assert isinstance(again[0].error, DuplicatePayError)
    assert emulator.stats.by_operation["pay"] == 1


async def test_breaking_early_leaves_no_task_connection_or_warning(
    emulator: FreedomPayEmulator, make_client: ClientFactory
) -> None:
    """Leaving `async with aclosing(...)` after 50 outcomes frees every slot, socket and task."""
    customers = emulator.create_invoices(2000, fate=Fate.pending_then_paid(polls=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with make_client() as client:
            count = 0
            async with contextlib.aclosing(
                client.pay_invoices(requests_for(customers), concurrency=32)
            ) as outcomes:
                async for _ in outcomes:
                    count += 1
                    if count == 50:
                        break
            assert leftover_batch_tasks() == []
            assert_no_connection_in_use(client)
            pays = emulator.stats.by_operation["pay"]
            await asyncio.sleep(0.05)
            assert emulator.stats.by_operation["pay"] == pays < 50 + 32 + 32
        del client
        gc.collect()
    assert [str(w.message) for w in caught] == []


async def test_cancelling_the_consumer_leaves_no_task_or_connection(
    emulator: FreedomPayEmulator, make_client: ClientFactory
) -> None:
    """Cancelling the task iterating pay_invoices stops the workers and frees every socket."""
    customers = emulator.create_invoices(2000)
    got_some = asyncio.Event()

    async def consume(client: FreedomPayClient) -> list[PayOutcome]:
        seen: list[PayOutcome] = []
        async for outcome in client.pay_invoices(requests_for(customers), concurrency=16):
            seen.append(outcome)
            if len(seen) == 40:
                got_some.set()
        return seen

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with make_client() as client:
            task = asyncio.create_task(consume(client))
            await got_some.wait()
            task.cancel()
            cancelled = False
            try:
                await task
            except asyncio.CancelledError:
                cancelled = True
            assert cancelled
            assert leftover_batch_tasks() == []
            assert_no_connection_in_use(client)
        del client
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert emulator.stats.double_charges == 0
    assert emulator.stats.by_operation["pay"] < 2000
