"""The SDK behind a real nginx reverse proxy, with `emulate` upstream in its own process."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from freedompay_async import (
    BatchProgress,
    FreedomPayClient,
    InvoiceStatus,
    PayRequest,
    RetryPolicy,
)
from tests.nginx_proxy import NginxProxy

SECRET = "proxy-test-secret-key"
MERCHANT = "555002"

pytestmark = pytest.mark.slow


def admin(base_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the emulator's admin API directly (not through the proxy) and return its JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL
        f"{base_url}/_emulator/{path}", data=data, method=method
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def start_emulate(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start `freedompay-async emulate` in its own process and return it with its startup line."""
    env = dict(os.environ, FREEDOMPAY_SECRET_KEY=SECRET)
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "freedompay_async", "emulate", "--merchant-id", MERCHANT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 20)
    if not ready:
        process.kill()
        pytest.fail("emulate printed nothing within 20 s")
    return process, json.loads(process.stdout.readline())


def stop_emulate(process: subprocess.Popen[str]) -> None:
    """Stop an `emulate` process (waking it first if it is frozen)."""
    process.send_signal(signal.SIGCONT)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture
def upstream() -> Iterator[dict[str, Any]]:
    """An `emulate` process (normal mode); yields its startup line plus the process."""
    process, info = start_emulate()
    try:
        yield {**info, "process": process}
    finally:
        stop_emulate(process)


@pytest.fixture
def adversarial_upstream() -> Iterator[dict[str, Any]]:
    """An `emulate --adversarial` process: every pay it receives commits a charge."""
    process, info = start_emulate("--adversarial")
    try:
        yield {**info, "process": process}
    finally:
        stop_emulate(process)


def upstream_port(info: dict[str, Any]) -> int:
    """The port in an emulate startup line's base URL."""
    return int(str(info["base_url"]).rsplit(":", 1)[1])


async def test_a_batch_pays_through_nginx_with_gzip_and_short_keepalive(
    upstream: dict[str, Any],
) -> None:
    """Every invoice of a batch sent through nginx (gzip, 2 s keep-alive) is paid exactly once."""
    customers = admin(upstream["base_url"], "POST", "invoices", {"count": 200})["customers"]
    with NginxProxy.running(upstream_port(upstream)) as proxy:
        async with FreedomPayClient(MERCHANT, SECRET, base_url=proxy.base_url) as client:
            requests = [PayRequest(customer=c, user_id="u", card_token="tok-1") for c in customers]
            outcomes = [o async for o in client.pay_invoices(requests, concurrency=32)]
    assert len(outcomes) == len(customers)
    assert {o.state for o in outcomes} == {"paid"}
    stats = admin(upstream["base_url"], "GET", "stats?customers=1")
    assert stats["double_charged"] == []
    assert all(stats["invoices"][c]["charges"] == 1 for c in customers)


async def test_nginx_resending_non_idempotent_posts_charges_twice_unseen_by_the_sdk(
    adversarial_upstream: dict[str, Any],
) -> None:
    """
    Nginx with `proxy_next_upstream ... non_idempotent` resends a pay broken after commit itself.

    This is the hazard the README's "Behind a proxy" section warns about: the SDK sent one pay and
    reports one payment, while the gateway charged twice.
    """
    base = adversarial_upstream["base_url"]
    customers = admin(base, "POST", "invoices", {"count": 5})["customers"]
    admin(base, "POST", "faults", {"fault": {"kind": "drop"}, "operation": "pay", "times": 5})
    policy = RetryPolicy(attempts=1)
    with NginxProxy.running(
        upstream_port(adversarial_upstream), resend_non_idempotent=True
    ) as proxy:
        async with FreedomPayClient(
            MERCHANT, SECRET, base_url=proxy.base_url, retry=policy
        ) as client:
            payments = await asyncio.gather(
                *(
                    client.pay_invoice(customer=c, user_id="u", card_token="tok-1")
                    for c in customers
                )
            )
    assert all(p.invoice_status is InvoiceStatus.OK for p in payments)
    stats = admin(base, "GET", "stats?customers=1")
    assert sorted(stats["double_charged"]) == sorted(customers)


