"""
The one module that talks to aiohttp's client: session, FIFO gate, timeouts, error mapping.

One exchange, one coroutine: wait for a gate slot (`Timeouts.pool`), write the pre-serialised
body, read the reply (decoded chunk by chunk under the size cap when it is encoded), release the
connection and the slot, and return plain bytes. Nothing here sleeps between attempts or decides
anything: a slot is never held across a backoff, a reconcile grace or a poll interval.

One watcher per client (`_gate.DeadlineWatcher`, a periodic check rather than timers per
request) ends an exchange at `Timeouts.read` or the call's deadline, whichever is first, plus
`DEADLINE_SLACK` and at most one tick: gate wait, connect, write, headers and a dripping body.
aiohttp's `connect`/`sock_connect` (capped by the time left) bound a new connection.

The size cap counts decoded bytes. aiohttp's own decompression is off for every request (also on
a caller's session); `_inflate` bounds each step's output, so a compression bomb costs at most the
cap. Over the cap the connection is closed, never pooled, and the decoder refuses the reply. Idle
pooled connections older than `Timeouts.keepalive` are closed instead of reused: a pay written
on a socket the server is closing would come back ambiguous. The FIFO gate (`_gate.FifoGate`),
sized like the connector, keeps aiohttp's own unfair queue of waiters from forming.

Every aiohttp exception maps to the most specific public class: connect-phase failures are *not
sent*; anything once the request may be written is *ambiguous*; an unknown error maps to the
unsafe side. The aiohttp exception is never chained (its `request_info` holds the signature): the
cause is a `TransportCause` (class name, redacted message), raised outside the `except` block.
"""

from __future__ import annotations

import asyncio
from asyncio import current_task
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from freedompay_async._config import check_base_url
from freedompay_async._exceptions import (
    ClientClosedError,
    ConfigurationError,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    DecodeError,
    FreedomPayError,
    PoolTimeout,
    ReadTimeout,
    TransportCause,
)
from freedompay_async._gate import DeadlineWatcher, FifoGate
from freedompay_async._inflate import ACCEPT_ENCODING, InflateError, Inflater
from freedompay_async._protocol import Operation, OutgoingRequest, RawResponse
from freedompay_async.masking import printable, redact_text

if TYPE_CHECKING:
    from freedompay_async._config import Timeouts

__all__ = [
    "AIOHTTP_ERROR_MAP",
    "DEADLINE_SLACK",
    "FifoGate",
    "Transport",
    "map_client_error",
    "transport_cause",
]

#: Seconds an exchange may outlive its call's deadline: the per-attempt timeouts fire first.
DEADLINE_SLACK = 0.05
#: Raw body bytes read beyond the decoded cap before a reply counts as too large.
_INPUT_SLACK = 64 * 1024
_DETAIL_CHARS = 300

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


def transport_cause(exc: BaseException) -> TransportCause:
    """
    Describe a library exception without the request it carried.

    Args:
        exc: The aiohttp (or timeout) exception.

    Returns:
        Its class name and message, redacted and escaped; no attribute (`request_info`) kept.
    """
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return TransportCause(kind, printable(redact_text(str(exc))[:_DETAIL_CHARS]))


