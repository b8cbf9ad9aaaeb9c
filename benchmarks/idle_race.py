"""
Measure pays lost to a server's idle keep-alive close: `python benchmarks/idle_race.py [--sends N]`.

A raw loopback server closes each keep-alive connection after `IDLE` seconds without a request,
with a real timer, as nginx (`keepalive_timeout`), gunicorn (`keepalive`) or a proxy does. The
client sends pays one after another, each waiting a gap before the next, and counts the pays that
ended as `ConnectionLost` (ambiguous: written to a socket the server was closing). Two timings:
`matched` waits exactly the server's idle timeout (the worst case), `random` waits a uniform
0..2x of it. Two client settings: the former keep-alive (15 s, so every idle socket is reused)
and the default `Timeouts.keepalive` scaled to the same ratio (0.75x the server's idle timeout,
as 1.5 s is to a 2 s server).

Everything is scaled down (IDLE = 0.2 s) so a run takes about two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random

from freedompay_async import ConnectionLost, Timeouts
from freedompay_async._config import _Credentials, _WireOptions
from freedompay_async._protocol import Operation, build_request
from freedompay_async._transport import Transport

IDLE = 0.2


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer requests; close the connection after IDLE seconds without one."""
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE)
            except TimeoutError:
                break
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(_reply())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _reply() -> bytes:
    body = b"<?xml version='1.0'?><response><status>ok</status></response>"
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _run(keepalive: float, timing: str, sends: int, rng: random.Random) -> int:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = build_request(
        Operation.PAY,
        [("customer", "c"), ("user_id", "u"), ("card_token", "tok-1234567890")],
        credentials=_Credentials(merchant_id="1", secret_key="k" * 32),
        wire=_WireOptions(),
    )
    transport = Transport(
        base_url=f"http://127.0.0.1:{port}",
        max_concurrency=1,
        max_response_bytes=1 << 20,
        timeouts=Timeouts(connect=2.0, read=2.0, pool=2.0, keepalive=keepalive),
        session=None,
        user_agent="idle-race",
    )
    lost = 0
    try:
        for _ in range(sends):
            try:
                await transport.send(request, remaining=5.0)
            except ConnectionLost:
                lost += 1
            gap = IDLE if timing == "matched" else rng.uniform(0, 2 * IDLE)
            await asyncio.sleep(gap)
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
    return lost


async def _main(sends: int) -> None:
    rng = random.Random(7)
    print(f"server idle timeout {IDLE}s, {sends} sequential pays per row")
    for timing in ("matched", "random"):
        for label, keepalive in (("former 15 s", 15.0), ("default 0.75x", IDLE * 0.75)):
            lost = await _run(keepalive, timing, sends, rng)
            print(f"{timing:8} {label:14} ambiguous {lost}/{sends}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sends", type=int, default=300)
    asyncio.run(_main(parser.parse_args().sends))