async def test_pays_nginx_refused_unforwarded_are_ambiguous_by_default_paid_once_with_window(
    upstream: dict[str, Any],
) -> None:
    """
    Pays nginx answers 502 without forwarding stay `new` at the gateway.

    By default such a pay ends ambiguous (and nothing was charged); with the opt-in window
    (`resend_pay_if_new=True`) its status read proves it never landed and it is paid once. One
    worker: nginx's weighted round robin then refuses exactly every eighth request, so a refused
    pay's status read and resend are never refused too.
    """
    base = upstream["base_url"]
    customers = admin(base, "POST", "invoices", {"count": 80})["customers"]
    halves = {"default": customers[:40], "window": customers[40:]}
    policies = {
        "default": RetryPolicy(reconcile_grace=0.5),
        "window": RetryPolicy(reconcile_grace=0.5, resend_pay_if_new=True),
    }
    states: dict[str, Counter[str]] = {}
    ambiguous: list[str] = []
    with NginxProxy.running(upstream_port(upstream), refuse_one_in=8) as proxy:
        for name, half in halves.items():
            async with FreedomPayClient(
                MERCHANT, SECRET, base_url=proxy.base_url, retry=policies[name]
            ) as client:
                requests = [PayRequest(customer=c, user_id="u", card_token="tok-1") for c in half]
                outcomes = [o async for o in client.pay_invoices(requests, concurrency=1)]
            states[name] = Counter(o.state for o in outcomes)
            ambiguous += [o.request.customer for o in outcomes if o.state == "ambiguous"]
        refused = sum(1 for row in proxy.requests() if row[2] == 502)
    print(f"states={states} refused={refused}")  # noqa: T201
    stats = admin(base, "GET", "stats?customers=1")
    assert stats["double_charged"] == []
    assert refused > 0
    assert states["default"]["ambiguous"] > 0
    assert states["default"]["paid"] + states["default"]["ambiguous"] == len(halves["default"])
    assert all(stats["invoices"][c]["charges"] == 0 for c in ambiguous)
    assert states["window"] == {"paid": len(halves["window"])}
    assert all(stats["invoices"][c]["charges"] == 1 for c in halves["window"])


FREEZE_SECONDS = 4.0
BATCH = 1200
CONCURRENCY = 64


async def test_a_batch_rides_out_two_gateway_freezes_behind_nginx(
    adversarial_upstream: dict[str, Any],
) -> None:
    """
    A 1,200-invoice batch through nginx pays ≥ 99 % once each while the gateway freezes twice.

    Default policies; nginx has a 2 s keep-alive, a 3 s read timeout and gzip on; the gateway
    process is stopped for 4 s after 200 and after 700 outcomes. During each freeze the batch
    waits for the gateway instead of failing what it has not sent.

    Bound on the requests that start during one freeze: 2 per worker. A worker has one exchange
    at a time; one started in the freeze hangs until nginx's 3 s read timeout (or the thaw), so a
    worker starts at most one in the first 3 s; after that failure its item is reconciled (the
    status read waits the grace, 2 s or more: past the freeze) and the 20 failures have opened
    the breaker, so new pays are held and only probes go out (one per 10 s cool-down: none
    within a 4 s freeze).
    """
    base = adversarial_upstream["base_url"]
    pid = adversarial_upstream["process"].pid
    customers = admin(base, "POST", "invoices", {"count": BATCH})["customers"]
    loop = asyncio.get_running_loop()
    freezes: list[tuple[float, float]] = []
    triggers = [200, 700]

    def thaw(started: float) -> None:
        os.kill(pid, signal.SIGCONT)
        freezes.append((started, time.time()))

    def on_progress(progress: BatchProgress) -> None:
        if triggers and progress.done >= triggers[0]:
            triggers.pop(0)
            started = time.time()
            os.kill(pid, signal.SIGSTOP)
            loop.call_later(FREEZE_SECONDS, thaw, started)

    with NginxProxy.running(upstream_port(adversarial_upstream)) as proxy:
        async with FreedomPayClient(MERCHANT, SECRET, base_url=proxy.base_url) as client:
            requests = [PayRequest(customer=c, user_id="u", card_token="tok-1") for c in customers]
            outcomes = [
                o
                async for o in client.pay_invoices(
                    requests, concurrency=CONCURRENCY, on_progress=on_progress
                )
            ]
        served = proxy.requests()
    states = Counter(o.state for o in outcomes)
    errors = Counter(type(o.error).__name__ for o in outcomes if o.error is not None)
    print(f"states={dict(states)} errors={dict(errors)} freezes={len(freezes)}")  # noqa: T201
    assert len(freezes) == 2
    assert len(outcomes) == BATCH
    assert {o.request.customer for o in outcomes} == set(customers)
    stats = admin(base, "GET", "stats?customers=1")
    assert stats["double_charged"] == []
    assert states["paid"] >= 0.99 * BATCH
    for started, ended in freezes:
        during = [row for row in served if started <= row[0] <= ended]
        print(f"freeze {ended - started:.1f}s: {len(during)} requests started")  # noqa: T201
        assert len(during) <= 2 * CONCURRENCY
