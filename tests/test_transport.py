"""The transport: aiohttp errors mapped, the FIFO gate, capped reads over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from freedompay_async import (
    ConfigurationError,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    PoolTimeout,
    ReadTimeout,
    Timeouts,
)
from freedompay_async._config import _Credentials, _WireOptions
from freedompay_async._protocol import Operation, build_request
from freedompay_async._retry import Outcome, classify
from freedompay_async._transport import AIOHTTP_ERROR_MAP, FifoGate, Transport, map_client_error


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found.add(sub)
        found |= _all_subclasses(sub)
    return found


CLIENT_ERRORS = sorted(_all_subclasses(aiohttp.ClientError), key=lambda c: c.__name__)

# The class each aiohttp error must be treated as, for money: not sent, or ambiguous.
NOT_SENT = {
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    aiohttp.ServerFingerprintMismatch,
}


def _instance(cls: type[BaseException]) -> BaseException:
    """Make an instance without running constructors that need live objects."""
    return cls.__new__(cls)


@pytest.mark.parametrize("cls", CLIENT_ERRORS, ids=lambda c: c.__name__)
def test_every_aiohttp_client_error_has_a_row(cls: type[BaseException]) -> None:
    """Every aiohttp ClientError subclass maps through an explicit row to a public class."""
    rows = [source for source, _ in AIOHTTP_ERROR_MAP if issubclass(cls, source)]
    assert rows, f"{cls.__name__} has no row"
    mapped = map_client_error(_instance(cls), "pay")
    outcome = classify(mapped, moves_money=True)
    if any(issubclass(cls, base) for base in NOT_SENT):
        assert outcome is Outcome.NOT_SENT, cls
    elif isinstance(mapped, ConfigurationError):
        assert outcome is Outcome.LOCAL
    else:
        assert outcome is Outcome.AMBIGUOUS, f"{cls.__name__} -> {type(mapped).__name__}"


def test_specific_mappings() -> None:
    """Connect timeouts are not sent; socket and bare timeouts are read timeouts (ambiguous)."""
    assert isinstance(
        map_client_error(_instance(aiohttp.ConnectionTimeoutError), "pay"), ConnectTimeout
    )
    assert isinstance(map_client_error(_instance(aiohttp.SocketTimeoutError), "pay"), ReadTimeout)
    assert isinstance(map_client_error(TimeoutError(), "pay"), ReadTimeout)
    assert isinstance(
        map_client_error(_instance(aiohttp.ServerDisconnectedError), "pay"), ConnectionLost
    )
    assert isinstance(
        map_client_error(_instance(aiohttp.ClientConnectorDNSError), "init"), ConnectError
    )


async def test_fifo_gate_serves_waiters_in_arrival_order() -> None:
    """Slots go to waiters strictly in the order they queued."""
    gate = FifoGate(1)
    await gate.acquire()
    order: list[int] = []

    async def waiter(n: int) -> None:
        await gate.acquire()
        order.append(n)
        gate.release()

    tasks = [asyncio.create_task(waiter(n)) for n in range(5)]
    await asyncio.sleep(0)
    assert gate.waiting == 5
    gate.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert gate.in_use == 0


async def test_cancelled_waiter_neither_leaks_nor_steals_a_slot() -> None:
    """A waiter cancelled in the queue leaves it; the slot goes to the next waiter."""
    gate = FifoGate(1)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    gate.release()
    await second
    assert first.cancelled()
    assert gate.in_use == 1
    gate.release()
    assert gate.in_use == 0


async def test_waiter_cancelled_as_the_slot_arrives_passes_it_on() -> None:
    """A slot handed to a waiter that is cancelled in the same step is passed on, not lost."""
    gate = FifoGate(1)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # the slot goes to `first`...
    first.cancel()  # ...which is cancelled before it runs
    await second
    assert gate.in_use == 1
    gate.release()
    assert gate.in_use == 0


def _request(operation: Operation = Operation.STATUS) -> object:
    return build_request(
        operation,
        [("merchant_id", "1"), ("customer", "c")],
        credentials=_Credentials(merchant_id="1", secret_key="k"),
        wire=_WireOptions(),
    )


@pytest.fixture
async def raw_server() -> AsyncIterator[tuple[str, dict[str, object]]]:
    """A tiny aiohttp server whose behaviour a test sets through a dict."""
    cookies_seen: list[str | None] = []
    behaviour: dict[str, object] = {"mode": "ok", "cookies_seen": cookies_seen}
    released = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        mode = behaviour["mode"]
        if mode == "slow":
            # Answer only once the test is over: no timing race with the client's read timeout.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), timeout=60.0)
        if mode == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if mode == "big":
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(64):
                await response.write(b"x" * 1024)
            await response.write_eof()
            return response
        cookies_seen.append(request.headers.get("Cookie"))
        response = web.Response(
            body=b"<root><status>ok</status></root>", content_type="application/xml"
        )
        if mode == "cookie":
            response.set_cookie("lb", "sticky-1")
        return response

    app = web.Application()
    app.router.add_post("/v5/merchant/invoice/{op}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", behaviour
    released.set()
    await runner.cleanup()


def _transport(base_url: str, **overrides: object) -> Transport:
    options: dict[str, object] = {
        "base_url": base_url,
        "max_concurrency": 4,
        "max_response_bytes": 1 << 20,
        "timeouts": Timeouts(connect=1.0, read=0.2, pool=0.2),
        "session": None,
        "user_agent": "test",
    }
    options.update(overrides)
    return Transport(**options)  # type: ignore[arg-type]


async def test_reply_is_read_and_the_slot_released(
    raw_server: tuple[str, dict[str, object]],
) -> None:
    """A normal exchange returns status, headers and body, and frees the gate slot."""
    transport = _transport(raw_server[0])
    try:
        raw = await transport.send(_request(), remaining=5.0)  # type: ignore[arg-type]
        assert raw.status == 200
        assert raw.body == b"<root><status>ok</status></root>"
        assert raw.headers["content-type"].startswith("application/xml")
        assert transport.gate.in_use == 0
    finally:
        await transport.close()


async def test_a_gateways_cookies_are_neither_kept_nor_sent(
    raw_server: tuple[str, dict[str, object]],
) -> None:
    """A Set-Cookie reply leaves the client's own session without cookies for the next request."""
    raw_server[1]["mode"] = "cookie"
    # A host name, not an IP address: aiohttp's cookie jar ignores cookies of IP hosts.
    transport = _transport(raw_server[0].replace("127.0.0.1", "localhost"))
    try:
        for _ in range(2):
            raw = await transport.send(_request(), remaining=5.0)  # type: ignore[arg-type]
            assert "Set-Cookie" in raw.headers
        assert raw_server[1]["cookies_seen"] == [None, None]
    finally:
        await transport.close()


