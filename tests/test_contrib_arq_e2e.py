"""The arq integration: in-process workers, then two worker processes with one killed midway."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import csv
import importlib.util
import json
import logging
import os
import pickle
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("arq", reason="the 'arq' extra is not installed")

import aiohttp
import attrs
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Retry, Worker, get_kwargs
from redis.asyncio import Redis

from freedompay_async import (
    ConfigurationError,
    FreedomPayClient,
    InvoicePayment,
    InvoiceStatus,
    PayOutcome,
    PayRequest,
    PollPolicy,
    RetryPolicy,
    Timeouts,
)
from freedompay_async.contrib import add_enqueue_command as add_any_enqueue_command
from freedompay_async.contrib.arq import (
    JOB_NAME,
    RUNTIME_KEY,
    MaskedToken,
    OutcomeStore,
    PayRuntime,
    PayWorkerConfig,
    WorkerSettings,
    enqueue_batch,
    job_id_for,
    main,
    outcome_to_dict,
    pay_invoice_job,
    startup,
    wait_for_outcomes,
    worker_settings,
)
from freedompay_async.contrib.redis_guard import RedisPayGuard
from freedompay_async.testing import Fault, FreedomPayEmulator

# arq's Worker.close() calls redis-py's deprecated close(); that is arq's to change, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")

QUEUE = "test:queue"
FAST_CLIENT = {
    "timeouts": Timeouts(connect=2.0, read=5.0, pool=5.0),
    "retry": RetryPolicy(attempts=3, deadline=20.0, reconcile_grace=0.2),
    "poll": PollPolicy(interval=0.1, factor=1.0, max_interval=0.1, timeout=5.0),
}


@pytest.fixture
async def arq_redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    """The arq Redis pool, on an emptied database."""
    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=QUEUE)
    await pool.flushdb()
    yield pool
    await pool.aclose()


def _config(emulator: FreedomPayEmulator, redis_url: str, **changes: Any) -> PayWorkerConfig:
    options: dict[str, Any] = {
        "merchant_id": emulator.merchant_id,
        "secret_key": emulator.secret_key,
        "base_url": emulator.base_url,
        "redis_url": redis_url,
        "queue_name": QUEUE,
        "rate": 0,
        "max_jobs": 16,
        "claim_ttl": 2.0,
        "client_options": FAST_CLIENT,
    }
    options.update(changes)
    return PayWorkerConfig(**options)


async def _run_burst_worker(config: PayWorkerConfig) -> Worker:
    """Run one arq worker in this process until the queue is empty."""
    worker = Worker(**worker_settings(config, burst=True, handle_signals=False, poll_delay=0.05))
    try:
        await asyncio.wait_for(worker.main(), timeout=60)
    finally:
        await worker.close()
    return worker


def _rows(customers: list[str]) -> list[PayRequest]:
    return [
        PayRequest(customer=c, user_id=f"user-{n}", card_token=f"card-secret-{n:06d}", key=n)
        for n, c in enumerate(customers)
    ]


# -- in-process workers ---------------------------------------------------------------------


async def test_a_worker_pays_each_queued_invoice_once_and_stores_outcomes(
    arq_redis, redis_url, emulator: FreedomPayEmulator
) -> None:
    """30 invoices queued with 10 duplicates: 30 jobs, one charge each, 30 outcomes, no token."""
    customers = emulator.create_invoices(30)
    rows = _rows(customers)
    report = await enqueue_batch(arq_redis, [*rows, *rows[:10]], queue_name=QUEUE, chunk=7)
    assert report.to_dict() == {"rows": 40, "enqueued": 30, "deduplicated": 10, "settled": 0}
    config = _config(emulator, redis_url, rate=500)
    worker = await _run_burst_worker(config)
    assert (worker.jobs_complete, worker.jobs_failed) == (30, 0)
    assert [emulator.charges(c) for c in customers] == [1] * 30
    results = OutcomeStore(arq_redis, emulator.merchant_id)
    assert await results.count() == 30
    assert await results.summary() == {"paid": 30}
    stored = await results.get(customers[3])
    assert stored is not None
    assert stored["state"] == "paid"
    assert stored["key"] == 3
    assert stored["claim"] == "fresh"
    assert stored["invoice_status"] == "ok"
    raw = json.dumps([o async for o in results.scan()])
    assert "card-secret" not in raw
    assert await arq_redis.keys("arq:result:*") == []  # arq keeps no result (it holds the args)

    again = await enqueue_batch(arq_redis, rows, queue_name=QUEUE, results=results)
    assert again.to_dict() == {"rows": 30, "enqueued": 0, "deduplicated": 0, "settled": 30}


async def test_a_duplicate_job_after_the_first_returns_the_stored_outcome(
    arq_redis, redis_url, emulator: FreedomPayEmulator
) -> None:
    """Re-queued without a results check, paid invoices are refused by the guard, not re-paid."""
    customers = emulator.create_invoices(5)
    rows = _rows(customers)
    config = _config(emulator, redis_url)
    await enqueue_batch(arq_redis, rows, queue_name=QUEUE)
    await _run_burst_worker(config)
    results = OutcomeStore(arq_redis, emulator.merchant_id)
    before = {c: await results.get(c) for c in customers}
    report = await enqueue_batch(arq_redis, rows, queue_name=QUEUE)
    assert report.enqueued == 5
    runtime = PayRuntime.open(arq_redis, config)
    try:
        duplicate = await pay_invoice_job(
            {RUNTIME_KEY: runtime}, customers[0], "user-0", "card-secret-000000"
        )
    finally:
        await runtime.aclose()
    assert duplicate["duplicate"] is True
    assert duplicate["state"] == "paid"
    await _run_burst_worker(config)
    assert [emulator.charges(c) for c in customers] == [1] * 5
    assert {c: await results.get(c) for c in customers} == before


async def test_jobs_settle_a_crashed_workers_claims_by_status(
    arq_redis, redis_url, emulator: FreedomPayEmulator
) -> None:
    """A dead worker's landed pay is recorded from status; its unsent one, still new, is not paid.

    A status of new does not prove that a dead worker's pay never landed (it may lag), so by
    default the job stores it as ambiguous for a manual check instead of paying it.
    """
    landed, lost = emulator.create_invoices(2)
    crashed = RedisPayGuard(arq_redis, emulator.merchant_id, claim_ttl=0.2, heartbeat=0)
    assert (await crashed.claim(landed)).granted
    assert (await crashed.claim(lost)).granted
    # the dead worker's pay of `landed` reached the gateway before it died
    assert (await _pay_without_guard(emulator, landed)).invoice_status is InvoiceStatus.OK
    config = _config(emulator, redis_url)
    await asyncio.sleep(0.3)  # the dead claims expire
    await enqueue_batch(arq_redis, _rows([landed, lost]), queue_name=QUEUE)
    await _run_burst_worker(config)
    results = OutcomeStore(arq_redis, emulator.merchant_id)
    first, second = await results.get_many([landed, lost])
    assert first is not None
    assert second is not None
    assert (first["state"], first["claim"], first["invoice_status"]) == ("paid", "landed", "ok")
    assert (second["state"], second["claim"]) == ("ambiguous", "unsettled")
    assert "does not prove" in second["message"]
    assert emulator.charges(landed) == 1
    assert emulator.charges(lost) == 0


async def _pay_without_guard(emulator: FreedomPayEmulator, customer: str) -> InvoicePayment:
    from freedompay_async import FreedomPayClient

    async with FreedomPayClient(
        emulator.merchant_id, emulator.secret_key, base_url=emulator.base_url
    ) as client:
        return await client.pay_invoice(customer=customer, user_id="u", card_token="card-x-0001")


async def test_a_job_whose_customer_is_claimed_by_a_live_worker_is_retried(
    arq_redis, redis_url, emulator: FreedomPayEmulator
) -> None:
    """A live claim elsewhere makes the job raise arq's Retry; after it ends, the job reports it."""
    customer = emulator.create_invoice()
    holder = RedisPayGuard(arq_redis, emulator.merchant_id, claim_ttl=1.0)
    assert (await holder.claim(customer)).granted
    runtime = PayRuntime.open(arq_redis, _config(emulator, redis_url))
    ctx = {RUNTIME_KEY: runtime}
    try:
        with pytest.raises(Retry):
            await pay_invoice_job(ctx, customer, "u1", "card-secret-1")
        await holder.finish(customer, state="paid")
        result = await pay_invoice_job(ctx, customer, "u1", "card-secret-1")
    finally:
        await runtime.aclose()
    assert (result["state"], result["claim"], result["duplicate"]) == ("paid", "settled", True)
    stored = await runtime.results.get(customer)
    assert stored is not None
    assert stored["state"] == "paid"
    assert emulator.charges(customer) == 0  # the holder's pay was never sent in this test