class Transport:
    """
    Sends `OutgoingRequest`s over one long-lived aiohttp session.

    The session is created lazily inside the running loop. A caller's session is used as it is
    (its keep-alive too) and never closed; its connector's limit caps the gate.

    Raises:
        ConfigurationError: *base_url* is not a valid http(s) URL (`_config.check_base_url`).
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
        accept_encoding: str = ACCEPT_ENCODING,
    ) -> None:
        self._base = URL(check_base_url(base_url))
        self._urls: dict[object, URL] = {
            op: self._base.with_path(self._base.path.rstrip("/") + op.path) for op in Operation
        }
        self._session = session
        self._owns_session = session is None
        self._max_bytes = max_response_bytes
        self._user_agent = user_agent
        self._accept_encoding = accept_encoding
        limit = max_concurrency
        if session is not None and session.connector is not None and session.connector.limit:
            limit = min(limit, session.connector.limit)
        self.gate = FifoGate(limit)
        self._deadlines = DeadlineWatcher()
        self._timeouts = timeouts
        # No `sock_read`: the watcher bounds the reply (a timer per read would cost every request).
        self._default_timeout = aiohttp.ClientTimeout(
            total=None, connect=timeouts.connect, sock_connect=timeouts.connect
        )
        # Only a caller's session needs the header per request: the own session has it built in.
        self._extra_headers: dict[str, str] | None = (
            {"Accept-Encoding": accept_encoding} if session is not None else None
        )

    @property
    def owns_session(self) -> bool:
        """Whether the transport created (and will close) the session."""
        return self._owns_session

    @property
    def session_open(self) -> bool:
        """Whether a session exists and is not closed."""
        return self._session is not None and not self._session.closed

    def open(self) -> aiohttp.ClientSession:
        """Create the session if needed (inside the loop that will use it) and return it."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.gate.size,
                # Not reused when older: the server may be closing it under a pay written on it.
                keepalive_timeout=self._timeouts.keepalive,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # A signed, stateless API: a gateway's (or proxy's) cookies are neither kept nor
                # sent, so none can pile up in memory, and no request pays for a cookie filter.
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={
                    "User-Agent": self._user_agent,
                    "Accept-Encoding": self._accept_encoding,
                },
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        """Close the session if this transport owns it."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    def _timeout_for(self, remaining: float) -> aiohttp.ClientTimeout:
        if remaining >= self._timeouts.connect:
            return self._default_timeout
        connect = max(remaining, 0.001)
        return aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect)

    async def send(self, request: OutgoingRequest, *, remaining: float) -> RawResponse:
        """
        Perform one exchange, all of it within *remaining* seconds.

        Args:
            request: The request to send.
            remaining: Seconds left before the call's deadline. The gate wait, connect, write,
                headers and body all end by then (plus `DEADLINE_SLACK`).

        Returns:
            The reply: status, headers and the body decoded from its Content-Encoding, at most
            `max_response_bytes + 1` bytes (one more than the cap tells the decoder to refuse
            it; the connection is then closed, not pooled).

        Raises:
            PoolTimeout: No gate slot in time, or no time left at all (not sent).
            ConnectTimeout: No connection in time (not sent).
            ConnectError: The connection failed (not sent).
            ReadTimeout: No complete reply in time once written (ambiguous).
            ConnectionLost: The connection broke once the request may have been written.
            DecodeError: The reply's Content-Encoding is unsupported, corrupt or truncated.
            ConfigurationError: The URL is invalid.
        """
        session = self._session or self.open()
        gate = self.gate
        # A free slot is taken at once: the pool timeout (a timer armed and cancelled) is only
        # paid by a caller that really waits.
        if remaining <= 0 or not gate.try_acquire():
            await self._wait_for_slot(request, remaining)
        if session.closed:
            # Closed while this request waited for a slot: it was never written.
            gate.release()
            raise _not_sent(
                request, ClientClosedError, "the client was closed before this request was sent"
            )
        # One coroutine for the whole exchange: a layer more is an object more per call in flight.
        deadlines = self._deadlines
        task = current_task()
        assert task is not None  # noqa: S101 - send() always runs in a task
        by_read = self._timeouts.read < remaining
        deadlines.watch(task, (self._timeouts.read if by_read else remaining) + DEADLINE_SLACK)
        try:
            async with self._post(session, request, remaining) as response:
                try:
                    length = response.content_length
                    if (
                        length is not None
                        and length <= self._max_bytes
                        and "Content-Encoding" not in response.headers
                    ):
                        body = await response.read()  # the common reply: plain and small
                    else:
                        body = await self._read_decoded(response)
                except InflateError as exc:
                    response.close()  # a reply not read to its end never goes back to the pool
                    raise _refused(request, response, exc) from exc
                except BaseException:
                    response.close()
                    raise
                return RawResponse(
                    status=response.status,
                    headers=response.headers,
                    body=body,
                    sensitive=request.sensitive,
                )
        except (asyncio.CancelledError, aiohttp.ClientError, TimeoutError) as exc:
            failure = self._failure(task, exc, request.operation.value, by_read=by_read)
            if failure is None:
                raise
        finally:
            if deadlines.release(task):
                task.uncancel()
            gate.release()
        # Raised here, outside the except block: the aiohttp exception is not even __context__.
        error, cause = failure
        raise error from cause

    def _failure(
        self, task: asyncio.Task[object], exc: BaseException, operation: str, *, by_read: bool
    ) -> tuple[BaseException, TransportCause | None] | None:
        """The error to end with (the deadline's cancellation: `ReadTimeout`), or None: re-raise."""
        by_deadline = self._deadlines.release(task)
        if isinstance(exc, asyncio.CancelledError):
            if not by_deadline or task.uncancel() > 0:
                return None
            return _timed_out(operation, by_read=by_read), None
        cause = transport_cause(exc)
        if not by_deadline:
            return map_client_error(exc, operation), cause
        if task.uncancel() > 0:
            return asyncio.CancelledError(), None  # cancelled by someone else as well
        return _timed_out(operation, by_read=by_read), cause

    def _post(
        self, session: aiohttp.ClientSession, request: OutgoingRequest, remaining: float
    ) -> aiohttp.client._RequestContextManager:
        headers = request.headers
        if self._extra_headers is not None:
            headers = {**headers, **self._extra_headers}
        url = self._urls.get(request.operation)
        if url is None:
            url = self._base.with_path(self._base.path.rstrip("/") + request.path)
        return session.post(
            url,
            data=request.body,
            headers=headers,
            timeout=self._timeout_for(remaining),
            allow_redirects=False,
            auto_decompress=False,
        )

    async def _wait_for_slot(self, request: OutgoingRequest, remaining: float) -> None:
        if remaining <= 0:
            raise _not_sent(
                request, PoolTimeout, "the call's deadline passed before the request was sent"
            )
        timed_out = False
        try:
            async with asyncio.timeout(min(self._timeouts.pool, remaining)):
                await self.gate.acquire()
        except TimeoutError:
            timed_out = True
        if timed_out:
            raise _not_sent(request, PoolTimeout, "no connection slot free within the pool timeout")

    async def _read_decoded(self, response: aiohttp.ClientResponse) -> bytes:
        """
        Read and decode a body that is encoded, of unknown length or longer than the cap.

        At most the cap plus one decoded byte is kept.

        Raises:
            InflateError: The encoding is unsupported, or the data corrupt or truncated.
        """
        cap = self._max_bytes
        length = response.content_length
        inflater = Inflater(
            response.headers.get("Content-Encoding"), cap=cap, max_input=cap + _INPUT_SLACK
        )
        if inflater.encoding == "identity" and length is not None and length <= cap:
            return await response.read()
        content = response.content
        while True:
            chunk = await content.readany()
            if not chunk:
                break
            if inflater.feed(chunk):
                response.close()  # the rest is never read: this socket is not pooled
                break
        return inflater.finish()


def _not_sent(
    request: OutgoingRequest, cls: type[PoolTimeout | ClientClosedError], why: str
) -> FreedomPayError:
    operation = request.operation.value
    return cls(f"{operation}: {why}; not sent", operation=operation)


def _refused(
    request: OutgoingRequest, response: aiohttp.ClientResponse, exc: InflateError
) -> DecodeError:
    return DecodeError(
        f"{request.operation.value} reply refused: {exc}",
        operation=request.operation.value,
        status_code=response.status,
        headers=response.headers,
        redact=request.sensitive,
    )


def _timed_out(operation: str, *, by_read: bool) -> ReadTimeout:
    if by_read:
        return ReadTimeout(
            f"{operation}: {_MESSAGES[ReadTimeout]} (Timeouts.read)", operation=operation
        )
    return ReadTimeout(
        f"{operation}: the call's deadline passed before the reply was complete; "
        "the request may have been processed",
        operation=operation,
    )
