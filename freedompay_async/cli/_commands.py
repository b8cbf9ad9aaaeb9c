"""The one-call commands (`init`, `info`, `status`, `pay`) and `emulate`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import sys
import time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from freedompay_async import FreedomPayError, InvoiceInfo, InvoicePayment, PayRequest
from freedompay_async.cli._common import (
    EXIT_NOT_PAID,
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    UsageError,
    client_from_env,
    describe,
    say,
)
from freedompay_async.masking import mask_pan
from freedompay_async.records import TERMINAL_STATES, outcome_record
from freedompay_async.settlement import Verdict, settle

if TYPE_CHECKING:
    import argparse

    from freedompay_async.testing import FreedomPayEmulator

ADMIN_HELP = """the admin API (JSON over HTTP, no signature; for tests in another process):
  GET    /_emulator/                      this list, as JSON
  POST   /_emulator/invoices              {"count": 3, "amount": "100", "currency": "KZT",
                                           "fate": {"kind": "declined", "error_code": 51}}
                                          -> {"customers": [...]}  (or "order_id" with count 1)
  GET    /_emulator/invoices/{customer}   status, charges, order and invoice ids
  POST   /_emulator/cards                 {"card_token": "...", "fate": {"kind": "paid"}}
  POST   /_emulator/faults                {"fault": {"kind": "drop", "after_commit": true},
                                           "operation": "pay", "times": 1, "customer": null}
  DELETE /_emulator/faults                clear the queued faults
  POST   /_emulator/expire                {"customer": "..."}
  GET    /_emulator/stats[?customers=1]   requests, committed pays, double_charged, invoices
  POST   /_emulator/cardstorage/complete  {"payment_id": N}: complete a classic card entry
fate kinds: paid, declined, pending_then_paid, pending_then_failed, expired, gateway_error
fault kinds: http_status, error_code, drop, delay, malformed_xml, doctype, oversized,
  stale_status"""


def _payment_json(payment: InvoicePayment) -> dict[str, Any]:
    data: dict[str, Any] = {
        "invoice_status": payment.invoice_status.value,
        "invoice_status_raw": payment.invoice_status_raw,
        "is_terminal": payment.is_terminal,
        "customer": payment.customer,
        "order_id": payment.order_id,
        "invoice_id": payment.invoice_id,
        "amount": str(payment.amount) if payment.amount is not None else None,
        "currency": payment.currency,
        "card_pan": mask_pan(payment.card_pan) if payment.card_pan is not None else None,
        "error_code": payment.error_code,
        "error_description": payment.error_description,
        "dt": payment.dt.isoformat() if payment.dt else None,
    }
    if isinstance(payment, InvoiceInfo):
        data.update(description=payment.description, qr_url=payment.qr_url)
    return data


def _print_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _lookup(args: argparse.Namespace) -> dict[str, Any]:
    return {"customer": args.customer, "order_id": args.order_id, "invoice_id": args.invoice_id}


async def status(args: argparse.Namespace) -> int:
    """Run `status`: print one invoice's status as JSON."""
    async with client_from_env(args) as client:
        try:
            payment = await client.invoice_status(**_lookup(args))
        except FreedomPayError as exc:
            say(f"status failed: {describe(exc, args)}")
            return EXIT_NOT_PAID
    _print_json(_payment_json(payment))
    return EXIT_OK


async def info(args: argparse.Namespace) -> int:
    """Run `info`: print one invoice's details (status, description, payment page) as JSON."""
    async with client_from_env(args) as client:
        try:
            details = await client.invoice_info(**_lookup(args))
        except FreedomPayError as exc:
            say(f"info failed: {describe(exc, args)}")
            return EXIT_NOT_PAID
    _print_json(_payment_json(details))
    return EXIT_OK


