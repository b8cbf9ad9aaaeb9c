"""The Redis guard and rate limiter, against a real redis-server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import bisect
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

pytest.importorskip("redis", reason="the 'arq' extra (redis) is not installed")

from redis.asyncio import Redis
from redis_server import RedisServer

from freedompay_async import (
    ConfigurationError,
    DuplicatePayError,
    InvoicePayment,
    InvoiceStatus,
    PoolTimeout,
)
from freedompay_async.contrib.redis_guard import (
    RedisPayGuard,
    RedisRateLimiter,
    settle_by_status,
    state_of_status,
)
from freedompay_async.settlement import SettlePolicy
from freedompay_async.testing import FreedomPayEmulator

#: A status-read window of 0 s: a status of new proves at once that an earlier pay never landed
#: (the opt-in; by default new proves nothing).
NEW_IS_PROOF = SettlePolicy(new_proves_not_landed_after=0.0)


def _status(status: InvoiceStatus) -> InvoicePayment:
    return InvoicePayment(invoice_status=status)


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


@pytest.fixture
async def connections(redis_url: str) -> AsyncIterator[list[Redis]]:
    """Separate clients (own connection pools), one per simulated worker."""
    clients = [Redis.from_url(redis_url) for _ in range(8)]
    yield clients
    for client in clients:
        await client.aclose()


async def _wait_until(predicate, within: float) -> float:
    """Poll an async predicate every 20 ms until it holds; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if await predicate():
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    pytest.fail(f"condition not met within {within}s")


# -- claims ---------------------------------------------------------------------------------


async def test_many_concurrent_claimers_exactly_one_wins(redis, connections) -> None:
    """64 claimers on 8 connections race for each of 20 customers; exactly one wins each."""
    guards = [
        RedisPayGuard(connections[i % len(connections)], "m1", owner=f"w{i}") for i in range(64)
    ]
    customers = [f"cust-{n}" for n in range(20)]
    try:
        for customer in customers:
            claims = await asyncio.gather(*(guard.claim(customer) for guard in guards))
            winners = [i for i, claim in enumerate(claims) if claim.granted]
            assert len(winners) == 1, customer
            assert all("in flight" in (c.reason or "") for c in claims if not c.granted)
            record = await guards[0].peek(customer)
            assert record.state == "claimed"
            assert record.holder is not None
            assert record.holder.startswith(f"w{winners[0]}:")
    finally:
        for guard in guards:
            await guard.aclose()


async def test_concurrent_claimers_in_separate_processes_one_wins(redis, redis_url) -> None:
    """Four OS processes with 16 claimers each race for 30 customers; one claim per customer."""
    script = (
        "import asyncio, sys\n"
        "from redis.asyncio import Redis\n"
        "from freedompay_async.contrib.redis_guard import RedisPayGuard\n"
        "async def main():\n"
        "    clients = [Redis.from_url(sys.argv[1]) for _ in range(4)]\n"
        "    guards = [RedisPayGuard(clients[i % 4], 'm1', owner=sys.argv[2]) for i in range(16)]\n"
        "    await clients[0].blpop(['go'], timeout=10)\n"
        "    won = 0\n"
        "    for n in range(30):\n"
        "        got = await asyncio.gather(*(g.claim(f'c{n}') for g in guards))\n"
        "        won += sum(r.granted for r in got)\n"
        "    print(won, flush=True)\n"
        "    for g in guards:\n"
        "        await g.aclose()\n"
        "asyncio.run(main())\n"
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, redis_url, f"p{n}", stdout=asyncio.subprocess.PIPE
        )
        for n in range(4)
    ]
    try:
        await asyncio.sleep(1.0)  # let every process connect and block on the start signal
        await redis.rpush("go", *["x"] * 4)
        outputs = await asyncio.wait_for(
            asyncio.gather(*(proc.communicate() for proc in procs)), timeout=30
        )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0]
    assert sum(int(out.strip()) for out, _ in outputs) == 30
    guard = RedisPayGuard(redis, "m1")
    for n in range(30):
        assert (await guard.peek(f"c{n}")).state == "claimed"


