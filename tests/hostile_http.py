"""
A raw asyncio HTTP/1.1 server for tests: every reply is scripted, byte for byte.

Not the emulator: these servers misbehave on purpose (compression bombs, drips, echoes of the
request, idle closes), which aiohttp's own server would not let a test do. Each request is parsed
just enough (request line, headers, a Content-Length body) and recorded, so a test counts the
charges the server saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self

__all__ = [
    "PAY_PATH",
    "STATUS_PATH",
    "RawServer",
    "Request",
    "deflate_bomb",
    "gzip_bomb",
    "http_reply",
    "xml",
]

PAY_PATH = "/v5/merchant/invoice/pay"
STATUS_PATH = "/v5/merchant/invoice/status"
INFO_PATH = "/v5/merchant/invoice/info"


@dataclass
class Request:
    """One request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def field(self, name: str) -> str | None:
        """Return a multipart field's value, or None."""
        marker = f'name="{name}"\r\n\r\n'.encode()
        start = self.body.find(marker)
        if start < 0:
            return None
        start += len(marker)
        end = self.body.find(b"\r\n", start)
        return self.body[start:end].decode("utf-8", "surrogateescape")


#: Handler: given the request and the writer, write a reply; return False to close.
Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class RawServer:
    """A loopback server that hands every parsed request to *handler*."""

    handler: Handler
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        """The server's `http://127.0.0.1:port`."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def count(self, path: str) -> int:
        """How many requests for *path* arrived."""
        return sum(1 for request in self.requests if request.path == path)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                if not await self.handler(request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the server is shutting down; ending quietly keeps asyncio from logging it
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(BaseException):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method=method, path=path, headers=headers, body=body)


def http_reply(
    status: int = 200,
    body: bytes = b"",
    *,
    headers: tuple[tuple[str, str], ...] = (),
    length: int | None = None,
) -> bytes:
    """Serialise a reply with a Content-Length (the body's own unless *length* is given)."""
    lines = [f"HTTP/1.1 {status} X", "Content-Type: application/xml"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def xml(**fields: str) -> bytes:
    """A reply document: `<response>` holding one element per field."""
    inner = "".join(f"<{name}>{value}</{name}>" for name, value in fields.items())
    return f"<?xml version='1.0' encoding='utf-8'?><response>{inner}</response>".encode()


def _bomb(wbits: int, inflated: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = b"\0" * (1 << 20)
    parts = [compressor.compress(block) for _ in range(inflated >> 20)]
    parts.append(compressor.flush())
    return b"".join(parts)


def gzip_bomb(inflated: int = 512 << 20) -> bytes:
    """A gzip body of zeros that inflates to *inflated* bytes (512 MiB by default)."""
    return _bomb(16 + zlib.MAX_WBITS, inflated)


def deflate_bomb(inflated: int = 512 << 20) -> bytes:
    """A zlib-format deflate body of zeros that inflates to *inflated* bytes."""
    return _bomb(zlib.MAX_WBITS, inflated)