async def test_slow_reply_is_a_read_timeout(raw_server: tuple[str, dict[str, object]]) -> None:
    """No reply within the read timeout raises ReadTimeout (ambiguous)."""
    raw_server[1]["mode"] = "slow"
    transport = _transport(raw_server[0])
    try:
        with pytest.raises(ReadTimeout):
            await transport.send(_request(), remaining=5.0)  # type: ignore[arg-type]
        assert transport.gate.in_use == 0
    finally:
        await transport.close()


async def test_dropped_connection_is_connection_lost(
    raw_server: tuple[str, dict[str, object]],
) -> None:
    """A server that closes the socket instead of answering gives ConnectionLost."""
    raw_server[1]["mode"] = "drop"
    transport = _transport(raw_server[0])
    try:
        with pytest.raises(ConnectionLost):
            await transport.send(_request(Operation.PAY), remaining=5.0)  # type: ignore[arg-type]
    finally:
        await transport.close()


async def test_oversized_reply_is_cut_at_the_cap(raw_server: tuple[str, dict[str, object]]) -> None:
    """A reply larger than the cap is read only up to cap + 1 bytes."""
    raw_server[1]["mode"] = "big"
    transport = _transport(raw_server[0], max_response_bytes=4096)
    try:
        raw = await transport.send(_request(), remaining=5.0)  # type: ignore[arg-type]
        assert len(raw.body) == 4097
    finally:
        await transport.close()


async def test_refused_connection_is_connect_error() -> None:
    """Nothing listening on the port gives ConnectError (not sent)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = _transport(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(ConnectError):
            await transport.send(_request(Operation.PAY), remaining=5.0)  # type: ignore[arg-type]
    finally:
        await transport.close()


async def test_full_gate_gives_pool_timeout(raw_server: tuple[str, dict[str, object]]) -> None:
    """With every slot held, a caller waits Timeouts.pool and then gets PoolTimeout."""
    transport = _transport(raw_server[0], max_concurrency=1)
    await transport.gate.acquire()
    try:
        with pytest.raises(PoolTimeout):
            await transport.send(_request(), remaining=5.0)  # type: ignore[arg-type]
        assert transport.gate.waiting == 0
    finally:
        transport.gate.release()
        await transport.close()


def test_bad_base_url_is_a_configuration_error() -> None:
    """A base_url that is not absolute http(s) is refused before any loop exists."""
    with pytest.raises(ConfigurationError, match="base_url"):
        _transport("ftp://example")


async def test_caller_session_limit_caps_the_gate(
    raw_server: tuple[str, dict[str, object]],
) -> None:
    """With a caller-owned session, the gate is no larger than its connector's limit."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=3)) as session:
        transport = _transport(raw_server[0], max_concurrency=10, session=session)
        assert transport.gate.size == 3
        assert not transport.owns_session
        await transport.close()
        assert not session.closed