async def test_finish_paid_is_remembered_and_refuses_every_later_claim(redis, connections) -> None:
    """After finish(paid), claims from any worker are refused and name the state."""
    first = RedisPayGuard(connections[0], "m1")
    second = RedisPayGuard(connections[1], "m1")
    assert (await first.claim("c1")).granted
    await first.finish("c1", state="paid")
    refusal = await second.claim("c1")
    assert not refusal.granted
    assert refusal.prior_state == "paid"
    assert "state=paid" in (refusal.reason or "")
    record = await second.peek("c1")
    assert record.state == "paid"
    assert record.holder is None
    ttl = await redis.pttl(f"{first.prefix}{{c1}}:state")
    assert ttl > 29 * 86400 * 1000


@pytest.mark.parametrize("state", ["failed", "expired"])
async def test_every_terminal_state_refuses_later_claims(redis, state) -> None:
    """States failed and expired are terminal too: the same customer is never claimed again."""
    guard = RedisPayGuard(redis, "m1")
    assert (await guard.claim("c1")).granted
    await guard.finish("c1", state=state)
    claim = await guard.claim("c1")
    assert not claim.granted
    assert (claim.kind, claim.prior_state) == ("settled", state)


async def test_finish_error_releases_the_claim_for_a_fresh_pay(redis, connections) -> None:
    """state=error means nothing was charged: the claim and its record go, a new claim is fresh."""
    first = RedisPayGuard(connections[0], "m1")
    second = RedisPayGuard(connections[1], "m1")
    assert (await first.claim("c1")).granted
    await first.finish("c1", state="error")
    record = await second.peek("c1")
    assert (record.state, record.holder) == (None, None)
    claim = await second.claim("c1")
    assert claim.granted
    assert claim.kind == "fresh"
    await second.aclose()


async def test_a_held_claim_is_refused_and_kept_alive_by_the_heartbeat(redis, connections) -> None:
    """A claim outlives its TTL while its holder beats; others are refused as busy meanwhile."""
    holder = RedisPayGuard(connections[0], "m1", claim_ttl=0.4, heartbeat=0.1)
    other = RedisPayGuard(connections[1], "m1", claim_ttl=0.4)
    assert (await holder.claim("c1")).granted
    await asyncio.sleep(1.2)  # three TTLs
    refusal = await other.claim("c1")
    assert not refusal.granted
    assert refusal.kind == "busy"
    record = await other.peek("c1")
    assert record.claim_ttl is not None
    assert 0 < record.claim_ttl <= 0.4
    await holder.finish("c1", state="paid")
    assert (await other.peek("c1")).holder is None


async def test_a_stuck_pay_stops_renewing_after_max_hold(redis) -> None:
    """Past max_hold the heartbeat stops, so the claim of a stuck pay expires."""
    guard = RedisPayGuard(redis, "m1", claim_ttl=0.3, heartbeat=0.1, max_hold=0.5)
    assert (await guard.claim("c1")).granted
    assert (await guard.peek("c1")).holder is not None
    elapsed = await _wait_until(lambda: _no_holder(guard, "c1"), within=3.0)
    assert 0.5 <= elapsed <= 1.5
    await guard.aclose()


async def _no_holder(guard: RedisPayGuard, customer: str) -> bool:
    return (await guard.peek(customer)).holder is None