async def init(args: argparse.Namespace) -> int:
    """Run `init`: create an invoice and print its customer token and payment page as JSON."""
    try:
        amount = Decimal(args.amount)
    except InvalidOperation:
        raise UsageError(f"--amount {args.amount!r} is not a number, e.g. 1500.00") from None
    if not amount.is_finite() or amount <= 0:
        raise UsageError(f"--amount must be a positive number, got {args.amount}")
    async with client_from_env(args) as client:
        try:
            created = await client.init_invoice(
                order_id=args.order_id,
                amount=amount,
                description=args.description,
                currency=args.currency,
            )
        except FreedomPayError as exc:
            say(f"init failed: {describe(exc, args)}")
            return EXIT_NOT_PAID
    _print_json(
        {
            "customer": created.customer,
            "order_id": created.order_id,
            "invoice_id": created.invoice_id,
            "invoice_status": created.invoice_status.value,
            "qr_url": created.qr_url,
        }
    )
    return EXIT_OK


async def pay(args: argparse.Namespace) -> int:
    """Run `pay`: check the invoice's status, then pay it once; print the outcome record."""
    token = os.environ.get(args.card_token_env)
    if not token:
        raise UsageError(
            f"set the card token in the environment variable {args.card_token_env} "
            "(it is never read from the command line)"
        )
    request = PayRequest(customer=args.customer, user_id=args.user_id, card_token=token)
    async with client_from_env(args) as client:
        if args.status_check:
            try:
                current = await client.invoice_status(customer=args.customer)
            except FreedomPayError as exc:
                say(f"pay: the status check failed, nothing was paid: {describe(exc, args)}")
                return EXIT_NOT_PAID
            verdict = settle(current.invoice_status, read_at=time.time(), last_write_at=None)
            if verdict is not Verdict.NOT_LANDED:
                say(
                    f"pay: not paid: the invoice is already {current.invoice_status.value} "
                    "(use `status` to see it)"
                )
                _print_json(_payment_json(current))
                return EXIT_OK if current.invoice_status.value == "ok" else EXIT_NOT_PAID
        outcome = await client.pay_one(request)
    record = outcome_record(outcome)
    _print_json(record)
    if outcome.error is not None:
        say(f"pay: {outcome.state}: {describe(outcome.error, args)}")
    if outcome.state == "paid":
        return EXIT_OK
    return EXIT_NOT_PAID if outcome.state in TERMINAL_STATES | {"error"} else EXIT_UNKNOWN


async def emulate(args: argparse.Namespace) -> int:
    """Run `emulate`: serve the emulator until SIGINT/SIGTERM."""
    from freedompay_async.testing import FreedomPayEmulator  # noqa: PLC0415 - loads aiohttp.web

    secret = os.environ.get(args.secret_key_env)
    emulator = FreedomPayEmulator(
        merchant_id=args.merchant_id,
        host=args.host,
        port=args.port,
        adversarial=args.adversarial,
        seed=args.seed,
        **({"secret_key": secret} if secret else {}),  # type: ignore[arg-type]
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
    try:
        try:
            await emulator.__aenter__()
        except OSError as exc:
            reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc
            say(
                f"emulate: cannot listen on {args.host}:{args.port}: {reason}; pick another "
                "--port (0 picks a free one)"
            )
            return EXIT_USAGE
        try:
            _print_json(_emulator_info(emulator, args, secret))
            await stop.wait()
        finally:
            await emulator.__aexit__(None, None, None)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
    say(f"{signal.Signals(received[0]).name}: emulator stopped")
    return EXIT_OK


def _emulator_info(
    emulator: FreedomPayEmulator, args: argparse.Namespace, secret: str | None
) -> dict[str, Any]:
    info_line: dict[str, Any] = {
        "base_url": emulator.base_url,
        "merchant_id": emulator.merchant_id,
        "secret_key_env": args.secret_key_env,
        "secret_key_from_env": bool(secret),
        "admin_url": f"{emulator.base_url}/_emulator/",
        "adversarial": emulator.adversarial,
    }
    if not secret:
        # The emulator's built-in test key is public; a key from the environment is not.
        info_line["secret_key"] = emulator.secret_key
    return info_line