async def test_an_unreadable_status_records_an_ambiguous_outcome(
    arq_redis, redis_url, emulator: FreedomPayEmulator
) -> None:
    """When the status of a customer in doubt cannot be read, the job stores ambiguous, no pay."""
    customer = emulator.create_invoice()
    doubter = RedisPayGuard(arq_redis, emulator.merchant_id)
    assert (await doubter.claim(customer)).granted
    await doubter.finish(customer, state="ambiguous")
    emulator.inject(Fault.error_code(600), operation="status", times=5)
    runtime = PayRuntime.open(arq_redis, _config(emulator, redis_url))
    try:
        result = await pay_invoice_job({RUNTIME_KEY: runtime}, customer, "u1", "card-secret-1")
    finally:
        await runtime.aclose()
    assert (result["state"], result["claim"]) == ("ambiguous", "unsettled")
    assert "GatewayError" in result["message"]
    assert emulator.charges(customer) == 0
    assert (await runtime.results.get(customer)) == result


OUTAGE_CLIENT = {
    **FAST_CLIENT,
    "retry": RetryPolicy(
        attempts=3, deadline=20.0, reconcile_grace=0.2, breaker_threshold=5, breaker_cooldown=0.3
    ),
}


async def _job_against_refusals(
    arq_redis: ArqRedis,
    redis_url: str,
    emulator: FreedomPayEmulator,
    *,
    refusals: int,
    tolerance: float,
) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """Run one pay job while the gateway answers its next *refusals* pays with 503."""
    customer = emulator.create_invoice()
    emulator.inject(Fault.http_status(503), operation="pay", times=refusals)
    config = _config(emulator, redis_url, outage_tolerance=tolerance, client_options=OUTAGE_CLIENT)
    runtime = PayRuntime.open(arq_redis, config)
    try:
        result = await pay_invoice_job({RUNTIME_KEY: runtime}, customer, "u1", "card-secret-1")
    finally:
        await runtime.aclose()
    return customer, result, await runtime.results.get(customer)