async def test_a_dead_workers_claim_expires_and_the_next_claimer_settles_first(
    redis, redis_url
) -> None:
    """A SIGKILLed process's claim expires after claim_ttl; the next claim asks status first."""
    script = (
        "import asyncio, sys\n"
        "from redis.asyncio import Redis\n"
        "from freedompay_async.contrib.redis_guard import RedisPayGuard\n"
        "async def main():\n"
        "    guard = RedisPayGuard(Redis.from_url(sys.argv[1]), 'm1', claim_ttl=1.0,\n"
        "                          owner='doomed')\n"
        "    assert (await guard.claim('c1')).granted\n"
        "    print('claimed', flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, redis_url, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=15)
        assert line.strip() == b"claimed"
        settled: list[str] = []

        async def settle(customer: str) -> InvoicePayment:
            settled.append(customer)
            return _status(InvoiceStatus.OK)  # the dead worker's pay had landed

        guard = RedisPayGuard(redis, "m1", claim_ttl=1.0, settle=settle)
        await asyncio.sleep(2.0)  # two TTLs: the live process keeps renewing
        record = await guard.peek("c1")
        assert record.holder is not None
        assert record.holder.startswith("doomed:")
        assert "in flight" in ((await guard.claim("c1")).reason or "")
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        expired_after = await _wait_until(lambda: _no_holder(guard, "c1"), within=3.0)
        assert expired_after <= 1.2
        assert settled == []
        refusal = await guard.claim("c1")
        assert settled == ["c1"]
        assert not refusal.granted
        assert "ended as paid" in (refusal.reason or "")
        assert (refusal.kind, refusal.prior_state) == ("landed", "paid")
        assert refusal.payment is not None
        record = await guard.peek("c1")
        assert (record.state, record.holder) == ("paid", None)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_an_expired_claim_is_paid_when_new_is_proof(redis, connections) -> None:
    """With new as proof (window 0), a crashed claim whose status reads new may be paid again."""
    crashed = RedisPayGuard(connections[0], "m1", claim_ttl=0.2, heartbeat=0)
    assert (await crashed.claim("c1")).granted  # and never finishes
    calls: list[str] = []

    async def settle(customer: str) -> InvoicePayment:
        calls.append(customer)
        return _status(InvoiceStatus.NEW)

    survivor = RedisPayGuard(
        connections[1], "m1", claim_ttl=5.0, settle=settle, settle_policy=NEW_IS_PROOF
    )
    assert not (await survivor.claim("c1")).granted  # still held
    await _wait_until(lambda: _no_holder(survivor, "c1"), within=2.0)
    claim = await survivor.claim("c1")
    assert claim.granted
    assert calls == ["c1"]
    assert (claim.kind, claim.prior_state) == ("reclaimed", "claimed")
    # the crashed worker's late finish must not release the survivor's claim
    await crashed.finish("c1", state="error")
    record = await survivor.peek("c1")
    assert record.holder is not None
    assert record.holder.startswith(survivor._owner)
    await survivor.finish("c1", state="paid")
    assert (await survivor.peek("c1")).state == "paid"


async def test_without_a_settle_hook_a_customer_in_doubt_is_refused(redis) -> None:
    """No hook: an expired claim or a pending outcome is refused and the doubt is kept."""
    guard = RedisPayGuard(redis, "m1")
    assert (await guard.claim("c1")).granted
    await guard.finish("c1", state="pending")
    refusal = await guard.claim("c1")
    assert not refusal.granted
    assert "invoice_status(customer='c1')" in (refusal.reason or "")
    assert (refusal.kind, refusal.prior_state) == ("unsettled", "pending")
    record = await guard.peek("c1")
    assert (record.state, record.holder) == ("pending", None)
    await guard.forget("c1")
    assert (await guard.claim("c1")).granted
    await guard.aclose()


@pytest.mark.parametrize("doubt", ["pending", "ambiguous"])
async def test_a_doubtful_state_is_settled_by_the_hook_before_paying(redis, doubt) -> None:
    """Pending and ambiguous outcomes are settled by status on the next claim, not paid blindly."""
    answers = iter([_status(InvoiceStatus.PROCESS), _status(InvoiceStatus.OK)])

    async def settle(_customer: str) -> InvoicePayment:
        return next(answers)

    guard = RedisPayGuard(redis, "m1", settle=settle)
    assert (await guard.claim("c1")).granted
    await guard.finish("c1", state=doubt)
    assert "ended as pending" in ((await guard.claim("c1")).reason or "")
    assert (await guard.peek("c1")).state == "pending"
    assert "ended as paid" in ((await guard.claim("c1")).reason or "")
    assert (await guard.peek("c1")).state == "paid"


async def test_a_failing_settle_hook_refuses_and_keeps_the_doubt(redis) -> None:
    """A status read that fails refuses the pay, releases the claim and keeps the record."""

    async def settle(_customer: str) -> InvoicePayment:
        raise ConnectionError("gateway down")

    guard = RedisPayGuard(redis, "m1", settle=settle)
    assert (await guard.claim("c1")).granted
    await guard.finish("c1", state="ambiguous")
    refusal = await guard.claim("c1")
    assert not refusal.granted
    assert "ConnectionError" in (refusal.reason or "")
    assert refusal.kind == "unsettled"
    record = await guard.peek("c1")
    assert (record.state, record.holder) == ("ambiguous", None)


async def test_a_claim_cancelled_while_settling_is_given_back(redis) -> None:
    """Cancelling a claim during its status read releases the claim and keeps the doubt."""
    started = asyncio.Event()

    async def settle(_customer: str) -> InvoicePayment:
        started.set()
        await asyncio.sleep(60)
        return _status(InvoiceStatus.NEW)

    guard = RedisPayGuard(redis, "m1", settle=settle)
    assert (await guard.claim("c1")).granted
    await guard.finish("c1", state="pending")
    task = asyncio.create_task(guard.claim("c1"))
    await asyncio.wait_for(started.wait(), timeout=5)
    assert (await guard.peek("c1")).holder is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = await guard.peek("c1")
    assert (record.state, record.holder) == ("pending", None)
    assert guard._held == {}


async def test_keys_are_namespaced_per_merchant(redis) -> None:
    """The same customer token under two merchants gives two independent claims."""
    one = RedisPayGuard(redis, "m1")
    two = RedisPayGuard(redis, 777)
    assert (await one.claim("c1")).granted
    assert (await two.claim("c1")).granted
    keys = sorted(k.decode() for k in await redis.keys("*"))
    assert keys == [  # a fresh claim records no write time
        "freedompay:777:{c1}:claim",
        "freedompay:777:{c1}:state",
        "freedompay:m1:{c1}:claim",
        "freedompay:m1:{c1}:state",
    ]
    await one.aclose()
    await two.aclose()


async def test_finish_without_a_claim_is_ignored(redis) -> None:
    """A finish for a customer this guard never claimed changes nothing in Redis."""
    guard = RedisPayGuard(redis, "m1")
    await guard.finish("c1", state="paid")
    assert await redis.keys("*") == []


def test_invalid_options_are_refused() -> None:
    """Bad key parts, TTLs and heartbeats raise ConfigurationError before any Redis call."""
    client = Redis.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="merchant_id"):
        RedisPayGuard(client, "a:b")
    with pytest.raises(ConfigurationError, match="claim_ttl"):
        RedisPayGuard(client, "m1", claim_ttl=0)
    with pytest.raises(ConfigurationError, match="heartbeat"):
        RedisPayGuard(client, "m1", claim_ttl=1, heartbeat=2)
    with pytest.raises(ConfigurationError, match="rate"):
        RedisRateLimiter(client, "m1", rate=0)
    with pytest.raises(ConfigurationError, match="burst"):
        RedisRateLimiter(client, "m1", rate=1, burst=0)
    with pytest.raises(ConfigurationError, match="max_wait"):
        RedisRateLimiter(client, "m1", rate=1, max_wait=float("inf"))
    assert "secret" not in repr(RedisPayGuard(client, "m1"))


