"""Shared fixtures: the emulator on loopback, a client factory, and a loop-blocking detector."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from freedompay_async import FreedomPayClient, PollPolicy, RetryPolicy, Timeouts
from freedompay_async.testing import FreedomPayEmulator, VirtualClock

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _no_blocking_calls(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test whose code blocks the event loop (time.sleep, sync file or socket I/O)."""
    if request.node.get_closest_marker("blocking_ok"):
        yield
        return
    from blockbuster import blockbuster_ctx

    with blockbuster_ctx("freedompay_async") as bb:
        yield
        del bb


@pytest.fixture
async def emulator() -> AsyncIterator[FreedomPayEmulator]:
    """A fresh emulator on 127.0.0.1 with a free port."""
    async with FreedomPayEmulator(seed=1) as emu:
        yield emu


#: Fast policies for tests: virtual sleeps, short real read timeouts.
FAST_TIMEOUTS = Timeouts(connect=2.0, read=2.0, pool=2.0)
FAST_RETRY = RetryPolicy(attempts=4, deadline=30.0, reconcile_grace=0.5)
FAST_POLL = PollPolicy(interval=0.5, factor=1.5, max_interval=2.0, timeout=30.0)


@pytest.fixture
def make_client(emulator: FreedomPayEmulator) -> Callable[..., FreedomPayClient]:
    """Build clients bound to the emulator, with a virtual clock and a seeded random source."""

    def factory(**options: Any) -> FreedomPayClient:
        options.setdefault("base_url", emulator.base_url)
        options.setdefault("clock", VirtualClock())
        options.setdefault("rng", random.Random(1234))
        options.setdefault("timeouts", FAST_TIMEOUTS)
        options.setdefault("retry", FAST_RETRY)
        options.setdefault("poll", FAST_POLL)
        return FreedomPayClient(emulator.merchant_id, emulator.secret_key, **options)

    return factory


# ---------------------------------------------------------------------------------------------
# One client factory for every test that builds clients, and waits on conditions, not sleeps.


def build_client(
    gateway: FreedomPayEmulator | str,
    *,
    merchant_id: str | None = None,
    secret_key: str | None = None,
    **options: Any,
) -> FreedomPayClient:
    """
    Build a client for an emulator or a raw server's base URL, with the fast test defaults.

    Args:
        gateway: An emulator (its credentials and URL are used) or a base URL.
        merchant_id: The merchant id; the emulator's, or `123456` for a URL.
        secret_key: The secret key; the emulator's, or a placeholder for a URL.
        **options: Client options; each one given replaces its default.

    Returns:
        The client, not yet entered.
    """
    if isinstance(gateway, FreedomPayEmulator):
        options.setdefault("base_url", gateway.base_url)
        merchant_id = merchant_id if merchant_id is not None else gateway.merchant_id
        secret_key = secret_key if secret_key is not None else gateway.secret_key
    else:
        options.setdefault("base_url", gateway)
    options.setdefault("clock", VirtualClock())
    options.setdefault("rng", random.Random(1234))
    options.setdefault("timeouts", FAST_TIMEOUTS)
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("poll", FAST_POLL)
    return FreedomPayClient(
        merchant_id if merchant_id is not None else "123456",
        secret_key if secret_key is not None else "not-a-real-secret",
        **options,
    )


@pytest.fixture(scope="session")
def client_for() -> Callable[..., FreedomPayClient]:
    """The one client factory: `client_for(emulator_or_url, **options)` (see `build_client`)."""
    return build_client


@pytest.fixture(scope="session")
def wait_until() -> Callable[..., Awaitable[None]]:
    """Wait, bounded in time, until a predicate holds; the failure names `what` was awaited."""

    async def wait(predicate: Callable[[], bool], *, within: float = 10.0, what: str = "") -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + within
        while not predicate():
            if loop.time() > give_up:
                pytest.fail(f"{what or 'condition'} not met within {within} s")
            await asyncio.sleep(0.005)

    return wait


@pytest.fixture(scope="session")
def until_idle(wait_until: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Wait until an emulator holds no request, so late commits are counted before asserting."""

    async def idle(emu: FreedomPayEmulator, *, within: float = 10.0) -> None:
        await wait_until(lambda: emu.stats.in_flight == 0, within=within, what="emulator idle")

    return idle


# -- Redis ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """One real redis-server on 127.0.0.1 per test module (skips when it is not installed)."""
    from redis_server import RedisServer

    with RedisServer.running() as server:
        yield server.url