async def test_a_job_waits_out_an_outage_and_pays_once(
    arq_redis, redis_url, emulator: FreedomPayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Pays refused with 503 past the breaker's threshold: the job tries again, pays once."""
    caplog.set_level(logging.WARNING, logger="freedompay_async")
    customer, result, stored = await _job_against_refusals(
        arq_redis, redis_url, emulator, refusals=8, tolerance=30.0
    )
    assert (result["state"], result["error"]) == ("paid", None)
    assert emulator.charges(customer) == 1
    assert emulator.stats.by_operation["pay"] == 8 + 1
    assert stored == result
    assert any(
        "refused it or cannot be reached (" in r.getMessage() and customer in r.getMessage()
        for r in caplog.records
    )


async def test_a_job_records_the_outage_once_its_tolerance_is_over(
    arq_redis, redis_url, emulator: FreedomPayEmulator
) -> None:
    """A gateway refusing every pay: the job stores the failure after its tolerance, no charge."""
    start = time.monotonic()
    customer, result, stored = await _job_against_refusals(
        arq_redis, redis_url, emulator, refusals=10_000, tolerance=1.5
    )
    took = time.monotonic() - start
    assert result["state"] == "error"
    assert result["error"] in {"HTTPStatusError", "CircuitOpenError"}
    assert emulator.charges(customer) == 0
    assert stored == result
    assert 1.5 <= took < 15
    # Five refusals open the breaker; then at most one probe per cooldown until the end.
    assert emulator.stats.by_operation["pay"] <= 5 + 1.5 / 0.3 + 3


async def test_with_no_outage_tolerance_a_refused_pay_is_recorded_at_once(
    arq_redis, redis_url, emulator: FreedomPayEmulator
) -> None:
    """outage_tolerance=0: one call's attempts, then the failure is stored."""
    _, result, stored = await _job_against_refusals(
        arq_redis, redis_url, emulator, refusals=10_000, tolerance=0
    )
    assert (result["state"], result["error"]) == ("error", "HTTPStatusError")
    assert emulator.stats.by_operation["pay"] == 3
    assert stored == result


@pytest.mark.parametrize("value", [-1.0, float("inf"), float("nan"), True, "5"])
async def test_a_runtime_refuses_a_bad_outage_tolerance(value: object) -> None:
    """PayRuntime checks outage_tolerance itself, for job systems that build it without a config."""
    redis = Redis.from_url("redis://127.0.0.1:1/0")
    client = FreedomPayClient("42", "k", base_url="http://127.0.0.1:9")
    guard = RedisPayGuard(redis, "42")
    try:
        with pytest.raises(ConfigurationError, match="outage_tolerance must be a finite number"):
            PayRuntime(
                client=client,
                guard=guard,
                results=OutcomeStore(redis, "42"),
                outage_tolerance=value,  # type: ignore[arg-type]
            )
    finally:
        await client.aclose()
        await guard.aclose()
        await redis.aclose()


def test_outage_tolerance_is_read_and_checked_against_the_job_timeout() -> None:
    """FREEDOMPAY_OUTAGE_TOLERANCE is read; a tolerance not below job_timeout is refused."""
    env = {"FREEDOMPAY_MERCHANT_ID": "42", "FREEDOMPAY_SECRET_KEY": "k"}
    assert PayWorkerConfig.from_env(env).outage_tolerance == 300.0
    short = {**env, "FREEDOMPAY_JOB_TIMEOUT": "10"}
    assert PayWorkerConfig.from_env(short).outage_tolerance == 5.0
    assert (
        PayWorkerConfig.from_env({**env, "FREEDOMPAY_OUTAGE_TOLERANCE": "0"}).outage_tolerance == 0
    )
    with pytest.raises(ConfigurationError, match=r"outage_tolerance .* below job_timeout"):
        PayWorkerConfig.from_env(
            {**env, "FREEDOMPAY_OUTAGE_TOLERANCE": "900", "FREEDOMPAY_JOB_TIMEOUT": "900"}
        )
    with pytest.raises(ConfigurationError, match="outage_tolerance"):
        PayWorkerConfig(merchant_id="42", secret_key="k", outage_tolerance=float("nan"))


async def test_an_invalid_job_is_stored_as_an_error_without_a_request(
    arq_redis, redis_url, emulator: FreedomPayEmulator
) -> None:
    """A job with an empty user_id sends nothing and stores state=error for its customer."""
    runtime = PayRuntime.open(arq_redis, _config(emulator, redis_url))
    try:
        result = await runtime.pay("cust-1", "", "card-secret-1")
        nameless = await runtime.pay("", "u1", "card-secret-1")
    finally:
        await runtime.aclose()
    assert (result["state"], result["error"]) == ("error", "ConfigurationError")
    assert await runtime.results.get("cust-1") == result
    assert nameless["customer"] == ""
    assert emulator.stats.requests == 0


async def test_an_invalid_duplicate_never_hides_a_stored_outcome(
    arq_redis, redis_url, emulator: FreedomPayEmulator
) -> None:
    """A bad row for a customer already paid returns an error but keeps the paid outcome."""
    customer = emulator.create_invoice()
    runtime = PayRuntime.open(arq_redis, _config(emulator, redis_url))
    try:
        paid = await runtime.pay(customer, "u1", "card-secret-1")
        empty = await runtime.pay(customer, "", "card-secret-1")
        too_long = await runtime.pay(customer, "u" * 300, "card-secret-1")
    finally:
        await runtime.aclose()
    assert paid["state"] == "paid"
    assert (empty["state"], too_long["state"]) == ("error", "error")
    assert too_long["claim"] is None
    assert await runtime.results.get(customer) == paid
    assert emulator.charges(customer) == 1


async def test_a_job_is_retried_when_redis_fails(emulator: FreedomPayEmulator) -> None:
    """With Redis unreachable the job raises arq's Retry and sends nothing to the gateway."""
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    runtime = PayRuntime.open(unreachable, _config(emulator, "redis://127.0.0.1:1/0"))
    try:
        with pytest.raises(Retry):
            await pay_invoice_job({RUNTIME_KEY: runtime}, "c1", "u1", "card-secret-1")
    finally:
        await runtime.aclose()
        await unreachable.aclose()
    assert emulator.stats.requests == 0


def test_config_reads_the_environment_and_hides_the_secret() -> None:
    """from_env reads every variable, refuses missing credentials and bad numbers."""
    env = {
        "FREEDOMPAY_MERCHANT_ID": "42",
        "FREEDOMPAY_SECRET_KEY": "s3cr3t-key",
        "FREEDOMPAY_BASE_URL": "http://127.0.0.1:1",
        "REDIS_URL": "redis://127.0.0.1:2/3",
        "FREEDOMPAY_RATE": "400",
        "FREEDOMPAY_BURST": "10",
        "FREEDOMPAY_MAX_JOBS": "8",
        "FREEDOMPAY_CLAIM_TTL": "5",
    }
    config = PayWorkerConfig.from_env(env)
    assert (config.merchant_id, config.rate, config.burst, config.max_jobs) == ("42", 400, 10, 8)
    assert (config.redis_url, config.claim_ttl, config.job_timeout) == (
        "redis://127.0.0.1:2/3",
        5.0,
        900.0,
    )
    assert "s3cr3t" not in repr(config)
    with pytest.raises(ConfigurationError, match="FREEDOMPAY_SECRET_KEY"):
        PayWorkerConfig.from_env({"FREEDOMPAY_MERCHANT_ID": "42"})
    with pytest.raises(ConfigurationError, match="FREEDOMPAY_RATE"):
        PayWorkerConfig.from_env({**env, "FREEDOMPAY_RATE": "fast"})
    with pytest.raises(ConfigurationError, match="max_jobs"):
        PayWorkerConfig.from_env({**env, "FREEDOMPAY_MAX_JOBS": "0"})
    settings = worker_settings(config, burst=True)
    assert settings["queue_name"] == "freedompay:queue"
    assert settings["burst"] is True
    assert settings["poll_delay"] == 0.5
    assert settings["handle_signals"] is True
    for delay in (0, -1.0, float("inf"), float("nan"), True, "0.5"):
        with pytest.raises(ConfigurationError, match="poll_delay"):
            worker_settings(config, poll_delay=delay)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        worker_settings(config, max_tries=3)  # type: ignore[call-arg]
    assert settings["keep_result"] == 0
    assert WorkerSettings.functions[0].name == JOB_NAME
    assert WorkerSettings.keep_result == 0


def test_outcomes_carry_no_card_token_and_a_masked_pan() -> None:
    """outcome_to_dict drops the card token and masks a PAN that arrived in full."""
    request = PayRequest(customer="c1", user_id="u1", card_token="card-secret-1234", key=object())
    payment = InvoicePayment(invoice_status=InvoiceStatus.OK, card_pan="4405645000006150")
    data = outcome_to_dict(PayOutcome(request=request, payment=payment))
    assert data["card_pan"] == "440564******6150"
    assert data["state"] == "paid"
    assert isinstance(data["key"], str)
    text = json.dumps(data)
    assert "card-secret" not in text
    assert "4405645000006150" not in text
    masked = outcome_to_dict(
        PayOutcome(
            request=request,
            payment=InvoicePayment(invoice_status=InvoiceStatus.OK, card_pan="440564******6150"),
        )
    )
    assert masked["card_pan"] == "440564******6150"
    assert repr(MaskedToken("card-secret-1234")) == "'…1234'"
    assert repr(MaskedToken("abc")) == "'…'"


def test_a_queued_token_pickles_under_the_public_module_path() -> None:
    """MaskedToken pickles as freedompay_async.contrib.arq.MaskedToken and round-trips."""
    data = pickle.dumps(MaskedToken("card-secret-1234"))
    assert b"freedompay_async.contrib.arq._" not in data
    assert b"freedompay_async.contrib.arq" in data
    again = pickle.loads(data)
    assert (type(again), again) == (MaskedToken, "card-secret-1234")
    assert job_id_for("c1") == "freedompay:pay:c1"


# -- the enqueue command, in process --------------------------------------------------------


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["customer", "user_id", "card_token", "key"], *rows])


