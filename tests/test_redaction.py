"""No secret, card token, signature or full PAN reaches a log record, an exception or a repr."""

from __future__ import annotations

import logging
import random
from decimal import Decimal

import pytest

from freedompay_async import (
    FreedomPayClient,
    FreedomPayError,
    PollPolicy,
    RetryPolicy,
    Timeouts,
)
from freedompay_async.callbacks import CallbackHandler, ResultNotification, parse_result
from freedompay_async.signing import jws_detached, jws_payload, pg_sig
from freedompay_async.testing import Fate, Fault, FreedomPayEmulator, VirtualClock

SECRET = "Sup3r-Secret-Merchant-Key"
CARD_TOKENS = [f"card-token-{n:04d}-7f3a9c2e" for n in range(8)]
FULL_PAN = "5483185512340293"
RESULT_URL = "https://shop.example/fp/result.php"


def _result_fields(salt: str) -> dict[str, str]:
    fields = {
        "pg_order_id": "o-1",
        "pg_payment_id": "777",
        "pg_amount": "100",
        "pg_currency": "KZT",
        "pg_net_amount": "97",
        "pg_ps_amount": "100",
        "pg_ps_full_amount": "100",
        "pg_ps_currency": "KZT",
        "pg_description": "Order",
        "pg_result": "1",
        "pg_payment_date": "2026-11-24 10:00:00",
        "pg_card_token": CARD_TOKENS[0],
        "pg_card_pan": FULL_PAN,
        "pg_salt": salt,
    }
    fields["pg_sig"] = pg_sig("result.php", fields, SECRET)
    return fields


async def test_every_scenario_keeps_secrets_out_of_logs_errors_and_reprs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every operation, retries, reconcile, polling and callbacks at DEBUG: nothing secret leaks."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    signatures: list[str] = []
    async with FreedomPayEmulator(secret_key=SECRET, seed=3) as emu:
        client = FreedomPayClient(
            emu.merchant_id,
            SECRET,
            base_url=emu.base_url,
            timeouts=Timeouts(connect=1.0, read=0.2, pool=1.0),
            retry=RetryPolicy(attempts=3, deadline=10.0, reconcile_grace=0.01),
            poll=PollPolicy(interval=0.01, max_interval=0.02, timeout=0.05),
            clock=VirtualClock(),
            rng=random.Random(5),
        )
        texts.append(repr(client))
        fates = [
            (Fate.paid(), None),
            (Fate.paid(), Fault.drop(after_commit=True)),
            (Fate.paid(), Fault.http_status(429, retry_after="1")),
            (Fate.paid(), Fault.http_status(500, after_commit=True)),
            (Fate.declined(error_code=4001), None),
            (Fate.gateway_error(code=600), None),
            (Fate.pending_then_paid(polls=50), None),
            (Fate.paid(), Fault.delay(0.5, after_commit=True)),
        ]
        async with client:
            init = await client.init_invoice(order_id="o-1", amount=Decimal(100), description="d")
            texts.append(repr(init))
            for (fate, fault), token in zip(fates, CARD_TOKENS, strict=True):
                customer = emu.create_invoice(fate=fate)
                if fault is not None:
                    emu.inject(fault, customer=customer)
                payload = jws_payload(
                    [("customer", customer), ("user_id", "u"), ("card_token", token)]
                )
                signature = jws_detached(
                    payload,
                    secret_key=SECRET,
                    path="/v5/merchant/invoice/pay",
                    merchant_id=emu.merchant_id,
                )
                signatures.append(signature.split("..")[1])
                try:
                    payment = await client.pay_invoice(
                        customer=customer, user_id="u", card_token=token
                    )
                    texts.append(repr(payment))
                except FreedomPayError as exc:
                    texts.extend([str(exc), repr(exc), repr(exc.__dict__)])
                status = await client.invoice_status(customer=customer)
                info = await client.invoice_info(customer=customer)
                texts.extend([repr(status), repr(info)])
        texts.extend(repr(record) for record in emu.requests)

    fields = _result_fields("salt-1")
    signatures.append(fields["pg_sig"])
    notification = parse_result(fields, secret_key=SECRET, url=RESULT_URL)
    assert isinstance(notification, ResultNotification)
    texts.append(repr(notification))
    tampered = dict(fields, pg_amount="1")
    try:
        parse_result(tampered, secret_key=SECRET, url=RESULT_URL)
    except FreedomPayError as exc:
        texts.extend([str(exc), repr(exc)])
    else:  # pragma: no cover - a tampered notification must never verify
        pytest.fail("tampered notification verified")
    called: list[ResultNotification] = []

    async def on_result(result: ResultNotification) -> str:
        called.append(result)
        return "ok"

    handler = CallbackHandler(secret_key=SECRET, on_result=on_result)
    texts.append((await handler.answer(tampered, script_name="result.php")).decode())
    texts.append((await handler.answer(fields, script_name="result.php")).decode())
    assert len(called) == 1

    texts.extend(record.getMessage() for record in caplog.records)
    texts.extend(
        str(record.exc_info[1])
        for record in caplog.records
        if record.exc_info and record.exc_info[1]
    )
    assert len(caplog.records) > 10, "the scenarios must actually log"
    everything = "\n".join(texts)
    assert SECRET not in everything
    for token in CARD_TOKENS:
        assert token not in everything
    for signature in signatures:
        assert signature not in everything
    assert FULL_PAN not in everything
    assert "X-JWS-Signature" not in everything