def test_status_maps_to_settle_states() -> None:
    """Status new may be paid; ok/failed/incomplete are terminal; anything else is pending."""
    expected = {
        InvoiceStatus.NEW: None,
        InvoiceStatus.OK: "paid",
        InvoiceStatus.FAILED: "failed",
        InvoiceStatus.INCOMPLETE: "expired",
        InvoiceStatus.PROCESS: "pending",
        InvoiceStatus.UNKNOWN: "pending",
    }
    for status, state in expected.items():
        assert state_of_status(InvoicePayment(invoice_status=status)) == state


# -- the guard with the real client ---------------------------------------------------------


async def test_two_clients_sharing_the_guard_charge_each_invoice_once(
    redis, connections, emulator: FreedomPayEmulator, make_client
) -> None:
    """Two clients (two workers) pay the same 50 invoices at once: one charge per invoice."""
    customers = emulator.create_invoices(50)
    clients = [
        make_client(guard=RedisPayGuard(connections[n], emulator.merchant_id)) for n in range(2)
    ]
    try:
        results = await asyncio.gather(
            *(
                client.pay_invoice(customer=c, user_id="u1", card_token="tok-0001")
                for c in customers
                for client in clients
            ),
            return_exceptions=True,
        )
    finally:
        for client in clients:
            await client.aclose()
    paid = [r for r in results if isinstance(r, InvoicePayment)]
    refused = [r for r in results if isinstance(r, DuplicatePayError)]
    assert len(paid) == 50
    assert len(refused) == 50
    assert all(p.invoice_status is InvoiceStatus.OK for p in paid)
    assert all(emulator.charges(c) == 1 for c in customers)
    assert emulator.double_charged() == []