@pytest.mark.blocking_ok
def test_enqueue_command_queues_rows_and_reports_malformed_lines(
    redis_url, tmp_path, capsys
) -> None:
    """Command enqueue skips a malformed line by number and queues one job per customer."""
    path = tmp_path / "in.csv"
    _write_csv(
        path,
        [
            ["c1", "u1", "card-1111", "k1"],
            ["c2", "", "card-2222", ""],
            ["c1", "u1", "card-1111"],
            [],
            ["c3", "u3", "card-3333"],
        ],
    )
    code = main(["enqueue", str(path), "--redis", redis_url, "--queue", "cli:queue"])
    out, err = capsys.readouterr()
    assert code == 1
    report = json.loads(out.strip())
    assert report == {
        "rows": 3,
        "enqueued": 2,
        "deduplicated": 1,
        "settled": 0,
        "malformed": 1,
        "queue": "cli:queue",
    }
    assert "in.csv:3: skipped a malformed row: missing user_id" in err

    async def queued() -> list[bytes]:
        client = Redis.from_url(redis_url)
        try:
            return sorted(await client.zrange("cli:queue", 0, -1))
        finally:
            await client.flushdb()
            await client.aclose()

    assert asyncio.run(queued()) == [b"freedompay:pay:c1", b"freedompay:pay:c3"]


