"""The batch engine with a fake `pay_one`: laziness, streaming, back-pressure, errors, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
import warnings
from collections.abc import AsyncIterator, Iterator

import pytest

from freedompay_async import (
    AmbiguousPaymentError,
    BatchProgress,
    ConfigurationError,
    GatewayError,
    InvoicePayment,
    InvoiceStatus,
    PaymentPending,
    PayOutcome,
    PayRequest,
)
from freedompay_async._batch import (
    STATES,
    TASK_NAME_PREFIX,
    BatchSummary,
    SummaryBuilder,
    run_batch,
)

PAID = InvoicePayment(invoice_status=InvoiceStatus.OK)


def request(number: int) -> PayRequest:
    """Build the request numbered *number*."""
    return PayRequest(customer=f"c-{number}", user_id="u-1", card_token="tok-0001", key=number)


class Source:
    """A sync request generator that counts how many items were taken from it."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.taken = 0

    def __iter__(self) -> Iterator[PayRequest]:
        for number in range(self.count):
            self.taken += 1
            yield request(number)


class AsyncSource:
    """An async request generator that counts how many items were taken from it."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[PayRequest]:
        for number in range(self.count):
            await asyncio.sleep(0)
            self.taken += 1
            yield request(number)


class FakePayer:
    """A `pay_one` that pays after a few loop turns and records concurrency."""

    def __init__(self, *, turns: int = 2) -> None:
        self.turns = turns
        self.calls = 0
        self.active = 0
        self.max_active = 0

    async def __call__(self, item: PayRequest) -> PayOutcome:
        self.calls += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            for _ in range(self.turns + hash(item.customer) % 3):
                await asyncio.sleep(0)
        finally:
            self.active -= 1
        return PayOutcome(request=item, payment=PAID, attempts=1, elapsed=0.01)


async def drain(batch: AsyncIterator[PayOutcome], sink: list[PayOutcome]) -> None:
    """Collect every outcome of *batch* into *sink*."""
    async for item in batch:
        sink.append(item)  # noqa: PERF401 - keeps what arrived before an exception


def batch_tasks() -> list[asyncio.Task[object]]:
    """Return the tasks a batch created that have not finished."""
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith(TASK_NAME_PREFIX) and not task.done()
    ]


async def test_every_input_yields_exactly_one_outcome() -> None:
    """A batch of 1,000 requests yields 1,000 outcomes, one per request, all paid."""
    payer = FakePayer()
    keys = [o.request.key async for o in run_batch(Source(1000), pay_one=payer, concurrency=16)]
    assert sorted(keys) == list(range(1000))  # type: ignore[type-var]
    assert payer.calls == 1000
    assert payer.max_active == 16
    assert batch_tasks() == []


async def test_empty_input_yields_nothing() -> None:
    """An empty input ends the batch at once without calling pay_one."""
    payer = FakePayer()
    outcomes = [o async for o in run_batch([], pay_one=payer, concurrency=4)]
    assert outcomes == []
    assert payer.calls == 0
    assert batch_tasks() == []


@pytest.mark.parametrize("concurrency", [1, 3, 32])
@pytest.mark.parametrize("kind", ["sync", "async"], ids=["sync-source", "async-source"])
async def test_input_is_read_lazily(kind: str, concurrency: int) -> None:
    """The input is never read more than `concurrency` + 1 items ahead of what was yielded."""
    source: Source | AsyncSource = Source(300) if kind == "sync" else AsyncSource(300)
    yielded = 0
    worst = 0
    async for _ in run_batch(source, pay_one=FakePayer(), concurrency=concurrency):
        yielded += 1
        worst = max(worst, source.taken - yielded)
        for _ in range(3):
            await asyncio.sleep(0)  # give the workers and the feeder every chance to run ahead
    assert yielded == 300
    assert worst <= concurrency + 1
    assert worst >= min(concurrency, 2) - 1  # it does read ahead, up to the bound


async def test_slow_consumer_stops_the_workers() -> None:
    """A consumer that stops reading leaves at most `concurrency` outcomes paid and waiting."""
    payer = FakePayer(turns=0)
    source = Source(1000)
    batch = run_batch(source, pay_one=payer, concurrency=8)
    async with contextlib.aclosing(batch):
        await anext(batch)
        for _ in range(50):
            await asyncio.sleep(0)
        assert payer.calls <= 1 + 8
        assert source.taken <= 1 + 8
        assert payer.active == 0  # everyone waits for room, nobody is paying
    assert batch_tasks() == []


async def test_concurrency_bounds_the_parallel_pays() -> None:
    """No more than `concurrency` pay_one calls run at the same time."""
    payer = FakePayer(turns=5)
    count = 0
    async for _ in run_batch(Source(500), pay_one=payer, concurrency=5):
        count += 1
    assert count == 500
    assert payer.max_active == 5


async def test_progress_is_reported_before_each_yield() -> None:
    """on_progress sees done counting up with each outcome, and consistent counters."""
    reports: list[BatchProgress] = []
    ticks = iter(range(10_000))

    def monotonic() -> float:
        return float(next(ticks))

    async for outcome in run_batch(
        Source(50),
        pay_one=FakePayer(),
        concurrency=4,
        on_progress=reports.append,
        monotonic=monotonic,
    ):
        assert reports[-1].done == len(reports)
        assert outcome.state == "paid"
    assert [r.done for r in reports] == list(range(1, 51))
    for report in reports:
        assert report.done <= report.submitted <= 50
        assert 0 <= report.in_flight <= 4
        assert report.by_state["paid"] == report.done
        assert set(report.by_state) == set(STATES)
    assert reports[-1].submitted == 50
    assert [r.elapsed for r in reports] == sorted(r.elapsed for r in reports)
    assert reports[0].elapsed > 0


async def test_progress_callback_errors_propagate_and_stop_the_batch() -> None:
    """An exception raised by on_progress reaches the consumer and leaves no task running."""

    def explode(progress: BatchProgress) -> None:
        if progress.done == 3:
            raise LookupError("progress sink broke")

    batch = run_batch(Source(100), pay_one=FakePayer(), concurrency=4, on_progress=explode)
    with pytest.raises(LookupError, match="progress sink broke"):
        await drain(batch, [])
    assert batch_tasks() == []


async def test_a_bug_in_pay_one_stops_the_batch_and_propagates_unwrapped() -> None:
    """A non-FreedomPayError from pay_one is raised as is, and every worker is stopped."""
    bug = RuntimeError("a bug in pay_one")
    payer = FakePayer()

    async def pay_one(item: PayRequest) -> PayOutcome:
        if item.key == 20:
            raise bug
        return await payer(item)

    seen: list[PayOutcome] = []
    with pytest.raises(RuntimeError) as caught:
        await drain(run_batch(Source(10_000), pay_one=pay_one, concurrency=8), seen)
    assert caught.value is bug
    assert len(seen) < 100
    assert payer.calls < 100
    assert batch_tasks() == []


async def test_a_freedompay_error_from_pay_one_becomes_an_outcome() -> None:
    """A FreedomPayError escaping pay_one is the item's outcome; the rest of the batch goes on."""
    error = GatewayError("refused", error_code=600, error_description="General error")
    error.attempts = 1
    payer = FakePayer()

    async def pay_one(item: PayRequest) -> PayOutcome:
        if item.key == 5:
            raise error
        return await payer(item)

    outcomes = [o async for o in run_batch(Source(20), pay_one=pay_one, concurrency=4)]
    assert len(outcomes) == 20
    failed = [o for o in outcomes if o.request.key == 5]
    assert len(failed) == 1
    assert failed[0].error is error
    assert failed[0].state == "error"
    assert failed[0].attempts == 1
    assert sum(o.state == "paid" for o in outcomes) == 19