async def test_settle_by_status_never_pays_a_crashed_workers_landed_pay(
    redis, connections, emulator: FreedomPayEmulator, make_client
) -> None:
    """A worker claims and pays, then dies before finish: the next worker reads paid, not pays."""
    landed, lost = emulator.create_invoices(2)
    crashed_guard = RedisPayGuard(connections[0], emulator.merchant_id, claim_ttl=0.2, heartbeat=0)
    dead = make_client(guard=crashed_guard)
    try:
        for customer in (landed, lost):
            assert (await crashed_guard.claim(customer)).granted  # claimed, then "crashed":
        async with make_client() as bypass:  # ... but the first pay had already landed
            await bypass.pay_invoice(customer=landed, user_id="u1", card_token="tok-0001")
    finally:
        await dead.aclose()
    seen: list[InvoicePayment] = []
    guard = RedisPayGuard(connections[1], emulator.merchant_id)
    async with make_client(guard=guard) as client:
        guard.set_settle_hook(settle_by_status(client, on_payment=lambda _c, p: seen.append(p)))
        await _wait_until(lambda: _no_holder(guard, landed), within=2.0)
        with pytest.raises(DuplicatePayError, match="ended as paid"):
            await client.pay_invoice(customer=landed, user_id="u1", card_token="tok-0001")
        # new does not prove that the dead worker's pay never landed: refused by default
        with pytest.raises(DuplicatePayError, match="may still land") as refused:
            await client.pay_invoice(customer=lost, user_id="u1", card_token="tok-0001")
    assert refused.value.claim is not None
    assert refused.value.claim.kind == "unsettled"
    assert emulator.charges(lost) == 0
    opted_in = RedisPayGuard(connections[2], emulator.merchant_id, settle_policy=NEW_IS_PROOF)
    async with make_client(guard=opted_in) as client:
        opted_in.set_settle_hook(settle_by_status(client, on_payment=lambda _c, p: seen.append(p)))
        payment = await client.pay_invoice(customer=lost, user_id="u1", card_token="tok-0001")
    assert payment.invoice_status is InvoiceStatus.OK
    assert [p.invoice_status for p in seen] == [
        InvoiceStatus.OK,
        InvoiceStatus.NEW,
        InvoiceStatus.NEW,
    ]
    assert emulator.charges(landed) == 1
    assert emulator.charges(lost) == 1
    assert (await guard.peek(landed)).state == "paid"
    assert (await guard.peek(lost)).state == "paid"