@pytest.mark.blocking_ok
def test_enqueue_command_refuses_bad_input(redis_url, tmp_path, capsys) -> None:
    """A missing file, a header without the columns, or --wait without a merchant exit with 2."""
    assert main(["enqueue", str(tmp_path / "none.csv"), "--redis", redis_url]) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    assert main(["enqueue", str(bad), "--redis", redis_url]) == 2
    assert main(["enqueue", str(bad), "--redis", "http://x", "--merchant-id", "1"]) == 2
    assert main(["enqueue", str(bad), "--redis", redis_url, "--wait"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err
    assert "header must name" in err
    assert "--wait needs --merchant-id" in err


@pytest.mark.blocking_ok
def test_enqueue_wait_writes_outcomes_and_exits_by_state(redis_url, tmp_path, capsys) -> None:
    """With --wait, outcomes already stored are written to --out and the exit code follows them."""
    path = tmp_path / "in.csv"
    _write_csv(path, [["c1", "u1", "card-1111"], ["c2", "u2", "card-2222"]])

    async def store(states: dict[str, str]) -> None:
        client = Redis.from_url(redis_url)
        try:
            await client.flushdb()
            results = OutcomeStore(client, "m1")
            for customer, state in states.items():
                await results.save({"customer": customer, "state": state})
        finally:
            await client.aclose()

    asyncio.run(store({"c1": "paid", "c2": "paid"}))
    out_file = tmp_path / "out.jsonl"
    argv = [
        "enqueue",
        str(path),
        "--redis",
        redis_url,
        "--merchant-id",
        "m1",
        "--wait",
        "--timeout",
        "2",
        "--out",
        str(out_file),
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[0])["settled"] == 2
    assert json.loads(lines[1]) == {"outcomes": 2, "missing": 0, "by_state": {"paid": 2}}
    assert [json.loads(x)["customer"] for x in out_file.read_text().splitlines()] == ["c1", "c2"]

    asyncio.run(store({"c1": "paid", "c2": "failed"}))
    assert main(argv) == 1
    asyncio.run(store({"c1": "paid"}))
    argv[argv.index("2")] = "0.3"
    assert main(argv) == 2
    assert "1 outcomes still missing" in capsys.readouterr().err


async def test_wait_for_outcomes_returns_what_arrived_within_the_time(arq_redis) -> None:
    """wait_for_outcomes sees outcomes stored while it waits and stops at its time limit."""
    results = OutcomeStore(arq_redis, "m1")
    seen: list[tuple[int, int]] = []

    async def later() -> None:
        await asyncio.sleep(0.3)
        await results.save({"customer": "c2", "state": "paid"})

    await results.save({"customer": "c1", "state": "paid"})
    task = asyncio.create_task(later())
    found = await wait_for_outcomes(
        results,
        ["c1", "c2", "c1"],
        within=3,
        interval=0.05,
        on_progress=lambda d, t: seen.append((d, t)),
    )
    await task
    assert sorted(found) == ["c1", "c2"]
    assert seen[0] == (1, 2)
    assert seen[-1] == (2, 2)
    start = time.monotonic()
    partial = await wait_for_outcomes(results, ["c1", "c9"], within=0.3, interval=0.05)
    assert sorted(partial) == ["c1"]
    assert time.monotonic() - start < 1.0


def test_the_contrib_hook_registers_the_enqueue_command() -> None:
    """freedompay_async.contrib.add_enqueue_command adds a working `enqueue` subcommand."""
    parser = argparse.ArgumentParser()
    add_any_enqueue_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["enqueue", "in.csv", "--redis", "redis://127.0.0.1:1/0", "--wait"])
    assert args.command == "enqueue"
    assert args.wait is True
    assert callable(args.func)


@pytest.mark.blocking_ok  # argparse looks for translations on disk
async def test_the_contrib_runner_runs_the_parsed_command(tmp_path) -> None:
    """contrib.run_enqueue runs the parsed `enqueue` (here: a missing file exits with 2)."""
    from freedompay_async.contrib import run_enqueue

    parser = argparse.ArgumentParser()
    add_any_enqueue_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["enqueue", str(tmp_path / "none.csv")])
    assert await run_enqueue(args) == 2


@pytest.mark.blocking_ok  # argparse looks for translations on disk
async def test_without_the_extra_enqueue_explains_how_to_install(monkeypatch, capsys) -> None:
    """If arq cannot be imported, `enqueue` is still listed and exits 2 naming the extra."""
    from freedompay_async import contrib

    monkeypatch.delattr(contrib, "arq", raising=False)
    monkeypatch.setitem(sys.modules, "freedompay_async.contrib.arq", None)
    parser = argparse.ArgumentParser()
    add_any_enqueue_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["enqueue", "in.csv", "--redis", "redis://127.0.0.1:1/0"])
    assert args.func(args) == 2
    assert await contrib.run_enqueue(args) == 2
    assert capsys.readouterr().err.count("pip install 'freedompay-async[arq]'") == 2


