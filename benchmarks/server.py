"""
A raw loopback HTTP/1.1 server for the benchmarks: `asyncio.Protocol`, keep-alive, no framework.

It answers `POST /v5/merchant/invoice/pay` and `POST /v5/merchant/invoice/status` with one fixed
`<root>` reply shaped like the gateway's (status ok, invoice_status ok, amount, currency, masked
card, a timestamp with an offset), for any customer: it keeps no state and reads no field, so it
costs a few microseconds per request and is never the bottleneck. `GET /_cpu` answers the
process's own CPU seconds (user + system), which the load generator reads before and after its
measured phase to report the server's CPU share.

With `--delay SECONDS` every reply is held back that long before it is written, as a slow gateway
would (one `loop.call_later` per batch of replies, never a sleep per connection), so a client's
ideal rate is its in-flight count divided by the delay; `GET /_held` answers how many replies
are being held at that moment (`/_cpu` and `/_held` are never delayed).

Run it as `python benchmarks/server.py [--cpu N] [--uvloop] [--delay S] [--max-seconds S]`; it
prints
`PORT <port>` once it listens on 127.0.0.1 and exits when its parent dies or after
`--max-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys

PAY_PATH = b"/v5/merchant/invoice/pay"
STATUS_PATH = b"/v5/merchant/invoice/status"
#: Largest request head or body the server buffers before it closes the connection.
MAX_REQUEST_BYTES = 1 << 20

REPLY_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<root>\n"
    b"  <status>ok</status>\n"
    b"  <order_id>00102</order_id>\n"
    b"  <invoice_status>ok</invoice_status>\n"
    b"  <invoice_id>1234567890</invoice_id>\n"
    b"  <card_pan>5483-18XX-XXXX-0293</card_pan>\n"
    b"  <amount>15000.50</amount>\n"
    b"  <currency>KZT</currency>\n"
    b"  <dt>2024-07-19T14:15:22+05:00</dt>\n"
    b"</root>\n"
)


def _response(status: bytes, content_type: bytes, body: bytes, *, close: bool = False) -> bytes:
    connection = b"close" if close else b"keep-alive"
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Server: bench-raw\r\n"
        b"Content-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: " + connection + b"\r\n"
        b"\r\n" + body
    )


REPLY = _response(b"200 OK", b"application/xml; charset=utf-8", REPLY_XML)
NOT_FOUND = _response(b"404 Not Found", b"text/plain", b"not found\n")
BAD_REQUEST = _response(b"400 Bad Request", b"text/plain", b"bad request\n", close=True)


def _cpu_reply() -> bytes:
    times = os.times()
    return _response(b"200 OK", b"text/plain", f"{times.user + times.system:.6f}\n".encode())


class _Hold:
    """The reply delay of this process and the number of replies being held back."""

    delay = 0.0
    held = 0


def _held_reply() -> bytes:
    return _response(b"200 OK", b"text/plain", f"{_Hold.held}\n".encode())


class _Conn(asyncio.Protocol):
    """One keep-alive connection; parses requests with Content-Length or chunked bodies."""

    __slots__ = ("_buf", "_transport")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, _exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        transport = self._transport
        if transport is None:
            return
        out: list[bytes] = []
        # One iteration per complete request in the buffer (pipelining is allowed).
        for _ in range(1024):
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                if len(buf) > MAX_REQUEST_BYTES:
                    out.append(BAD_REQUEST)
                    break
                break
            consumed = self._one_request(head_end, out)
            if consumed < 0:
                break
            del buf[:consumed]
            if not buf:
                break
        if not out:
            return
        delayed = sum(1 for reply in out if reply is REPLY)
        if _Hold.delay > 0 and delayed:
            _Hold.held += delayed
            asyncio.get_running_loop().call_later(_Hold.delay, self._write, out, delayed)
        else:
            self._write(out, 0)

    def _write(self, out: list[bytes], delayed: int) -> None:
        _Hold.held -= delayed
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        if out[-1] is BAD_REQUEST:
            transport.close()

    def _one_request(self, head_end: int, out: list[bytes]) -> int:
        """Answer one request whose head ends at *head_end*; return the bytes it used, or -1."""
        buf = self._buf
        head = bytes(buf[:head_end]).lower()
        body_start = head_end + 4
        line_end = head.find(b"\r\n")
        request_line = head if line_end < 0 else head[:line_end]
        parts = request_line.split(b" ")
        if len(parts) != 3:
            out.append(BAD_REQUEST)
            return -1
        method, path, _ = parts
        end = body_start
        marker = head.find(b"\r\ncontent-length:")
        if marker >= 0:
            value_end = head.find(b"\r\n", marker + 2)
            length_text = head[marker + 17 : value_end if value_end >= 0 else len(head)]
            try:
                length = int(length_text.strip())
            except ValueError:
                out.append(BAD_REQUEST)
                return -1
            if length < 0 or length > MAX_REQUEST_BYTES:
                out.append(BAD_REQUEST)
                return -1
            end = body_start + length
            if len(buf) < end:
                return -1
        elif b"\r\ntransfer-encoding: chunked" in head:
            end = self._chunked_end(body_start)
            if end < 0:
                return -1
        if method == b"post" and (path in (PAY_PATH, STATUS_PATH)):
            out.append(REPLY)
        elif method == b"get" and path == b"/_cpu":
            out.append(_cpu_reply())
        elif method == b"get" and path == b"/_held":
            out.append(_held_reply())
        else:
            out.append(NOT_FOUND)
        return end

    def _chunked_end(self, start: int) -> int:
        """Return where a chunked body starting at *start* ends, or -1 when incomplete."""
        buf = self._buf
        pos = start
        for _ in range(100_000):
            size_end = buf.find(b"\r\n", pos)
            if size_end < 0:
                return -1
            size = int(bytes(buf[pos:size_end]).split(b";")[0], 16)
            pos = size_end + 2 + size + 2
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", size_end)
                return -1 if trailer_end < 0 else trailer_end + 4
            if pos > len(buf):
                return -1
        return -1


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    # The kernel caps the backlog at net.core.somaxconn; asking for more costs nothing.
    server = await loop.create_server(_Conn, "127.0.0.1", args.port, backlog=16384)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    parent = os.getppid()
    async with server:
        await server.start_serving()
        # Polled, not awaited on an event: the parent's death sends no signal to wait for.
        end = loop.time() + args.max_seconds
        while loop.time() < end and os.getppid() == parent:  # noqa: ASYNC110
            await asyncio.sleep(0.5)


def raise_open_files_limit() -> int:
    """Raise this process's open-files soft limit to its hard limit; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft and (hard == resource.RLIM_INFINITY or hard > soft):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this core")
    parser.add_argument("--uvloop", action="store_true", help="use uvloop when it is installed")
    parser.add_argument("--max-seconds", type=float, default=1200.0)
    parser.add_argument(
        "--delay", type=float, default=0.0, help="hold every pay/status reply back this long"
    )
    args = parser.parse_args(argv)
    _Hold.delay = max(0.0, args.delay)
    raise_open_files_limit()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    runner = asyncio.run
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            print("uvloop is not installed; using the default loop", file=sys.stderr)
        else:
            runner = uvloop.run
    try:
        runner(_serve(args))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
