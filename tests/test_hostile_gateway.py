"""A misbehaving gateway over raw loopback: drips, encodings, over-cap replies, idle closes."""

from __future__ import annotations

import asyncio
import gzip
import random
import time
import zlib

import aiohttp
import pytest
from hostile_http import PAY_PATH, RawServer, Request, http_reply, xml

from freedompay_async import (
    ConnectionLost,
    DecodeError,
    FreedomPayClient,
    PoolTimeout,
    ReadTimeout,
    RetryPolicy,
    Timeouts,
)
from freedompay_async._config import _Credentials, _WireOptions
from freedompay_async._protocol import Operation, OutgoingRequest, build_request
from freedompay_async._transport import DEADLINE_SLACK, Transport

OK_STATUS = xml(status="ok", invoice_status="new", order_id="o-1")
OK_INFO = xml(status="ok", invoice_status="new", order_id="o-1", description="d")
CREDENTIALS = _Credentials(merchant_id="1", secret_key="k" * 32)


def _request(operation: Operation = Operation.STATUS) -> OutgoingRequest:
    fields: list[tuple[str, str]]
    if operation is Operation.PAY:
        fields = [("customer", "c-1"), ("user_id", "u-1"), ("card_token", "tok-1234567890")]
    else:
        fields = [("merchant_id", "1"), ("customer", "c-1")]
    return build_request(operation, fields, credentials=CREDENTIALS, wire=_WireOptions())


def _transport(base_url: str, **overrides: object) -> Transport:
    options: dict[str, object] = {
        "base_url": base_url,
        "max_concurrency": 2,
        "max_response_bytes": 4096,
        "timeouts": Timeouts(connect=2.0, read=2.0, pool=2.0),
        "session": None,
        "user_agent": "test",
    }
    options.update(overrides)
    return Transport(**options)  # type: ignore[arg-type]


async def _drip(request: Request, writer: asyncio.StreamWriter) -> bool:
    """Announce 600 bytes, then send one byte a second (never finishing within a test)."""
    del request
    writer.write(http_reply(length=600))
    for _ in range(600):
        writer.write(b" ")
        await writer.drain()
        await asyncio.sleep(1.0)
    return False


def _replying(*bodies: bytes, encoding: str | None = None) -> tuple[list[bytes], object]:
    queue = list(bodies)

    async def handler(request: Request, writer: asyncio.StreamWriter) -> bool:
        del request
        body = queue.pop(0) if queue else OK_STATUS
        headers = (("Content-Encoding", encoding),) if encoding and body is not OK_STATUS else ()
        writer.write(http_reply(body=body, headers=headers))
        await writer.drain()
        return True

    return queue, handler


# -- the deadline over the body -----------------------------------------------------------------


@pytest.mark.parametrize("operation", ["invoice_status", "invoice_info"])
async def test_dripping_reply_ends_within_the_deadline(operation: str) -> None:
    """A 1-byte-per-second reply ends a read call within deadline + 1 s, as a ReadTimeout."""
    deadline = 3.0
    async with RawServer(_drip) as server:
        client = FreedomPayClient(
            "1",
            "k" * 32,
            base_url=server.base_url,
            retry=RetryPolicy(attempts=4, deadline=deadline, backoff_base=0.0),
            timeouts=Timeouts(connect=2.0, read=2.0, pool=2.0),
            max_concurrency=1,
        )
        async with client:
            start = time.monotonic()
            with pytest.raises(ReadTimeout):
                await getattr(client, operation)(customer="c-1")
            elapsed = time.monotonic() - start
            assert client._transport.gate.in_use == 0
    assert elapsed <= deadline + 1.0, elapsed
    assert elapsed >= deadline - 0.5, elapsed  # the read timeout alone (2 s) never fired


async def test_pay_attempt_is_cut_at_the_deadline() -> None:
    """A pay whose reply drips is cut when the time left runs out: ReadTimeout, sent once."""
    async with RawServer(_drip) as server:
        transport = _transport(server.base_url)
        try:
            start = time.monotonic()
            with pytest.raises(ReadTimeout, match="deadline passed") as caught:
                await transport.send(_request(Operation.PAY), remaining=2.0)
            elapsed = time.monotonic() - start
        finally:
            await transport.close()
        assert server.count(PAY_PATH) == 1
    assert 2.0 - 0.1 <= elapsed <= 2.0 + DEADLINE_SLACK + 1.0, elapsed
    assert caught.value.operation == "pay"
    assert transport.gate.in_use == 0


@pytest.mark.parametrize("remaining", [0.0, -1.0])
async def test_exhausted_deadline_sends_nothing(remaining: float) -> None:
    """With no time left the exchange fails at once as not sent, and the server sees nothing."""
    _, handler = _replying()
    async with RawServer(handler) as server:  # type: ignore[arg-type]
        transport = _transport(server.base_url)
        try:
            with pytest.raises(PoolTimeout, match="deadline passed"):
                await transport.send(_request(Operation.PAY), remaining=remaining)
        finally:
            await transport.close()
        assert server.requests == []
    assert transport.gate.in_use == 0


# -- encodings and the decoded cap --------------------------------------------------------------


