"""
The one module that talks to aiohttp's client: session, FIFO gate, timeouts, error mapping.

One exchange is: wait for a gate slot (bounded by `Timeouts.pool`), write the pre-serialised
body, read at most the size cap of the reply, release the connection and the slot, and return
plain bytes. Nothing here sleeps between attempts or decides anything: a slot is never held
across a backoff, a reconcile grace or a poll interval.

Why a gate in front of the connector: aiohttp's connector hands an idle connection to whoever
asks next before it looks at its queue of waiters, so under load a task that just released a
connection takes it straight back and queued callers starve (p99 in seconds). The gate is FIFO
and has the connector's size, so the connector's own queue never forms.

Every aiohttp exception is mapped to the most specific public class, with `raise ... from`:
connect-phase failures are *not sent*; anything that can happen once the request may be written
is *ambiguous*; an unknown error maps to the unsafe side.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from freedompay_async._exceptions import (
    ClientClosedError,
    ConfigurationError,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    FreedomPayError,
    PoolTimeout,
    ReadTimeout,
)
from freedompay_async._protocol import Operation, OutgoingRequest, RawResponse

if TYPE_CHECKING:
    from freedompay_async._config import Timeouts

__all__ = ["AIOHTTP_ERROR_MAP", "FifoGate", "Transport", "map_client_error"]

#: aiohttp exception -> public class, most specific first; the first isinstance match wins.
AIOHTTP_ERROR_MAP: tuple[tuple[type[BaseException], type[FreedomPayError]], ...] = (
    (aiohttp.ConnectionTimeoutError, ConnectTimeout),  # connect phase: nothing written
    (aiohttp.ClientConnectorError, ConnectError),  # DNS, refused, TLS handshake, proxy
    (aiohttp.ServerFingerprintMismatch, ConnectError),  # TLS pinning fails before a write
    (aiohttp.InvalidURL, ConfigurationError),  # a bad base_url; nothing sent
    (aiohttp.NonHttpUrlClientError, ConfigurationError),
    (aiohttp.ServerTimeoutError, ReadTimeout),  # sock_read and other timeouts after connect
    (aiohttp.ServerDisconnectedError, ConnectionLost),
    (aiohttp.ClientOSError, ConnectionLost),  # reset, broken pipe once connected
    (aiohttp.ClientConnectionResetError, ConnectionLost),
    (aiohttp.ClientPayloadError, ConnectionLost),  # reply cut short
    (aiohttp.ClientResponseError, ConnectionLost),  # malformed reply framing
    (aiohttp.ClientError, ConnectionLost),  # the unknown maps to the unsafe side
)

_MESSAGES: dict[type[FreedomPayError], str] = {
    ConnectTimeout: "could not connect within the connect timeout; the request was not sent",
    ConnectError: "could not connect; the request was not sent",
    ConfigurationError: "the request URL is invalid; check base_url",
    ReadTimeout: "no reply within the read timeout; the request may have been processed",
    ConnectionLost: "the connection broke; the request may have been processed",
}


def map_client_error(exc: BaseException, operation: str) -> FreedomPayError:
    """
    Map an aiohttp (or timeout) exception to the public exception class.

    Args:
        exc: The exception aiohttp raised.
        operation: The operation's name, kept on the new exception.

    Returns:
        The public exception (the caller raises it `from exc`).
    """
    cls: type[FreedomPayError] = ReadTimeout  # a bare TimeoutError is the total timeout
    for source, target in AIOHTTP_ERROR_MAP:
        if isinstance(exc, source):
            cls = target
            break
    detail = type(exc).__name__
    return cls(f"{operation}: {_MESSAGES[cls]} ({detail})", operation=operation)


class FifoGate:
    """
    A FIFO semaphore: slots go to waiters strictly in arrival order.

    A waiter cancelled while queued leaves the queue; one cancelled just after a slot was handed
    to it passes the slot on, so no slot leaks and none is stolen.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def in_use(self) -> int:
        """Slots currently held."""
        return self.size - self._free

    @property
    def waiting(self) -> int:
        """Callers queued for a slot."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot without waiting; False when none is free or others are queued."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot, in arrival order."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot arrived together with the cancellation: pass it on
            else:
                self._waiters.remove(future)
            raise

    def release(self) -> None:
        """Give a slot back, to the longest waiter if any."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