@pytest.mark.blocking_ok  # argparse looks for translations on disk
def test_a_broken_worker_environment_does_not_break_the_command_line(
    monkeypatch, capsys, tmp_path
) -> None:
    """A bad FREEDOMPAY_* value breaks neither the import nor `enqueue`; arq's settings name it."""
    from freedompay_async import contrib

    monkeypatch.delattr(contrib, "arq", raising=False)
    monkeypatch.delitem(sys.modules, "freedompay_async.contrib.arq")
    monkeypatch.setenv("FREEDOMPAY_MAX_JOBS", "many")
    arq_package = importlib.import_module("freedompay_async.contrib.arq")
    parser = argparse.ArgumentParser()
    add_any_enqueue_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["enqueue", str(tmp_path / "none.csv")])
    assert args.func(args) == 2
    assert "none.csv: no such file" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="FREEDOMPAY_MAX_JOBS must be a number"):
        _ = arq_package.WorkerSettings


def test_worker_settings_read_the_environment_when_looked_up(monkeypatch) -> None:
    """`WorkerSettings` reflects the environment at lookup (arq's start), not at import."""
    import freedompay_async.contrib.arq as arq_package

    monkeypatch.setenv("FREEDOMPAY_QUEUE", "late:queue")
    monkeypatch.setenv("FREEDOMPAY_MAX_JOBS", "7")
    monkeypatch.setenv("FREEDOMPAY_JOB_TIMEOUT", "42")
    monkeypatch.setenv("FREEDOMPAY_REDIS_URL", "redis://127.0.0.1:6390/3")
    settings = arq_package.WorkerSettings
    assert (settings.queue_name, settings.max_jobs, settings.job_timeout) == ("late:queue", 7, 42)
    assert (settings.redis_settings.port, settings.redis_settings.database) == (6390, 3)
    assert settings.functions[0].name == JOB_NAME
    assert settings.functions[0].timeout_s == 42
    kwargs = get_kwargs(settings)  # what `arq ...WorkerSettings` passes to Worker
    assert kwargs["queue_name"] == "late:queue"
    assert kwargs["on_startup"] is startup
    assert kwargs["keep_result"] == 0
    monkeypatch.setenv("FREEDOMPAY_QUEUE", "later:queue")
    assert arq_package.WorkerSettings.queue_name == "later:queue"


# -- two worker processes, one killed -------------------------------------------------------

INVOICES = 2000
RATE = 200  # below what two workers manage on a small machine, so the limit binds
BURST = 10
EMULATOR_SECRET = "e2e-emulator-secret-0001"
E2E_QUEUE = "e2e:queue"


def _cli_has_emulate() -> bool:
    main_spec = importlib.util.find_spec("freedompay_async.__main__")
    spec = importlib.util.find_spec("freedompay_async.cli")
    if main_spec is None or spec is None or spec.origin is None:
        return False
    return "emulate" in Path(spec.origin).read_text(encoding="utf-8")


_EMULATOR_SCRIPT = """
import asyncio, json, os
from freedompay_async.testing import FreedomPayEmulator
async def main():
    async with FreedomPayEmulator(secret_key=os.environ["FREEDOMPAY_SECRET_KEY"]) as emu:
        print(json.dumps({"base_url": emu.base_url, "merchant_id": emu.merchant_id}), flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


async def _start_emulator(log: Path) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """Run the emulator in its own process (`python -m freedompay_async emulate`)."""
    if _cli_has_emulate():
        argv = [sys.executable, "-m", "freedompay_async", "emulate", "--port", "0"]
    else:  # the command line is not there yet: the same server from a short script
        argv = [sys.executable, "-c", _EMULATOR_SCRIPT]
    env = {**os.environ, "FREEDOMPAY_SECRET_KEY": EMULATOR_SECRET}
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=err, env=env
        )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
    assert line, f"the emulator did not start; see {log}"
    info = json.loads(line)
    return proc, {
        "base_url": info["base_url"],
        "merchant_id": str(info["merchant_id"]),
        "secret_key": EMULATOR_SECRET,
    }


async def _stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(sig)
    try:
        await asyncio.wait_for(proc.wait(), timeout=10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _sample_requests(
    session: aiohttp.ClientSession, base_url: str, samples: list[tuple[float, int]]
) -> None:
    """Record (time, API requests seen by the emulator) every 0.2 s until cancelled."""
    for _ in range(1000):
        async with session.get(f"{base_url}/_emulator/stats") as reply:
            stats = await reply.json()
        samples.append((time.monotonic(), int(stats["requests"])))
        await asyncio.sleep(0.2)


def _max_rate(samples: list[tuple[float, int]], window: float = 1.0) -> float:
    """The highest request rate over any span of at least *window* seconds between samples."""
    best = 0.0
    for i, (t0, n0) in enumerate(samples):
        for t1, n1 in samples[i + 1 :]:
            if t1 - t0 >= window:
                best = max(best, (n1 - n0) / (t1 - t0))
                break
    return best


async def _holders_of_committed_pays(
    session: aiohttp.ClientSession,
    base_url: str,
    redis: Redis,
    workers: list[asyncio.subprocess.Process],
) -> list[asyncio.subprocess.Process]:
    """Workers holding a claim on an invoice the emulator has already charged, most first."""
    async with session.get(f"{base_url}/_emulator/stats?customers=1") as reply:
        invoices = (await reply.json())["invoices"]
    charged = {customer for customer, invoice in invoices.items() if invoice["charges"] >= 1}
    keys = [key async for key in redis.scan_iter(match="*:claim", count=1000)]
    owners = await redis.mget(keys) if keys else []
    held: collections.Counter[int] = collections.Counter()
    for key, owner in zip(keys, owners, strict=True):
        customer = key.decode().split("{", 1)[-1].split("}", 1)[0]
        if owner is not None and customer in charged:
            held[int(owner.decode().split(":")[1])] += 1
    by_pid = {worker.pid: worker for worker in workers if worker.returncode is None}
    return [by_pid[pid] for pid, _ in held.most_common() if pid in by_pid]


async def _wait_for(predicate, within: float, what: str) -> None:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{what}: not within {within}s")


@attrs.define
class Stage:
    """The two-worker run's stage: the emulator process, its invoices and the input CSV."""

    base: str
    merchant_id: str
    customers: list[str]
    tokens: list[str]
    rows: list[list[str]]
    input_csv: Path