async def test_accept_encoding_is_the_one_the_sdk_decodes() -> None:
    """Every request asks for gzip or deflate only, on the SDK's session and on a caller's."""
    _, handler = _replying()
    async with RawServer(handler) as server:  # type: ignore[arg-type]
        own = _transport(server.base_url)
        session = aiohttp.ClientSession()
        theirs = _transport(server.base_url, session=session)
        try:
            await own.send(_request(), remaining=5.0)
            await theirs.send(_request(), remaining=5.0)
        finally:
            await own.close()
            await session.close()
    assert [r.headers["accept-encoding"] for r in server.requests] == ["gzip, deflate"] * 2


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
    ],
)
async def test_compressed_reply_is_decoded(encoding: str, compress: object) -> None:
    """A small gzip or deflate reply decodes to the same bytes the server compressed."""
    _, handler = _replying(compress(OK_STATUS), encoding=encoding)  # type: ignore[operator]
    async with RawServer(handler) as server:  # type: ignore[arg-type]
        transport = _transport(server.base_url)
        try:
            raw = await transport.send(_request(), remaining=5.0)
        finally:
            await transport.close()
    assert raw.body == OK_STATUS


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        (None, b"x" * (4 << 20)),
        ("gzip", gzip.compress(random.Random(1).randbytes(4 << 20), compresslevel=1)),
    ],
)
async def test_over_cap_reply_is_cut_and_its_connection_dropped(
    encoding: str | None, body: bytes
) -> None:
    """Over the decoded cap the body stops at cap + 1 and the next call opens a new connection."""
    _, handler = _replying(body, encoding=encoding)
    async with RawServer(handler) as server:  # type: ignore[arg-type]
        transport = _transport(server.base_url)
        try:
            first = await transport.send(_request(), remaining=5.0)
            second = await transport.send(_request(), remaining=5.0)
            third = await transport.send(_request(), remaining=5.0)
        finally:
            await transport.close()
        connections = server.connections
    assert len(first.body) == 4096 + 1
    assert second.body == third.body == OK_STATUS
    assert connections == 2  # the bomb's socket was closed; the next two shared one


async def test_caller_session_that_decompresses_is_still_capped() -> None:
    """A caller's session with auto_decompress=True cannot inflate a bomb past the cap."""
    bomb = gzip.compress(b"\0" * (8 << 20))
    _, handler = _replying(bomb, encoding="gzip")
    async with RawServer(handler) as server:  # type: ignore[arg-type]
        session = aiohttp.ClientSession(auto_decompress=True)
        transport = _transport(server.base_url, session=session)
        try:
            raw = await transport.send(_request(), remaining=5.0)
        finally:
            await session.close()
    assert len(raw.body) == 4096 + 1


@pytest.mark.parametrize(
    ("encoding", "body", "message"),
    [
        ("br", b"\x0b\x02\x80hello\x03", "not supported"),
        ("zstd", b"(\xb5/\xfd\x00Xhello", "not supported"),
        ("gzip, gzip", gzip.compress(gzip.compress(OK_STATUS)), "stacked"),
        ("gzip", b"\x1f\x8b\x08\x00garbage-garbage", "corrupt"),
        ("gzip", gzip.compress(OK_STATUS)[:-12], "truncated"),
        ("deflate", zlib.compress(OK_STATUS) + b"trailing", "after the end"),
    ],
)
async def test_undecodable_reply_is_a_decode_error(
    encoding: str, body: bytes, message: str
) -> None:
    """An unsupported, stacked, corrupt or truncated encoding is a DecodeError saying which."""
    _, handler = _replying(body, encoding=encoding)
    async with RawServer(handler) as server:  # type: ignore[arg-type]
        transport = _transport(server.base_url)
        try:
            with pytest.raises(DecodeError, match=message) as caught:
                await transport.send(_request(), remaining=5.0)
        finally:
            await transport.close()
    assert caught.value.status_code == 200
    assert caught.value.operation == "status"
    assert transport.gate.in_use == 0


# -- idle keep-alive connections ----------------------------------------------------------------


async def _idle_race(keepalive: float, *, server_idle: float, gap: float, sends: int) -> int:
    """
    Send pays *gap* seconds apart to a server that drops requests on connections idle >= T.

    The server models a peer that closes idle keep-alive connections: a request arriving on a
    connection idle for `server_idle` or more is the one that crosses the server's close, so it
    is dropped unanswered, exactly as a request written into a closing socket is.

    Returns:
        How many pays ended as ConnectionLost (ambiguous).
    """
    last_write: dict[asyncio.StreamWriter, float] = {}  # the writer itself: ids get reused

    async def handler(request: Request, writer: asyncio.StreamWriter) -> bool:
        del request
        now = time.monotonic()
        if writer in last_write and now - last_write[writer] >= server_idle:
            return False  # closed under the request
        writer.write(http_reply(body=xml(status="ok", invoice_status="ok", order_id="o")))
        await writer.drain()
        last_write[writer] = time.monotonic()
        return True

    lost = 0
    async with RawServer(handler) as server:
        transport = _transport(
            server.base_url, timeouts=Timeouts(connect=2.0, read=2.0, pool=2.0, keepalive=keepalive)
        )
        try:
            for _ in range(sends):
                try:
                    await transport.send(_request(Operation.PAY), remaining=5.0)
                except ConnectionLost:
                    lost += 1
                await asyncio.sleep(gap)
        finally:
            await transport.close()
    return lost


async def test_idle_connections_are_retired_before_the_server_closes_them() -> None:
    """Pays spaced past the server's idle timeout: none is lost when keepalive is shorter."""
    server_idle = 0.3
    old = await _idle_race(30.0, server_idle=server_idle, gap=server_idle * 1.3, sends=6)
    new = await _idle_race(server_idle / 2, server_idle=server_idle, gap=server_idle * 1.3, sends=6)
    assert old >= 3  # a long keep-alive reuses sockets the server has given up on
    assert new == 0