class Transport:
    """
    Sends `OutgoingRequest`s over one long-lived aiohttp session.

    The session is created lazily inside the running loop. A caller-owned session is used as it
    is and never closed; its connector's limit caps the gate.
    """

    def __init__(
        self,
        *,
        base_url: str,
        max_concurrency: int,
        max_response_bytes: int,
        timeouts: Timeouts,
        session: aiohttp.ClientSession | None,
        user_agent: str,
    ) -> None:
        self._base = URL(base_url.rstrip("/"))
        if not self._base.is_absolute() or self._base.scheme not in ("http", "https"):
            raise ConfigurationError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
        self._urls = {
            op: self._base.with_path(self._base.path.rstrip("/") + op.path) for op in Operation
        }
        self._session = session
        self._owns_session = session is None
        self._max_bytes = max_response_bytes
        self._user_agent = user_agent
        limit = max_concurrency
        if session is not None and session.connector is not None and session.connector.limit:
            limit = min(limit, session.connector.limit)
        self.gate = FifoGate(limit)
        self._timeouts = timeouts
        self._default_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.connect, sock_read=timeouts.read
        )

    @property
    def owns_session(self) -> bool:
        """Whether the transport created (and will close) the session."""
        return self._owns_session

    @property
    def session_open(self) -> bool:
        """Whether a session exists and is not closed."""
        return self._session is not None and not self._session.closed

    def open(self) -> None:
        """Create the session if needed; must run inside the loop that will use it."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.gate.size,
                # Short keep-alive: a pooled socket the server already closed fails as
                # ambiguous on pay, so idle sockets are not kept long.
                keepalive_timeout=15.0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self._user_agent},
                auto_decompress=True,
            )

    async def close(self) -> None:
        """Close the session if this transport owns it."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    def _timeout_for(self, remaining: float) -> aiohttp.ClientTimeout:
        timeouts = self._timeouts
        if remaining >= timeouts.read and remaining >= timeouts.connect:
            return self._default_timeout
        bound = max(remaining, 0.001)
        return aiohttp.ClientTimeout(
            total=None,
            sock_connect=min(timeouts.connect, bound),
            sock_read=min(timeouts.read, bound),
        )

    async def send(self, request: OutgoingRequest, *, remaining: float) -> RawResponse:
        """
        Perform one exchange.

        Args:
            request: The request to send.
            remaining: Seconds left before the call's deadline; each timeout is capped by it.

        Returns:
            The reply: status, headers and at most `max_response_bytes + 1` body bytes.

        Raises:
            PoolTimeout: No gate slot in time (not sent).
            ConnectTimeout: No connection in time (not sent).
            ConnectError: The connection failed (not sent).
            ReadTimeout: No reply in time once written (ambiguous).
            ConnectionLost: The connection broke once the request may have been written.
            ConfigurationError: The URL is invalid.
        """
        session = self._session
        if session is None:
            self.open()
            session = self._session
            assert session is not None  # noqa: S101 - open() just set it
        operation = request.operation.value
        gate = self.gate
        try:
            # A free slot is taken at once: the pool timeout (a timer armed and cancelled) is
            # only paid by a caller that really waits.
            if not gate.try_acquire():
                async with asyncio.timeout(max(min(self._timeouts.pool, remaining), 0.0)):
                    await gate.acquire()
        except TimeoutError as exc:
            raise PoolTimeout(
                f"{operation}: no connection slot free within the pool timeout; not sent",
                operation=operation,
            ) from exc
        if session.closed:
            # Closed while this request waited for a slot: it was never written.
            gate.release()
            raise ClientClosedError(
                f"{operation}: the client was closed before this request was sent; not sent",
                operation=operation,
            )
        try:
            async with session.post(
                self._urls[request.operation],
                data=request.body,
                headers=request.headers,
                timeout=self._timeout_for(remaining),
                allow_redirects=False,
            ) as response:
                body = await self._read_capped(response)
                return RawResponse(status=response.status, headers=response.headers, body=body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise map_client_error(exc, operation) from exc
        finally:
            gate.release()

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        """Read the body, at most the cap plus one byte (enough for the decoder to refuse it)."""
        cap = self._max_bytes
        length = response.content_length
        if length is not None and length <= cap:
            return await response.read()
        chunks: list[bytes] = []
        size = 0
        while size <= cap:
            chunk = await response.content.read(cap + 1 - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        response.close()  # the rest is never read: do not return this socket to the pool
        return b"".join(chunks)