@attrs.define
class Workers:
    """The two arq worker processes, by name, their log files, environment and Redis."""

    procs: dict[str, asyncio.subprocess.Process]
    logs: dict[str, Path]
    env: dict[str, str]
    redis_url: str

    def name_of(self, proc: asyncio.subprocess.Process) -> str:
        """The name (`a`, `b`) of one of the workers."""
        return next(name for name, each in self.procs.items() if each is proc)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session for the emulator's admin routes."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def stage(tmp_path: Path, session: aiohttp.ClientSession) -> AsyncIterator[Stage]:
    """The emulator in its own process with INVOICES invoices, and a CSV that repeats some rows.

    Every 10th row comes back once more (some duplicates still queued), and the first 100 once
    more after them (duplicates of invoices already paid).
    """
    emulator, info = await _start_emulator(tmp_path / "emulator.log")
    try:
        base = info["base_url"]
        async with session.post(
            f"{base}/_emulator/invoices", json={"count": INVOICES, "fate": {"kind": "paid"}}
        ) as reply:
            customers: list[str] = (await reply.json())["customers"]
        assert len(set(customers)) == INVOICES
        tokens = [f"card-secret-{n:06d}" for n in range(INVOICES)]
        rows = [[c, f"user-{n}", tokens[n], str(n)] for n, c in enumerate(customers)]
        rows += [rows[n] for n in range(0, INVOICES, 10)]
        rows += [rows[n] for n in range(100)]
        input_csv = tmp_path / "invoices.csv"
        _write_csv(input_csv, rows)
        yield Stage(
            base=base,
            merchant_id=info["merchant_id"],
            customers=customers,
            tokens=tokens,
            rows=rows,
            input_csv=input_csv,
        )
    finally:
        await _stop(emulator)


@pytest.fixture
async def e2e_redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the module's Redis, emptied first."""
    client = Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def worker_env(stage: Stage, redis_url: str) -> dict[str, str]:
    """The environment `arq freedompay_async.contrib.arq.WorkerSettings` starts workers with."""
    return {
        **os.environ,
        "FREEDOMPAY_MERCHANT_ID": stage.merchant_id,
        "FREEDOMPAY_SECRET_KEY": EMULATOR_SECRET,
        "FREEDOMPAY_BASE_URL": stage.base,
        "FREEDOMPAY_REDIS_URL": redis_url,
        "FREEDOMPAY_QUEUE": E2E_QUEUE,
        "FREEDOMPAY_RATE": str(RATE),
        "FREEDOMPAY_BURST": str(BURST),
        "FREEDOMPAY_MAX_JOBS": "32",
        "FREEDOMPAY_JOB_TIMEOUT": "10",  # a dead worker's jobs run again after 10 + 10 s
        "FREEDOMPAY_CLAIM_TTL": "3",
        # the opt-in: a dead worker's unsent pay (status new 2 s after its claim lapsed) is
        # proven never landed and paid once
        "FREEDOMPAY_NEW_PROVES_AFTER": "2",
    }


@pytest.fixture
async def workers(
    tmp_path: Path, worker_env: dict[str, str], redis_url: str, e2e_redis: Redis
) -> AsyncIterator[Workers]:
    """Two worker processes, `a` and `b`, each logging to `worker-<name>.log`."""
    assert await e2e_redis.dbsize() == 0  # the workers start on an empty Redis
    started = Workers(procs={}, logs={}, env=worker_env, redis_url=redis_url)
    try:
        for name in ("a", "b"):
            log_path = tmp_path / f"worker-{name}.log"
            with log_path.open("wb") as log:
                started.procs[name] = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "arq",
                    "freedompay_async.contrib.arq.WorkerSettings",
                    env=worker_env,
                    stdout=log,
                    stderr=log,
                )
            started.logs[name] = log_path
        yield started
    finally:
        for proc in started.procs.values():
            await _stop(proc)


