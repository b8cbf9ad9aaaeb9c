"""OpenTelemetry: real calls against the emulator, read back from the SDK's in-memory exporters."""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from freedompay_async import (
    AmbiguousPaymentError,
    FreedomPayClient,
    GatewayError,
    InvoiceStatus,
    PayRequest,
    PollPolicy,
    RetryEvent,
    RetryPolicy,
    Timeouts,
)
from freedompay_async.contrib.otel import Instrumentation
from freedompay_async.testing import Fate, Fault, FreedomPayEmulator, VirtualClock

TOKEN = "card-token-0f7e2c44-1b9a-4c3d-9e8f-5a6b7c8d9e0f"
USER = "user-otel"


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    otel: Instrumentation

    def finished(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == name]

    def points(self) -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
        """Every metric point: (instrument, attributes) -> value (sums) or count (histograms)."""
        found: dict[tuple[str, frozenset[tuple[str, Any]]], Any] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        key = (metric.name, frozenset((point.attributes or {}).items()))
                        found[key] = (
                            point.count if isinstance(point, HistogramDataPoint) else point.value
                        )
        return found


def _key(name: str, **attributes: str) -> tuple[str, frozenset[tuple[str, Any]]]:
    return name, frozenset({f"freedompay.{k}": v for k, v in attributes.items()}.items())


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """An instrumentation writing to in-memory span and metric exporters."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    otel = Instrumentation(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield Telemetry(spans, reader, otel)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
async def emu() -> AsyncIterator[FreedomPayEmulator]:
    """An adversarial emulator: every pay it receives commits, so a second pay would show."""
    async with FreedomPayEmulator(adversarial=True, seed=3) as emulator:
        yield emulator


def _client(emu: FreedomPayEmulator, otel: Instrumentation) -> FreedomPayClient:
    client = FreedomPayClient(
        emu.merchant_id,
        emu.secret_key,
        base_url=emu.base_url,
        clock=VirtualClock(),
        rng=random.Random(5),
        timeouts=Timeouts(connect=2.0, read=2.0, pool=2.0),
        retry=RetryPolicy(attempts=4, deadline=30.0, reconcile_grace=0.5),
        poll=PollPolicy(interval=0.5, factor=1.5, max_interval=2.0, timeout=30.0),
        on_retry=otel.on_retry,
        on_giveup=otel.on_giveup,
    )
    return otel.instrument(client)


async def test_a_pay_gives_one_span_and_one_call_point(
    emu: FreedomPayEmulator, telemetry: Telemetry
) -> None:
    """A plain pay is one CLIENT span with its status and ids, and one call and duration point."""
    customer = emu.create_invoice(amount=Decimal(150), fate=Fate.paid())
    async with _client(emu, telemetry.otel) as client:
        payment = await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert payment.invoice_status is InvoiceStatus.OK
    [span] = telemetry.finished("freedompay.pay")
    attributes = dict(span.attributes or {})
    assert attributes["freedompay.operation"] == "pay"
    assert attributes["freedompay.outcome"] == "ok"
    assert attributes["freedompay.attempts"] == 1
    assert attributes["freedompay.retries"] == 0
    assert attributes["freedompay.in_doubt"] is False
    assert attributes["freedompay.reconciled"] is False
    assert attributes["freedompay.invoice_status"] == "ok"
    assert attributes["freedompay.invoice_id"] == payment.invoice_id
    assert span.status.status_code is not StatusCode.ERROR
    points = telemetry.points()
    assert points[_key("freedompay.client.calls", operation="pay", outcome="ok")] == 1
    assert points[_key("freedompay.client.duration", operation="pay", outcome="ok")] == 1
    assert not [key for key in points if key[0] == "freedompay.client.retries"]
    assert emu.charges(customer) == 1


async def test_a_retried_status_read_counts_one_retry(
    emu: FreedomPayEmulator, telemetry: Telemetry
) -> None:
    """A 503 on a status read is one resend: a span event, attempts 2, and a retry point."""
    customer = emu.create_invoice(amount=Decimal(20))
    emu.inject(Fault.http_status(503), operation="status")
    async with _client(emu, telemetry.otel) as client:
        status = await client.invoice_status(customer=customer)
    assert status.invoice_status is InvoiceStatus.NEW
    assert emu.stats.by_operation["status"] == 2
    [span] = telemetry.finished("freedompay.status")
    attributes = dict(span.attributes or {})
    assert attributes["freedompay.outcome"] == "ok"
    assert attributes["freedompay.attempts"] == 2
    assert attributes["freedompay.retries"] == 1
    assert attributes["freedompay.in_doubt"] is False
    [event] = span.events
    assert event.name == "freedompay.resend"
    assert dict(event.attributes or {})["freedompay.attempt_class"] == "refused"
    assert dict(event.attributes or {})["error.type"] == "HTTPStatusError"
    points = telemetry.points()
    assert (
        points[_key("freedompay.client.retries", operation="status", attempt_class="refused")] == 1
    )
    assert points[_key("freedompay.client.calls", operation="status", outcome="ok")] == 1


async def test_an_ambiguous_pay_is_in_doubt_and_counted(
    emu: FreedomPayEmulator, telemetry: Telemetry
) -> None:
    """A pay refused with 1000 reads new: the span is in doubt, unreconciled, ambiguous."""
    customer = emu.create_invoice(amount=Decimal(75))
    emu.inject(Fault.error_code(1000), operation="pay")
    async with _client(emu, telemetry.otel) as client:
        with pytest.raises(AmbiguousPaymentError):
            await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert emu.charges(customer) == 0
    [span] = telemetry.finished("freedompay.pay")
    attributes = dict(span.attributes or {})
    assert attributes["freedompay.outcome"] == "ambiguous"
    assert attributes["freedompay.in_doubt"] is True
    assert attributes["freedompay.reconciled"] is False
    assert attributes["error.type"] == "AmbiguousPaymentError"
    assert span.status.status_code is StatusCode.ERROR
    assert "freedompay.reconcile" in [event.name for event in span.events]
    points = telemetry.points()
    assert points[_key("freedompay.client.ambiguous", operation="pay")] == 1
    assert points[_key("freedompay.client.reconciles", operation="pay")] == 1
    assert points[_key("freedompay.client.calls", operation="pay", outcome="ambiguous")] == 1


async def test_a_pay_settled_by_status_is_reconciled(
    emu: FreedomPayEmulator, telemetry: Telemetry
) -> None:
    """A pay that charged and lost its reply is in doubt, then reconciled to ok, charged once."""
    customer = emu.create_invoice(amount=Decimal(75))
    emu.inject(Fault.drop(after_commit=True), operation="pay")
    async with _client(emu, telemetry.otel) as client:
        payment = await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert payment.invoice_status is InvoiceStatus.OK
    assert emu.charges(customer) == 1
    [span] = telemetry.finished("freedompay.pay")
    attributes = dict(span.attributes or {})
    assert attributes["freedompay.outcome"] == "ok"
    assert attributes["freedompay.in_doubt"] is True
    assert attributes["freedompay.reconciled"] is True
    points = telemetry.points()
    assert points[_key("freedompay.client.reconciles", operation="pay")] == 1
    assert _key("freedompay.client.ambiguous", operation="pay") not in points


async def test_gateway_codes_are_recorded_for_refusals_and_declines(
    emu: FreedomPayEmulator, telemetry: Telemetry
) -> None:
    """A gateway refusal and a declined card both leave their error code on the span."""
    refused = emu.create_invoice(amount=Decimal(5))
    declined = emu.create_invoice(amount=Decimal(5), fate=Fate.declined(error_code=484))
    emu.inject(Fault.error_code(600), operation="status")
    async with _client(emu, telemetry.otel) as client:
        with pytest.raises(GatewayError):
            await client.invoice_status(customer=refused)
        payment = await client.pay_invoice(customer=declined, user_id=USER, card_token=TOKEN)
    assert payment.invoice_status is InvoiceStatus.FAILED
    [status_span] = telemetry.finished("freedompay.status")
    assert dict(status_span.attributes or {})["freedompay.gateway.error_code"] == 600
    assert dict(status_span.attributes or {})["freedompay.outcome"] == "error"
    [pay_span] = telemetry.finished("freedompay.pay")
    assert dict(pay_span.attributes or {})["freedompay.gateway.error_code"] == 484
    assert dict(pay_span.attributes or {})["freedompay.invoice_status"] == "failed"


async def test_a_batch_is_one_span_and_one_point_per_item(
    emu: FreedomPayEmulator, telemetry: Telemetry
) -> None:
    """pay_invoices is a span over one pay span per item; each item counts once in the metrics."""
    customers = [emu.create_invoice(amount=Decimal(9)) for _ in range(3)]
    single = emu.create_invoice(amount=Decimal(9))
    async with _client(emu, telemetry.otel) as client:
        requests = [PayRequest(customer=c, user_id=USER, card_token=TOKEN) for c in customers]
        states = [outcome.state async for outcome in client.pay_invoices(requests, concurrency=2)]
        one = await client.pay_one(PayRequest(customer=single, user_id=USER, card_token=TOKEN))
    assert states == ["paid"] * 3
    assert one.state == "paid"
    [batch] = telemetry.finished("freedompay.pay_batch")
    assert dict(batch.attributes or {})["freedompay.batch.items"] == 3
    pays = telemetry.finished("freedompay.pay")
    under_batch = [s for s in pays if s.parent and s.parent.span_id == batch.context.span_id]
    assert len(under_batch) == 3
    assert len(pays) == 4
    assert all(dict(s.attributes or {})["freedompay.outcome"] == "ok" for s in pays)
    assert telemetry.points()[_key("freedompay.client.calls", operation="pay", outcome="ok")] == 4


async def test_own_hooks_still_run_and_instrumenting_twice_changes_nothing(
    emu: FreedomPayEmulator,
) -> None:
    """Hooks given to the instrumentation run too; a second instrument() adds no second span."""
    seen: list[RetryEvent] = []
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    otel = Instrumentation(tracer_provider=provider, on_retry=seen.append, on_giveup=seen.append)
    emu.inject(Fault.http_status(503), operation="info")
    customer = emu.create_invoice()
    client = _client(emu, otel)
    assert otel.instrument(client) is client
    async with client:
        await client.invoice_info(customer=customer)
    assert [(event.operation, event.action) for event in seen] == [("info", "resend")]
    assert [span.name for span in spans.get_finished_spans()] == ["freedompay.info"]
    assert repr(otel) == "Instrumentation()"


_PAN = re.compile(r"(?<![\d.])\d{12,19}(?!\d)")


async def test_no_exported_attribute_holds_a_secret_token_or_pan(
    emu: FreedomPayEmulator, telemetry: Telemetry
) -> None:
    """Across every scenario, no span, event or metric attribute holds a secret, token or PAN."""
    paid = emu.create_invoice(amount=Decimal(10))
    lost = emu.create_invoice(amount=Decimal(10))
    charged = emu.create_invoice(amount=Decimal(10))
    emu.inject(Fault.error_code(1000), operation="pay", customer=lost)
    emu.inject(Fault.http_status(500, after_commit=True), operation="pay", customer=charged)
    emu.inject(Fault.error_code(1000), operation="status")
    async with _client(emu, telemetry.otel) as client:
        init = await client.init_invoice(order_id="otel-1", amount=Decimal(3), description="d")
        await client.invoice_info(customer=init.customer)
        for customer in (paid, lost, charged):
            with contextlib.suppress(AmbiguousPaymentError):
                await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
        async for _ in client.pay_invoices(
            [PayRequest(customer=emu.create_invoice(), user_id=USER, card_token=TOKEN)]
        ):
            pass
    forbidden = {emu.secret_key, TOKEN, TOKEN[-12:], init.customer, paid, lost, charged}
    texts: list[str] = []
    for span in telemetry.spans.get_finished_spans():
        texts.append(span.name)
        texts.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            texts.append(event.name)
            texts.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
        texts.append(str(span.status.description))
    texts.extend(f"{name} {sorted(attributes)}" for name, attributes in telemetry.points())
    assert len(telemetry.spans.get_finished_spans()) >= 6
    assert texts
    for text in texts:
        for secret in forbidden:
            assert secret not in text, f"{secret!r} exported in {text!r}"
        assert not _PAN.search(text), f"a card number exported in {text!r}"
