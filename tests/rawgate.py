"""A hostile gateway on a raw asyncio socket: it charges every pay it receives, whatever next."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
from collections.abc import Callable
from typing import Self

_CUSTOMER = re.compile(rb'name="customer"\r\n\r\n([^\r]*)\r\n')

#: A reply for one request: the full raw HTTP response, or None to hold the connection open
#: without ever answering.
Reply = bytes | None


def xml(invoice_status: str = "process", *, status: str = "ok", code: int = 200) -> bytes:
    """Build a complete HTTP/1.1 reply carrying an invoice XML body."""
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><root><status>{status}</status>"
        f"<invoice_status>{invoice_status}</invoice_status><amount>100</amount>"
        "<dt>2024-07-19T23:42:10Z</dt></root>"
    ).encode()
    head = (
        f"HTTP/1.1 {code} X\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def raw_status(code: int, *extra: str) -> bytes:
    """Build a bodiless HTTP/1.1 reply with the given status code and header lines."""
    lines = [f"HTTP/1.1 {code} X", *extra]
    if not any(line.lower().startswith("content-length") for line in extra) and code >= 200:
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawGateway:
    """
    A loopback server that speaks just enough HTTP/1.1 for the client.

    Every request to `/pay` counts as a charge of its `customer` before any reply is chosen.
    `on_pay(customer)` and `on_status(customer)` choose the raw reply (or None: never answer).
    """

    def __init__(
        self,
        *,
        on_pay: Callable[[str], Reply] = lambda _c: xml("process"),
        on_status: Callable[[str], Reply] = lambda _c: xml("process"),
    ) -> None:
        self.on_pay = on_pay
        self.on_status = on_status
        self.charges: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self.held = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def double_charged(self) -> list[str]:
        """Customers charged more than once."""
        return sorted(c for c, n in self.charges.items() if n > 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                path = request_line.split(" ")[1]
                length = 0
                for line in header_lines:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                found = _CUSTOMER.search(body)
                customer = found.group(1).decode() if found else ""
                operation = path.rsplit("/", 1)[-1]
                self.requests[operation] += 1
                if operation == "pay":
                    self.charges[customer] += 1
                    reply = self.on_pay(customer)
                else:
                    reply = self.on_status(customer)
                if reply is None:
                    self.held += 1
                    await asyncio.Event().wait()  # hold the request: charged, never answered
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
