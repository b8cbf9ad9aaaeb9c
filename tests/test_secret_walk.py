"""
No secret by any path: every exception type the package defines, produced over raw loopback.

Each scenario drives the real client against a raw server that echoes what it received (the
signature header, the multipart body with the card token) and sends a full card number back, in
bodies, headers and error descriptions. The walk then reads every exception and every link of its
`__cause__`/`__context__` chain through `repr`, `str` and `pickle.dumps`, and every log line,
looking for the secret key, the card token, any signature the server saw, and the full PAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import pickle
import socket
from collections.abc import Iterator

import pytest
from hostile_http import RawServer, Request, http_reply, xml

import freedompay_async._exceptions as exceptions_module
from freedompay_async import (
    ConfigurationError,
    FreedomPayClient,
    FreedomPayError,
    PollPolicy,
    RetryPolicy,
    Timeouts,
)
from freedompay_async._exceptions import TransportCause
from freedompay_async._inflate import InflateError
from freedompay_async.callbacks import parse_notification
from freedompay_async.testing import VirtualClock

SECRET = "walk-secret-key-0123456789abcdef"
CARD_TOKEN = "tok-WALK-SECRET-TOKEN-7f3a9c"
PAN = "4111111111111111"
PAN_SPACED = "4111 1111 1111 1111"


def _echo(request: Request) -> bytes:
    """The request as a proxy might echo it: head lines and body, plus a full card number."""
    head = "\r\n".join(f"{name}: {value}" for name, value in request.headers.items())
    return f"{head}\r\n\r\ncard {PAN}\r\n".encode() + request.body


class Gateway:
    """A raw server whose reply depends on the `customer` field (the scenario's name)."""

    def __init__(self) -> None:
        self.signatures: set[str] = set()

    async def __call__(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        self.signatures.add(request.headers.get("x-jws-signature", ""))
        customer = request.field("customer") or ""
        scenario = customer.split(":")[0]
        signature = request.headers.get("x-jws-signature", "")
        echo = _echo(request)
        if scenario == "drop":
            if request.path.endswith("/status"):
                writer.write(http_reply(body=xml(status="ok", invoice_status="new")))
                await writer.drain()
                return True
            return False
        if scenario == "drip":
            writer.write(http_reply(length=500) + b"<")
            await writer.drain()
            await asyncio.sleep(30)
            return False
        if scenario == "pending":
            body = xml(status="ok", invoice_status="process", card_pan=PAN, order_id="o")
            writer.write(http_reply(body=body))
        elif scenario == "gateway":
            text = f"card {CARD_TOKEN} sig {signature} pan {PAN_SPACED}\r\nforged: line"
            writer.write(
                http_reply(body=xml(status="error", error_code="101", error_description=text))
            )
        elif scenario == "decode":
            writer.write(http_reply(body=b"not xml " + echo))
        elif scenario == "bomb":
            body = gzip.compress(echo + b"\0" * (4 << 20))
            writer.write(http_reply(body=body, headers=(("Content-Encoding", "gzip"),)))
        elif scenario == "corrupt":
            writer.write(
                http_reply(body=b"\x1f\x8b\x08\x00" + echo, headers=(("Content-Encoding", "gzip"),))
            )
        else:  # "status": an HTTP error that echoes everything, headers included
            headers = (
                ("X-Echo-Signature", signature),
                ("X-Card", f"{request.field('card_token') or ''} {PAN}"),
                ("Set-Cookie", f"s={SECRET}"),
                ("Retry-After", "0"),
            )
            writer.write(http_reply(500, echo, headers=headers))
        await writer.drain()
        return True


def _client(base_url: str, **options: object) -> FreedomPayClient:
    options.setdefault("retry", RetryPolicy.disabled())
    options.setdefault("timeouts", Timeouts(connect=1.0, read=2.0, pool=1.0))
    return FreedomPayClient("1", SECRET, base_url=base_url, **options)  # type: ignore[arg-type]


async def _caught(awaitable: object) -> BaseException:
    try:
        await awaitable  # type: ignore[misc]
    except FreedomPayError as exc:
        return exc
    pytest.fail("the scenario raised nothing")


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


async def _produce(gateway: Gateway, server: RawServer) -> list[BaseException]:
    """Run every scenario; return the exceptions raised."""
    url = server.base_url
    caught: list[BaseException] = []
    async with _client(url) as client:
        caught.extend(
            [
                await _caught(
                    client.pay_invoice(customer=f"{scenario}:1", user_id="u", card_token=CARD_TOKEN)
                )
                for scenario in ("status", "decode", "bomb", "corrupt", "gateway")
            ]
        )
        caught.append(await _caught(client.invoice_status(customer="status:read")))
        # an ambiguous pay: dropped after it was written, status still new
        caught.append(
            await _caught(client.pay_invoice(customer="drop:1", user_id="u", card_token=CARD_TOKEN))
        )
        # bad input: a card token with a line break; a lone surrogate in user_id
        caught.append(
            await _caught(
                client.pay_invoice(customer="c:1", user_id="u", card_token=CARD_TOKEN + "\n")
            )
        )
        caught.append(
            await _caught(
                client.pay_invoice(customer="c:2", user_id="u\ud800", card_token=CARD_TOKEN)
            )
        )
        # a second pay of a customer whose first pay ended in doubt is refused
        caught.append(
            await _caught(
                client.pay_invoice(customer="status:1", user_id="u", card_token=CARD_TOKEN)
            )
        )
    # a call on a closed client
    caught.append(await _caught(client.invoice_status(customer="status:closed")))
    # the breaker opens after one failure
    retry = RetryPolicy(attempts=1, breaker_threshold=1, budget=None, reconcile_grace=0.0)
    async with _client(url, retry=retry) as client:
        await _caught(client.invoice_status(customer="status:b"))
        caught.append(await _caught(client.invoice_status(customer="status:b")))
    # a pending payment that stays pending, with a full PAN in its card_pan
    poll = PollPolicy(interval=0.5, factor=1.0, max_interval=0.5, timeout=1.0)
    async with _client(url, poll=poll, clock=VirtualClock()) as client:
        caught.append(
            await _caught(
                client.pay_invoice(customer="pending:1", user_id="u", card_token=CARD_TOKEN)
            )
        )
    # a dripping reply cut by the deadline, and a call that finds the only slot taken
    retry = RetryPolicy(attempts=1, deadline=1.0, budget=None, breaker_threshold=None)
    async with _client(
        url, retry=retry, max_concurrency=1, timeouts=Timeouts(connect=1.0, read=5.0, pool=0.2)
    ) as client:
        slow = asyncio.ensure_future(
            _caught(client.pay_invoice(customer="drip:1", user_id="u", card_token=CARD_TOKEN))
        )
        await asyncio.sleep(0.3)
        caught.append(await _caught(client.invoice_status(customer="status:pool")))
        caught.append(await slow)
    # nothing listening; a listener whose backlog is full (connect hangs)
    async with _client(f"http://127.0.0.1:{_closed_port()}") as client:
        caught.append(
            await _caught(client.pay_invoice(customer="c:3", user_id="u", card_token=CARD_TOKEN))
        )
    with _full_backlog() as port:
        async with _client(
            f"http://127.0.0.1:{port}", timeouts=Timeouts(connect=0.3, read=1.0, pool=1.0)
        ) as client:
            caught.append(
                await _caught(
                    client.pay_invoice(customer="c:4", user_id="u", card_token=CARD_TOKEN)
                )
            )
    # a callback whose pg_sig is wrong, carrying a card token and a full PAN
    fields = {
        "pg_order_id": "o",
        "pg_card_token": CARD_TOKEN,
        "pg_card_pan": PAN,
        "pg_sig": "0" * 32,
    }
    try:
        parse_notification(fields, secret_key=SECRET, script_name="result")
    except FreedomPayError as exc:
        caught.append(exc)
    return caught


class _full_backlog:  # noqa: N801 - a context manager used like a function
    """A listening socket that never accepts, its backlog filled so a new connect hangs."""

    def __enter__(self) -> int:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        port = self.listener.getsockname()[1]
        self.fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            self.fillers.append(filler)
        return port

    def __exit__(self, *exc: object) -> None:
        for filler in self.fillers:
            filler.close()
        self.listener.close()


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        link = todo.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        todo.extend(x for x in (link.__cause__, link.__context__) if x is not None)


def _defined_types() -> set[type[BaseException]]:
    names = exceptions_module.__all__
    types = {getattr(exceptions_module, name) for name in names}
    return {t for t in types if isinstance(t, type) and issubclass(t, BaseException)} | {
        InflateError
    }


@pytest.mark.blocking_ok
async def test_no_secret_in_any_exception_chain_repr_str_pickle_or_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every exception type, its chain, reprs, strs, pickles and the logs hold no secret."""
    caplog.set_level(logging.DEBUG, logger="freedompay_async")
    gateway = Gateway()
    async with RawServer(gateway) as server:
        caught = await _produce(gateway, server)
    signatures = {s for s in gateway.signatures if s}
    assert signatures, "the server saw no signed request"
    needles = {SECRET, CARD_TOKEN, PAN, PAN_SPACED}
    for signature in signatures:
        needles |= {signature, signature.rpartition(".")[2]}

    produced: set[type[BaseException]] = set()
    for exc in caught:
        for link in _chain(exc):
            produced.add(type(link))
            assert not type(link).__module__.startswith("aiohttp"), repr(link)
            assert not hasattr(link, "request_info"), repr(link)
            views = {"repr": repr(link), "str": str(link), "pickle": pickle.dumps(link)}
            if isinstance(link, FreedomPayError):
                restored = pickle.loads(views["pickle"])
                views["repr(restored)"] = repr(vars(restored))
            for view, text in views.items():
                data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
                for needle in needles:
                    assert needle.encode() not in data, f"{type(link).__name__} {view}: {needle}"
            if isinstance(link, FreedomPayError):
                assert "\n" not in str(link), repr(str(link))
                assert "\r" not in str(link), repr(str(link))

    missing = {t for t in _defined_types() if not any(issubclass(p, t) for p in produced)}
    assert not missing, f"no scenario produced {sorted(t.__name__ for t in missing)}"
    assert TransportCause in produced

    for record in caplog.records:
        line = record.getMessage()
        assert "\n" not in line, line
        assert "\r" not in line, line
        for needle in needles:
            assert needle not in line, f"log line holds {needle}: {line}"


def test_configuration_errors_name_the_field_not_the_value() -> None:
    """A refused card token names card_token and never quotes it."""
    from freedompay_async._config import _Credentials, _WireOptions
    from freedompay_async._protocol import Operation, build_request

    with pytest.raises(ConfigurationError, match="card_token") as caught:
        build_request(
            Operation.PAY,
            [("customer", "c"), ("user_id", "u"), ("card_token", CARD_TOKEN + "\x00")],
            credentials=_Credentials(merchant_id="1", secret_key=SECRET),
            wire=_WireOptions(),
        )
    assert CARD_TOKEN not in str(caught.value)