@pytest.mark.parametrize("kind", ["sync", "async"], ids=["sync-source", "async-source"])
async def test_an_input_error_propagates_after_the_items_taken_finish(kind: str) -> None:
    """An exception from the input is raised after the outcomes of every item already read."""

    def broken() -> Iterator[PayRequest]:
        for number in range(30):
            yield request(number)
        raise OSError("the input file went away")

    async def broken_async() -> AsyncIterator[PayRequest]:
        for item in broken():
            yield item

    source = broken() if kind == "sync" else broken_async()
    seen: list[PayOutcome] = []
    with pytest.raises(OSError, match="went away"):
        await drain(run_batch(source, pay_one=FakePayer(), concurrency=4), seen)
    assert sorted(o.request.key for o in seen) == list(range(30))  # type: ignore[type-var]
    assert batch_tasks() == []


async def test_breaking_out_of_aclosing_stops_every_task() -> None:
    """Leaving `async with aclosing(...)` early cancels the feeder and the workers at once."""
    payer = FakePayer(turns=3)
    source = Source(100_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with contextlib.aclosing(
            run_batch(source, pay_one=payer, concurrency=16)
        ) as outcomes:
            count = 0
            async for _ in outcomes:
                count += 1
                if count == 10:
                    break
        assert batch_tasks() == []
        assert payer.active == 0
        taken = source.taken
        for _ in range(20):
            await asyncio.sleep(0)
        assert source.taken == taken <= 10 + 16 + 1
        gc.collect()
    assert caught == []


async def test_a_pay_one_that_swallows_the_cancellation_cannot_hang_the_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A cancellation swallowed beneath pay_one still stops its worker; the outcome is logged."""
    started = asyncio.Event()

    async def stubborn(item: PayRequest) -> PayOutcome:
        started.set()
        # What a library beneath pay_one may do by mistake: swallow the cancellation.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return PayOutcome(request=item, error=None, attempts=1, elapsed=0.0)

    async with asyncio.timeout(5):
        async with contextlib.aclosing(
            run_batch([request(1)], pay_one=stubborn, concurrency=1)
        ) as outcomes:
            waiting = asyncio.ensure_future(anext(outcomes))
            await started.wait()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
    assert batch_tasks() == []
    assert any("c-1" in record.getMessage() for record in caplog.records)


async def test_cancelling_the_consumer_stops_every_task() -> None:
    """Cancelling the task that iterates the batch cancels its workers and propagates."""
    payer = FakePayer(turns=3)
    started = asyncio.Event()

    async def consume() -> int:
        count = 0
        async for _ in run_batch(Source(100_000), pay_one=payer, concurrency=16):
            count += 1
            if count == 25:
                started.set()
        return count

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert batch_tasks() == []
    assert payer.active == 0
    assert payer.calls < 1000


async def test_a_second_cancellation_during_cleanup_still_stops_the_workers() -> None:
    """The cleanup waits for the workers even when the consumer is cancelled twice."""

    class Stubborn(FakePayer):
        async def __call__(self, item: PayRequest) -> PayOutcome:
            try:
                return await super().__call__(item)
            except asyncio.CancelledError:
                await asyncio.sleep(0)  # cleanup that takes a few loop turns
                await asyncio.sleep(0)
                raise

    payer = Stubborn(turns=10)
    running = asyncio.Event()

    async def consume() -> None:
        async for _ in run_batch(Source(1000), pay_one=payer, concurrency=8):
            running.set()

    task = asyncio.create_task(consume())
    await running.wait()
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert batch_tasks() == []
    assert payer.active == 0


async def test_an_abandoned_iterator_is_closed_by_its_finaliser() -> None:
    """A batch left without aclose is cleaned up by asyncio's async-generator finaliser."""
    payer = FakePayer()

    async def consume_some() -> None:
        async for _ in run_batch(Source(1000), pay_one=payer, concurrency=4):
            break

    await consume_some()
    for _ in range(20):
        await asyncio.sleep(0)
        if not batch_tasks():
            break
    assert batch_tasks() == []


@pytest.mark.parametrize("value", [0, -1, True, 2.5, None])
async def test_concurrency_must_be_a_positive_integer(value: object) -> None:
    """A concurrency that is not an integer >= 1 is refused before anything runs."""
    with pytest.raises(ConfigurationError, match="concurrency"):
        await anext(run_batch([request(1)], pay_one=FakePayer(), concurrency=value))  # type: ignore[arg-type]


async def test_memory_stays_flat_over_100k_items() -> None:
    """Paying 100,000 lazily generated requests keeps the batch's peak allocation tiny."""

    async def pay_one(item: PayRequest) -> PayOutcome:
        return PayOutcome(request=item, payment=PAID, attempts=1)

    def requests() -> Iterator[PayRequest]:
        for number in range(100_000):
            yield PayRequest(customer=f"c-{number}", user_id="u", card_token="tok-0001")

    tracemalloc.start()
    try:
        count = 0
        async for _ in run_batch(requests(), pay_one=pay_one, concurrency=64):
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < 2 * 1024 * 1024


def outcome(state: str, *, attempts: int = 1, elapsed: float = 0.1) -> PayOutcome:
    """Build an outcome in *state*."""
    item = request(0)
    statuses = {"paid": InvoiceStatus.OK, "failed": InvoiceStatus.FAILED}
    statuses["expired"] = InvoiceStatus.INCOMPLETE
    if state in statuses:
        return PayOutcome(
            request=item,
            payment=InvoicePayment(invoice_status=statuses[state]),
            attempts=attempts,
            elapsed=elapsed,
        )
    errors = {
        "pending": PaymentPending("still pending", operation="pay"),
        "ambiguous": AmbiguousPaymentError("unknown", attempts=attempts, customer="c-0"),
        "error": ConfigurationError("refused"),
    }
    return PayOutcome(request=item, error=errors[state], attempts=attempts, elapsed=elapsed)


def test_summary_counts_states_retries_and_throughput() -> None:
    """BatchSummary counts every state, sums attempts beyond the first, and divides by time."""
    outcomes = [
        outcome("paid", attempts=1),
        outcome("paid", attempts=3),
        outcome("failed", attempts=1),
        outcome("expired", attempts=2),
        outcome("pending", attempts=5),
        outcome("ambiguous", attempts=2),
        outcome("error", attempts=0),
    ]
    summary = BatchSummary.from_outcomes(outcomes, elapsed=2.0)
    assert summary.total == 7
    assert dict(summary.by_state) == {
        "paid": 2,
        "failed": 1,
        "expired": 1,
        "pending": 1,
        "ambiguous": 1,
        "error": 1,
    }
    assert summary.requests == 14
    assert summary.retries == 2 + 1 + 4 + 1
    assert summary.throughput == 3.5
    assert summary.paid == 2
    assert not summary.all_paid
    assert summary.to_dict()["by_state"]["paid"] == 2


def test_summary_percentiles_match_the_exact_nearest_rank_values() -> None:
    """p50 and p99 are within the histogram's 0.5 % of the exact nearest-rank percentiles."""
    latencies = [0.001 * (1.013**i) for i in range(1000)]
    summary = BatchSummary.from_outcomes(
        (outcome("paid", elapsed=value) for value in reversed(latencies)), elapsed=10.0
    )
    ordered = sorted(latencies)
    assert summary.latency_p50 == pytest.approx(ordered[499], rel=0.005)
    assert summary.latency_p99 == pytest.approx(ordered[989], rel=0.005)
    assert summary.latency_max == ordered[-1]
    assert summary.latency_mean == pytest.approx(sum(latencies) / 1000)


def test_summary_of_one_outcome_is_exact() -> None:
    """With a single outcome, every latency statistic is that outcome's elapsed time."""
    summary = BatchSummary.from_outcomes([outcome("paid", elapsed=0.123)], elapsed=0.5)
    assert summary.latency_p50 == summary.latency_p99 == summary.latency_max == 0.123
    assert summary.all_paid


def test_summary_of_nothing_has_no_latencies() -> None:
    """An empty summary has zero counts, zero throughput and no percentiles."""
    summary = BatchSummary.from_outcomes([], elapsed=0.0)
    assert summary.total == 0
    assert summary.throughput == 0.0
    assert summary.latency_p50 is None
    assert summary.latency_p99 is None
    assert summary.latency_mean is None
    assert summary.all_paid


def test_summary_counts_instant_outcomes_as_zero_latency() -> None:
    """Outcomes that took no measurable time fall in the zero bucket and read back as 0.0."""
    outcomes = [outcome("error", attempts=0, elapsed=0.0)] * 60 + [outcome("paid")] * 40
    summary = BatchSummary.from_outcomes(outcomes, elapsed=1.0)
    assert summary.latency_p50 == 0.0
    assert summary.latency_p99 == pytest.approx(0.1, rel=0.005)


def test_summary_builder_keeps_bounded_memory() -> None:
    """100,000 latencies spread over nine decades fill about two thousand buckets, no more."""
    builder = SummaryBuilder()
    item = outcome("paid")
    for number in range(100_000):
        builder.add(
            PayOutcome(
                request=item.request,
                payment=item.payment,
                attempts=1,
                elapsed=1e-5 * 10 ** (9 * number / 100_000),
            )
        )
    assert builder.total == 100_000
    assert 2_000 < len(builder._buckets) < 2_200
    summary = builder.build(10.0)
    assert summary.throughput == 10_000
    assert summary.latency_p50 == pytest.approx(1e-5 * 10**4.5, rel=0.005)


@pytest.mark.parametrize("accuracy", [0.0, 0.5, -0.1])
def test_summary_builder_refuses_a_useless_accuracy(accuracy: float) -> None:
    """A relative accuracy outside (0, 0.5) is a configuration error."""
    with pytest.raises(ConfigurationError, match="relative_accuracy"):
        SummaryBuilder(relative_accuracy=accuracy)


async def test_a_stray_cancelled_error_from_pay_one_ends_the_batch_instead_of_hanging() -> None:
    """A CancelledError that pay_one raises on its own propagates; the batch does not wait on."""
    stray = asyncio.CancelledError("leaked by pay_one")
    payer = FakePayer()

    async def pay_one(item: PayRequest) -> PayOutcome:
        if item.key == 3:
            raise stray
        return await payer(item)

    consumer = asyncio.create_task(drain(run_batch(Source(50), pay_one=pay_one, concurrency=4), []))
    done, _ = await asyncio.wait({consumer}, timeout=5)
    assert done == {consumer}
    assert consumer.cancelled() or consumer.exception() is stray
    assert batch_tasks() == []


async def test_a_stray_cancelled_error_from_the_input_ends_the_batch_instead_of_hanging() -> None:
    """A CancelledError raised by the input iterator propagates once the items taken finish."""

    def requests() -> Iterator[PayRequest]:
        yield request(1)
        raise asyncio.CancelledError("leaked by the input")

    seen: list[PayOutcome] = []
    consumer = asyncio.create_task(
        drain(run_batch(requests(), pay_one=FakePayer(), concurrency=4), seen)
    )
    done, _ = await asyncio.wait({consumer}, timeout=5)
    assert done == {consumer}
    assert [o.request.key for o in seen] == [1]
    assert batch_tasks() == []


async def test_outcomes_paid_but_never_yielded_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Closing a batch with finished outcomes still queued logs each of their customers."""
    payer = FakePayer(turns=0)
    batch = run_batch(Source(100), pay_one=payer, concurrency=4)
    with caplog.at_level("WARNING", logger="freedompay_async"):
        async with contextlib.aclosing(batch):
            first = await anext(batch)
            for _ in range(20):
                await asyncio.sleep(0)  # the other workers finish and queue their outcomes
    undelivered = [r.getMessage() for r in caplog.records if "before yielding" in r.getMessage()]
    assert len(undelivered) == 4
    assert all("customer=c-" in message for message in undelivered)
    assert not any(f"customer={first.request.customer}" in m for m in undelivered)