async def _start_enqueue(
    stage: Stage, workers: Workers, out_file: Path, err_file: Path
) -> asyncio.subprocess.Process:
    """`python -m freedompay_async.contrib.arq enqueue INPUT --wait --out OUT` in a process."""
    with err_file.open("wb") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "freedompay_async.contrib.arq",
            "enqueue",
            str(stage.input_csv),
            "--redis",
            workers.redis_url,
            "--queue",
            E2E_QUEUE,
            "--merchant-id",
            stage.merchant_id,
            "--wait",
            "--timeout",
            "80",
            "--out",
            str(out_file),
            env=workers.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )


async def _kill_a_worker_mid_pay(
    session: aiohttp.ClientSession, stage: Stage, redis: Redis, workers: Workers
) -> str:
    """Delay committed pays, then SIGKILL a worker that holds a claim on a charged invoice.

    Returns:
        The killed worker's name: its pays were committed by the gateway, no reply reached it.
    """
    async with session.post(
        f"{stage.base}/_emulator/faults",
        json={
            "fault": {"kind": "delay", "seconds": 2.0, "after_commit": True},
            "operation": "pay",
            "times": 40,
        },
    ) as reply:
        assert reply.status == 200

    async def delayed_pays_in_flight() -> bool:
        async with session.get(f"{stage.base}/_emulator/stats") as reply:
            return (await reply.json())["faults_applied"] >= 12

    await _wait_for(delayed_pays_in_flight, 10, "delayed pays")
    victim: list[asyncio.subprocess.Process] = []

    async def holder_of_a_committed_pay() -> bool:
        victim[:] = await _holders_of_committed_pays(
            session, stage.base, redis, list(workers.procs.values())
        )
        return bool(victim)

    await _wait_for(holder_of_a_committed_pay, 10, "a worker holding a committed pay")
    victim[0].send_signal(signal.SIGKILL)
    await victim[0].wait()
    return workers.name_of(victim[0])


async def _assert_each_invoice_charged_once(session: aiohttp.ClientSession, stage: Stage) -> None:
    """The emulator counted exactly one charge per invoice and no double charge."""
    async with session.get(f"{stage.base}/_emulator/stats?customers=1") as reply:
        stats = await reply.json()
    assert stats["double_charges"] == 0
    assert stats["double_charged"] == []
    assert stats["committed_pays"] == INVOICES
    assert all(stats["invoices"][c]["charges"] == 1 for c in stage.customers)


def _assert_every_invoice_has_a_paid_outcome(out_file: Path, stage: Stage) -> None:
    """One `paid` outcome per invoice; some were settled by status (`landed`) after the kill."""
    outcomes = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert sorted(o["customer"] for o in outcomes) == sorted(stage.customers)
    assert {o["state"] for o in outcomes} == {"paid"}
    claims = collections.Counter(o["claim"] for o in outcomes)
    assert claims["landed"] >= 1, claims


def _assert_logs_are_clean(workers: Workers, survivor: str, stage: Stage, out_file: Path) -> None:
    """The survivor ran jobs without a traceback; no card token in any log or the outcomes."""
    survivor_log = workers.logs[survivor].read_text()
    assert "freedompay_pay_invoice(" in survivor_log, "the survivor logged no job"
    assert "Traceback" not in survivor_log
    texts = [out_file.read_text()] + [log.read_text() for log in workers.logs.values()]
    leaked = [token for token in stage.tokens if any(token in text for text in texts)]
    assert leaked == []


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_two_worker_processes_one_killed_charge_every_invoice_once(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    stage: Stage,
    e2e_redis: Redis,
    workers: Workers,
) -> None:
    """Two arq workers, one SIGKILLed, pay 2,000 invoices once each; the shared limit holds.

    Every invoice is charged exactly once (emulator), every job has an outcome, the killed
    worker's pays are settled by status, and the emulator never saw more than 200 req/s + 10%.
    """
    samples: list[tuple[float, int]] = []
    sampler = asyncio.create_task(_sample_requests(session, stage.base, samples))
    out_file = tmp_path / "outcomes.jsonl"
    enqueue = await _start_enqueue(stage, workers, out_file, tmp_path / "enqueue.err")
    try:
        results = OutcomeStore(e2e_redis, stage.merchant_id)

        async def some_paid() -> bool:
            return await results.count() >= 600

        await _wait_for(some_paid, 40, "600 outcomes")
        killed = await _kill_a_worker_mid_pay(session, stage, e2e_redis, workers)
        survivor = "b" if killed == "a" else "a"
        assert await results.count() < INVOICES  # killed mid-run
        stdout, _ = await asyncio.wait_for(enqueue.communicate(), timeout=85)
        assert enqueue.returncode == 0, (tmp_path / "enqueue.err").read_text()
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await sampler
        await _stop(enqueue)

    report, summary = (json.loads(x) for x in stdout.decode().splitlines())
    assert report["rows"] == len(stage.rows)
    assert report["enqueued"] + report["deduplicated"] + report["settled"] == len(stage.rows)
    assert summary == {"outcomes": INVOICES, "missing": 0, "by_state": {"paid": INVOICES}}
    await _assert_each_invoice_charged_once(session, stage)
    _assert_every_invoice_has_a_paid_outcome(out_file, stage)
    assert await e2e_redis.zcard(E2E_QUEUE) == 0
    _assert_logs_are_clean(workers, survivor, stage, out_file)
    peak = _max_rate(samples)
    assert peak <= RATE * 1.10, peak  # the shared rate limit held at the emulator
    assert peak >= RATE * 0.8, peak  # the workers did push against the limit
