"""The transport's deadline watcher: its cancellation becomes ReadTimeout, nobody else's does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from freedompay_async import ReadTimeout, Timeouts
from freedompay_async._config import _Credentials, _WireOptions
from freedompay_async._gate import DeadlineWatcher
from freedompay_async._protocol import Operation, build_request
from freedompay_async._transport import Transport

Talk = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def _serve(talk: Talk) -> AsyncIterator[str]:
    """A loopback server running *talk* per connection; every handler is cancelled at the end."""
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            with contextlib.suppress(ConnectionError):
                await talk(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def _never_answer(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    while await reader.read(4096):
        pass


def _silent_server() -> contextlib.AbstractAsyncContextManager[str]:
    """A server that reads requests and never answers (the exchange hangs until cut)."""
    return _serve(_never_answer)


def _dripping_server(gap: float) -> contextlib.AbstractAsyncContextManager[str]:
    """A server that answers its headers at once, then one body byte every *gap* seconds."""

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n")
        writer.write(b"Content-Length: 100000\r\n\r\n")
        for _ in range(100_000):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(gap)

    return _serve(drip)


def _transport(base_url: str, *, read: float = 30.0) -> Transport:
    return Transport(
        base_url=base_url,
        max_concurrency=2,
        max_response_bytes=1 << 20,
        timeouts=Timeouts(connect=1.0, read=read, pool=1.0),
        session=None,
        user_agent="test",
    )


def _request() -> object:
    credentials = _Credentials(merchant_id="1", secret_key="k")
    wire = _WireOptions(
        body_format="multipart",
        jws_header_key="path",
        qr_customer_param="customer",
        max_response_bytes=1 << 20,
    )
    return build_request(
        Operation.STATUS,
        [("merchant_id", "1"), ("customer", "c1")],
        credentials=credentials,
        wire=wire,
    )


async def test_the_deadline_cuts_a_silent_exchange_as_a_read_timeout() -> None:
    """An exchange that never answers ends as ReadTimeout soon after its deadline, slot freed."""
    async with _silent_server() as url:
        transport = _transport(url)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ReadTimeout):
                await transport.send(_request(), remaining=0.3)  # type: ignore[arg-type]
            took = loop.time() - started
            assert 0.3 <= took < 0.3 + 0.05 + 0.1 + 0.2
            assert transport.gate.in_use == 0
            task = asyncio.current_task()
            assert task is not None
            assert task.cancelling() == 0
        finally:
            await transport.close()


@pytest.mark.parametrize("server", ["silent", "dripping"])
async def test_timeouts_read_bounds_the_whole_attempt(server: str) -> None:
    """Timeouts.read ends an attempt that never answers, or drips its body, on time."""
    make = _silent_server() if server == "silent" else _dripping_server(0.02)
    async with make as url:
        transport = _transport(url, read=0.3)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ReadTimeout, match=r"Timeouts\.read"):
                await transport.send(_request(), remaining=30.0)  # type: ignore[arg-type]
            took = loop.time() - started
            assert 0.3 <= took < 0.3 + 0.05 + 0.1 + 0.3
            assert transport.gate.in_use == 0
        finally:
            await transport.close()


async def test_a_callers_cancellation_is_never_turned_into_a_timeout() -> None:
    """Cancelling the caller while its exchange is watched raises CancelledError, slot freed."""
    async with _silent_server() as url:
        transport = _transport(url)
        try:
            request = _request()
            call = asyncio.ensure_future(transport.send(request, remaining=30.0))  # type: ignore[arg-type]
            await asyncio.sleep(0)  # send() takes its slot before its first await
            assert transport.gate.in_use == 1
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert transport.gate.in_use == 0
        finally:
            await transport.close()


async def test_a_cancellation_at_the_deadline_still_propagates() -> None:
    """A caller cancelled in the same tick its deadline fires is cancelled, not timed out."""
    async with _silent_server() as url:
        transport = _transport(url)
        try:
            call = asyncio.ensure_future(transport.send(_request(), remaining=0.2))  # type: ignore[arg-type]
            loop = asyncio.get_running_loop()
            # Cancel just after the watcher's check has cancelled the task for its deadline.
            loop.call_later(0.2 + 0.05 + 0.1 + 0.001, call.cancel)
            with pytest.raises((asyncio.CancelledError, ReadTimeout)) as caught:
                await call
            if isinstance(caught.value, ReadTimeout):
                # The deadline won the race and the call ended before the caller's cancel.
                assert call.done()
            assert transport.gate.in_use == 0
        finally:
            await transport.close()


async def test_the_watcher_cancels_only_what_is_past_due_and_stops_when_idle() -> None:
    """Two watched tasks: the overdue one is cancelled and reported, the other released clean."""
    watcher = DeadlineWatcher(tick=0.02)
    slow = asyncio.ensure_future(asyncio.sleep(10))
    quick = asyncio.ensure_future(asyncio.sleep(10))
    await asyncio.sleep(0)
    watcher.watch(slow, 0.05)
    watcher.watch(quick, 5.0)
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert watcher.release(slow) is True
    assert watcher.release(quick) is False
    quick.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await quick
    await asyncio.sleep(0.05)  # one more tick finds nothing left to watch
    assert watcher._handle is None
