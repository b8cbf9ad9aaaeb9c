"""Refunds against a raw asyncio gateway that refunds every request, then misbehaves."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Self

import pytest

from freedompay_async import (
    AmbiguousWriteError,
    DuplicateWriteError,
    FreedomPayClient,
    RefundResult,
    RetryPolicy,
    Timeouts,
)
from freedompay_async.testing import VirtualClock
from freedompay_async.testing._classic_wire import signed_items

SECRET = "hostile-secret"
MERCHANT = "777"
PID = 5

Reply = bytes | None


def _xml(items: list[tuple[str, object]]) -> str:
    out = []
    for name, value in items:
        inner = value if isinstance(value, str) else _xml(value)  # type: ignore[arg-type]
        out.append(f"<{name}>{inner}</{name}>")
    return "".join(out)


def status_reply(refunds: list[tuple[int, Decimal]]) -> bytes:
    """A signed get_status3 reply of a captured payment of 100 with *refunds*."""
    items: list[tuple[str, object]] = [
        ("pg_status", "ok"),
        ("pg_payment_id", str(PID)),
        ("pg_amount", "100"),
        ("pg_payment_status", "success"),
        ("pg_captured", "1"),
    ]
    if refunds:
        entries = [
            (
                "pg_refund_payment",
                [
                    ("pg_payment_id", str(rid)),
                    ("pg_payment_status", "success"),
                    ("pg_amount", f"-{amount}"),
                ],
            )
            for rid, amount in refunds
        ]
        items.append(("pg_refund_payments", entries))
    signed = signed_items("get_status3.php", items, SECRET)  # type: ignore[arg-type]
    body = f"<?xml version='1.0' encoding='utf-8'?><response>{_xml(signed)}</response>".encode()  # type: ignore[arg-type]
    return _http(200, body)


def _http(code: int, body: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {code} X", "Content-Type: application/xml", *extra]
    if not any(line.lower().startswith("content-length") for line in extra):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class RefundGate:
    """Loopback HTTP/1.1: every `/revoke.php` request refunds 30 before a reply is chosen."""

    def __init__(self, on_refund: Callable[[int], Reply]) -> None:
        self.on_refund = on_refund
        self.requests: collections.Counter[str] = collections.Counter()
        self.refunds: list[tuple[int, Decimal]] = []
        self.lag = 0  # status reads that still show the state before the latest refund
        self.silent_reads = 0  # status reads never answered
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.arrived: collections.defaultdict[str, asyncio.Event] = collections.defaultdict(
            asyncio.Event
        )

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        """The server's URL."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            self.requests[path] += 1
            self.arrived[path].set()
            if path.endswith("/revoke.php"):
                self.refunds.append((9000 + len(self.refunds), Decimal(30)))
                reply = self.on_refund(self.requests[path])
            elif self.silent_reads > 0:
                self.silent_reads -= 1
                reply = None
            elif self.lag > 0:
                self.lag -= 1
                reply = status_reply(self.refunds[:-1])
            else:
                reply = status_reply(self.refunds)
            if reply is None:
                await asyncio.sleep(3600)
                return
            writer.write(reply)
            await writer.drain()


def _client(gate: RefundGate, *, attempts: int = 3) -> FreedomPayClient:
    return FreedomPayClient(
        MERCHANT,
        SECRET,
        base_url=gate.base_url,
        clock=VirtualClock(),
        timeouts=Timeouts(connect=1.0, read=0.3, pool=1.0),
        retry=RetryPolicy(attempts=attempts, deadline=30.0, reconcile_grace=0.5),
    )


@pytest.mark.parametrize(
    "reply",
    [
        _http(200, b"<response><pg_status>o", "Content-Length: 400"),  # a length that lies
        _http(502, b"bad gateway"),
        _http(302, b"", "Location: http://127.0.0.1:1/elsewhere"),
        _http(200, b"\x00\xffnot xml at all"),
        None,  # never answers: a read timeout after the write
    ],
    ids=["short-body", "502", "redirect", "garbage", "silent"],
)
async def test_a_refund_that_landed_is_found_by_status_and_never_resent(reply: Reply) -> None:
    """Whatever the reply, the status proves the refund landed: one refund request, a result."""
    async with RefundGate(lambda _n: reply) as gate, _client(gate) as client:
        result = await client.refund_payment(payment_id=PID, amount=Decimal(30))
    assert isinstance(result, RefundResult)
    assert result.refund_payment_id == 9000
    assert gate.requests["/revoke.php"] == 1
    assert len(gate.refunds) == 1


async def test_a_status_that_lags_past_every_read_is_reported_not_resent() -> None:
    """The status never shows the refund within the call: AmbiguousWriteError, one refund."""
    async with RefundGate(lambda _n: _http(500, b"oops")) as gate, _client(gate) as client:
        gate.lag = 100
        with pytest.raises(AmbiguousWriteError) as caught:
            await client.refund_payment(payment_id=PID, amount=Decimal(30))
    assert caught.value.payment_id == PID
    assert gate.requests["/revoke.php"] == 1
    assert gate.requests["/get_status3.php"] == 1 + 3  # the read before, then three reads


async def test_a_refund_cancelled_in_flight_is_never_sent_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Cancelled in flight: the claim stays ambiguous, a repeat is refused, a warning says why."""
    caplog.set_level(logging.WARNING, logger="freedompay_async")
    async with RefundGate(lambda _n: None) as gate, _client(gate) as client:
        task = asyncio.create_task(client.refund_payment(payment_id=PID, amount=Decimal(30)))
        await gate.arrived["/revoke.php"].wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(DuplicateWriteError) as caught:
            await client.refund_payment(payment_id=PID, amount=Decimal(30))
    assert caught.value.claim is not None
    assert caught.value.claim.state == "ambiguous"
    assert gate.requests["/revoke.php"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        m.startswith("refund cancelled with its outcome unknown: read payment_status")
        for m in warnings
    ), warnings


async def test_a_refund_cancelled_before_it_was_sent_is_released(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Cancelled during the status read before it: nothing was sent, the claim is released."""
    caplog.set_level(logging.WARNING, logger="freedompay_async")
    async with RefundGate(lambda _n: _http(500, b"oops")) as gate, _client(gate) as client:
        gate.silent_reads = 1
        task = asyncio.create_task(client.refund_payment(payment_id=PID, amount=Decimal(30)))
        await gate.arrived["/get_status3.php"].wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gate.requests["/revoke.php"] == 0
        result = await client.refund_payment(payment_id=PID, amount=Decimal(30))
    assert result.refund_payment_id == 9000
    assert gate.requests["/revoke.php"] == 1
    assert not any("outcome unknown" in r.getMessage() for r in caplog.records)