async def test_a_finished_doubt_reads_new_as_proof_only_after_the_window(redis) -> None:
    """An ambiguous pay whose status lags at new is paid again only once the window has passed."""
    reads: list[str] = []

    async def settle(customer: str) -> InvoicePayment:
        reads.append(customer)
        return _status(InvoiceStatus.NEW)

    window = SettlePolicy(new_proves_not_landed_after=0.5)
    guard = RedisPayGuard(redis, "m1", settle=settle, settle_policy=window)
    assert (await guard.claim("c1")).granted
    await guard.finish("c1", state="ambiguous")
    early = await guard.claim("c1")
    assert (early.granted, early.kind, early.prior_state) == (False, "unsettled", "ambiguous")
    assert (await guard.peek("c1")).state == "ambiguous"
    await asyncio.sleep(0.6)
    late = await guard.claim("c1")
    assert (late.granted, late.kind) == (True, "reclaimed")
    assert reads == ["c1", "c1"]
    await guard.finish("c1", state="paid")
    await guard.aclose()


# -- rate limiter ---------------------------------------------------------------------------


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(bisect.bisect_left(times, t + window) - i for i, t in enumerate(times))


async def test_the_shared_bucket_holds_the_rate_across_workers(redis, connections) -> None:
    """Four limiters on four connections share 100/s (burst 5): 205 starts take 2.0 s ±10%."""
    limiters = [RedisRateLimiter(connections[n], "m1", rate=100, burst=5) for n in range(4)]
    grants: list[float] = []

    async def worker(limiter: RedisRateLimiter, count: int) -> None:
        for _ in range(count):
            await limiter.acquire()
            grants.append(time.monotonic())

    start = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(worker(limiters[n % 4], 41) for n in range(5))), timeout=10
    )
    elapsed = time.monotonic() - start
    assert len(grants) == 205
    assert 1.8 <= elapsed <= 2.2, elapsed
    assert _max_in_window(grants, 1.0) <= 100 + 5 + 1


async def test_each_merchant_has_its_own_bucket(redis) -> None:
    """Two merchants at 20/s each, burst 1: 20 starts each finish in about one second together."""
    one = RedisRateLimiter(redis, "m1", rate=20)
    two = RedisRateLimiter(redis, "m2", rate=20)
    start = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for limiter in (one, two) for _ in range(21)))
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed <= 1.3, elapsed
    assert "rate=20" in repr(one)
    assert (one.rate, one.burst) == (20.0, 1)


async def test_a_wait_beyond_max_wait_raises_pool_timeout(redis) -> None:
    """At 2/s with a 0.3 s max_wait, the second request is refused as PoolTimeout, not sent."""
    limiter = RedisRateLimiter(redis, "m1", rate=2, max_wait=0.3)
    await limiter.acquire()
    start = time.monotonic()
    with pytest.raises(PoolTimeout, match="no request slot"):
        await limiter.acquire()
    assert 0.25 <= time.monotonic() - start <= 0.8


async def test_an_idle_bucket_refills_only_up_to_burst(redis) -> None:
    """After an idle spell only `burst` requests start at once; the next waits 1/rate."""
    limiter = RedisRateLimiter(redis, "m1", rate=10, burst=3)
    for _ in range(6):  # drain the bucket and queue behind it
        await limiter.acquire()
    await asyncio.sleep(0.6)  # refills 6 tokens' worth, kept to 3
    start = time.monotonic()
    for _ in range(3):
        await limiter.acquire()
    assert time.monotonic() - start < 0.05
    await limiter.acquire()
    assert 0.07 <= time.monotonic() - start <= 0.2
