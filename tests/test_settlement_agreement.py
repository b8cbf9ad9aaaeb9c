"""The client's reconcile, the Redis guard's reclaim and a resume-style caller agree via settle().

For the same history — a pay that may have landed, then one status read `age` seconds after its
last possible write — each of the three answers whether the invoice is settled, still moving,
proven unpaid (pay it once) or in doubt, under the same window.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator

import pytest

pytest.importorskip("redis", reason="the 'arq' extra (redis) is not installed")

from redis.asyncio import Redis
from redis_server import RedisServer

from freedompay_async import InvoicePayment, InvoiceStatus, PollPolicy, ReadTimeout, RetryPolicy
from freedompay_async._call import Act, Call
from freedompay_async._protocol import Operation
from freedompay_async.contrib.redis_guard import RedisPayGuard
from freedompay_async.settlement import SettlePolicy, Verdict, settle

WINDOW = 0.3
YOUNG, OLD = 0.05, 0.6
CASES = [
    (status, window, age)
    for status in InvoiceStatus
    for window in (None, WINDOW)
    for age in (YOUNG, OLD)
]


def _resume_style(status: InvoiceStatus, window: float | None, age: float) -> Verdict:
    """What a resume caller asks: the outcome file says when the last pay could be written."""
    policy = SettlePolicy(new_proves_not_landed_after=window)
    return settle(status, read_at=100.0 + age, last_write_at=100.0, policy=policy)


def _client(status: InvoiceStatus, window: float | None, age: float) -> Verdict:
    """The client's call: a pay times out, then its reconcile reads *status* at *age*."""
    call = Call(
        Operation.PAY,
        policy=RetryPolicy(
            deadline=60.0, reconcile_grace=window or 0.1, resend_pay_if_new=window is not None
        ),
        now=0.0,
        rng=random.Random(3),
        context={"customer": "c1"},
        wait=True,
        poll=PollPolicy(),
    )
    assert call.next_step(0.0) is Act.SEND
    call.record(ReadTimeout("no reply"), now=1.0)
    assert call.next_step(1.0) is Act.SLEEP
    call.woke()
    assert call.next_step(1.0 + age) is Act.ASK_STATUS
    call.record(InvoicePayment(invoice_status=status), now=1.0 + age)
    act = call.next_step(1.0 + age)
    if act is Act.SEND:
        return Verdict.NOT_LANDED
    if act is Act.DONE:
        return Verdict.SETTLED
    if act is Act.SLEEP:  # polling a payment still moving
        return Verdict.PENDING
    return Verdict.IN_DOUBT


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """One real redis-server for the module."""
    with RedisServer.running() as server:
        yield server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client on an emptied database."""
    client = Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


async def _guard_verdicts(redis: Redis) -> dict[tuple[InvoiceStatus, float | None, float], Verdict]:
    """Run every case through RedisPayGuard: finish ambiguous, wait *age*, reclaim."""
    verdicts: dict[tuple[InvoiceStatus, float | None, float], Verdict] = {}
    guards: dict[float | None, RedisPayGuard] = {}
    for window in (None, WINDOW):
        guards[window] = RedisPayGuard(
            redis,
            "m1",
            namespace=f"w{window}".replace(".", "_"),
            settle_policy=SettlePolicy(new_proves_not_landed_after=window),
        )
    customers = {case: f"c{n}" for n, case in enumerate(CASES)}
    by_customer = {customer: case for case, customer in customers.items()}

    async def status_of(customer: str) -> InvoicePayment:
        return InvoicePayment(invoice_status=by_customer[customer][0])

    for guard in guards.values():
        guard.set_settle_hook(status_of)
    for (_, window, _), customer in customers.items():
        assert (await guards[window].claim(customer)).granted
        await guards[window].finish(customer, state="ambiguous")
    for age, wait in ((YOUNG, YOUNG), (OLD, OLD - YOUNG)):
        await asyncio.sleep(wait)
        for (status, window, case_age), customer in customers.items():
            if case_age != age:
                continue
            claim = await guards[window].claim(customer)
            if claim.granted:
                verdict = Verdict.NOT_LANDED
                await guards[window].finish(customer, state="paid")
            elif claim.kind == "landed":
                verdict = Verdict.PENDING if claim.prior_state == "pending" else Verdict.SETTLED
            else:
                assert claim.kind == "unsettled", claim
                verdict = Verdict.IN_DOUBT
            verdicts[status, window, age] = verdict
    for guard in guards.values():
        await guard.aclose()
    return verdicts


async def test_client_guard_and_resume_answer_alike_for_every_status_history(redis) -> None:
    """Each (status, window, age) gets one verdict from the client, the guard and resume alike."""
    guard = await _guard_verdicts(redis)
    for case in CASES:
        expected = _resume_style(*case)
        assert _client(*case) is expected, ("client", case)
        assert guard[case] is expected, ("guard", case)
    # the table is not trivial: every verdict occurs
    assert {_resume_style(*case) for case in CASES} == set(Verdict)
