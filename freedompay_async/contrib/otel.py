"""
OpenTelemetry traces and metrics for `FreedomPayClient` (extra `otel`: opentelemetry-api).

```python
from freedompay_async import FreedomPayClient
from freedompay_async.contrib.otel import Instrumentation

otel = Instrumentation()  # the global tracer and meter providers, or pass your own
client = otel.instrument(
    FreedomPayClient(merchant_id, secret_key, on_retry=otel.on_retry, on_giveup=otel.on_giveup)
)
```

`instrument(client)` wraps the client's public calls (`init_invoice`, `pay_invoice`,
`invoice_status`, `invoice_info`, `pay_one`, `pay_invoices`) in a span each; `on_retry` and
`on_giveup` turn the client's `RetryEvent`s into span events and metric points. The hooks run in
the calling task, inside the call's span. Pass your own hooks as `Instrumentation(on_retry=...,
on_giveup=...)`: they run after the instrumentation's.

Spans are named `freedompay.<operation>` (kind CLIENT) and carry:

| attribute | meaning |
|---|---|
| `freedompay.operation` | `init`, `pay`, `status`, `info` or `pay_batch` |
| `freedompay.attempts` | requests the call sent (from the error, or 1 + resends) |
| `freedompay.retries` | resends of the call |
| `freedompay.outcome` | `ok` (a reply), `ambiguous`, `pending` or `error` |
| `freedompay.in_doubt` | a pay may have been written unanswered: only a status read settles it |
| `freedompay.reconciled` | a status read settled the pay that was in doubt |
| `freedompay.invoice_status` | the invoice's status in the reply |
| `freedompay.invoice_id`, `freedompay.order_id` | the gateway's and the merchant's ids |
| `freedompay.gateway.error_code` | the gateway's error code (a refusal or a decline) |
| `error.type` | the exception class, when the call raised |

Never recorded: the secret key, signatures, card tokens, the invoice's `customer` pay token,
PANs (not even masked), request or reply bodies, exception messages.

Metrics (meter `freedompay_async`):

| instrument | kind | attributes |
|---|---|---|
| `freedompay.client.calls` | counter | `freedompay.operation`, `freedompay.outcome` |
| `freedompay.client.retries` | counter | `freedompay.operation`, `freedompay.attempt_class` |
| `freedompay.client.reconciles` | counter | `freedompay.operation` |
| `freedompay.client.ambiguous` | counter | `freedompay.operation` |
| `freedompay.client.duration` | histogram (s) | `freedompay.operation`, `freedompay.outcome` |

A batch (`pay_invoices`) is one `freedompay.pay_batch` span (attribute `freedompay.batch.items`)
with a `freedompay.pay` span per item under it; every item counts once in the metrics.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
from typing import TYPE_CHECKING, Any, Final

import attrs
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from freedompay_async import (
    AmbiguousPaymentError,
    FreedomPayClient,
    FreedomPayError,
    GatewayError,
    InvoicePayment,
    PaymentPending,
    PayOutcome,
    RetryEvent,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

__all__ = ["Instrumentation"]

_SCOPE: Final = "freedompay_async"

#: Public client methods -> the operation they perform.
_CALLS: Final = {
    "init_invoice": "init",
    "pay_invoice": "pay",
    "invoice_status": "status",
    "invoice_info": "info",
}


@attrs.define
class _CallState:
    """What the hooks learn about one call while it runs."""

    resends: int = 0
    reconciled: bool = False
    last_attempt: int = 0


_CURRENT: contextvars.ContextVar[_CallState | None] = contextvars.ContextVar(
    "freedompay_otel_call", default=None
)
# ids of the batch outcomes a `pay_one` span already counted, so a batch counts each item once.
_BATCH: contextvars.ContextVar[set[int] | None] = contextvars.ContextVar(
    "freedompay_otel_batch", default=None
)


class Instrumentation:
    """
    Traces and metrics for one or more clients, through OpenTelemetry's API.

    Args:
        tracer_provider: Where spans go; the global provider when None.
        meter_provider: Where metric points go; the global provider when None.
        on_retry: Your own retry hook, called after the instrumentation's.
        on_giveup: Your own give-up hook, called after the instrumentation's.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        on_retry: Callable[[RetryEvent], object] | None = None,
        on_giveup: Callable[[RetryEvent], object] | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self._user_on_retry = on_retry
        self._user_on_giveup = on_giveup
        self._calls = meter.create_counter(
            "freedompay.client.calls", unit="{call}", description="Calls finished, per outcome"
        )
        self._retries = meter.create_counter(
            "freedompay.client.retries", unit="{request}", description="Requests sent again"
        )
        self._reconciles = meter.create_counter(
            "freedompay.client.reconciles",
            unit="{call}",
            description="Pays in doubt whose outcome was asked of the invoice status",
        )
        self._ambiguous = meter.create_counter(
            "freedompay.client.ambiguous",
            unit="{call}",
            description="Pays that may or may not have charged (check the status before paying)",
        )
        self._duration = meter.create_histogram(
            "freedompay.client.duration", unit="s", description="Duration of a call"
        )

    def __repr__(self) -> str:
        return "Instrumentation()"

    # -- hooks -----------------------------------------------------------------------------------

    def on_retry(self, event: RetryEvent) -> None:
        """
        Record a resend or a reconcile: pass this as `FreedomPayClient(on_retry=...)`.

        Args:
            event: What the client is about to do.
        """
        state = _CURRENT.get()
        attributes: dict[str, str] = {"freedompay.operation": event.operation}
        if event.action == "reconcile":
            self._reconciles.add(1, attributes)
            if state is not None:
                state.reconciled = True
        else:
            self._retries.add(1, {**attributes, "freedompay.attempt_class": event.outcome})
            if state is not None:
                state.resends += 1
        if state is not None:
            state.last_attempt = max(state.last_attempt, event.attempt)
        self._span_event(event)
        if self._user_on_retry is not None:
            self._user_on_retry(event)

    def on_giveup(self, event: RetryEvent) -> None:
        """
        Record that a call gave up: pass this as `FreedomPayClient(on_giveup=...)`.

        Args:
            event: The last step of the call.
        """
        self._span_event(event)
        if self._user_on_giveup is not None:
            self._user_on_giveup(event)

    def _span_event(self, event: RetryEvent) -> None:
        trace.get_current_span().add_event(
            f"freedompay.{event.action}",
            {
                "freedompay.operation": event.operation,
                "freedompay.attempt": event.attempt,
                "freedompay.delay": round(event.delay, 3),
                "freedompay.attempt_class": event.outcome,
                "error.type": type(event.cause).__name__,
            },
        )

    # -- wrapping --------------------------------------------------------------------------------

    def instrument(self, client: FreedomPayClient) -> FreedomPayClient:
        """
        Wrap the client's public calls in spans and metrics (the client itself is returned).

        Pass `on_retry=self.on_retry, on_giveup=self.on_giveup` to the client's constructor as
        well: without them the spans carry no retries, reconciles or in-doubt flags.

        Args:
            client: The client to instrument; instrumenting it twice has no further effect.

        Returns:
            The same client.
        """
        if getattr(client, "_freedompay_otel", None) is not None:
            return client
        for name, operation in _CALLS.items():
            setattr(client, name, self._wrap(getattr(client, name), operation))
        setattr(client, "pay_one", self._wrap_pay_one(client.pay_one))  # noqa: B010
        setattr(client, "pay_invoices", self._wrap_batch(client.pay_invoices))  # noqa: B010
        setattr(client, "_freedompay_otel", self)  # noqa: B010
        return client

    def _wrap(
        self, method: Callable[..., Awaitable[Any]], operation: str
    ) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - the wrapped signature
            state = _CallState()
            token = _CURRENT.set(state)
            started = time.perf_counter()
            with self._tracer.start_as_current_span(
                f"freedompay.{operation}",
                kind=SpanKind.CLIENT,
                attributes={"freedompay.operation": operation},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    result = await method(*args, **kwargs)
                except BaseException as exc:
                    self._finish(span, operation, state, started, result=None, error=exc)
                    raise
                else:
                    self._finish(span, operation, state, started, result=result, error=None)
                    return result
                finally:
                    _CURRENT.reset(token)

        return call

    def _wrap_pay_one(
        self, method: Callable[..., Awaitable[PayOutcome]]
    ) -> Callable[..., Awaitable[PayOutcome]]:
        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> PayOutcome:  # noqa: ANN401
            state = _CallState()
            token = _CURRENT.set(state)
            started = time.perf_counter()
            with self._tracer.start_as_current_span(
                "freedompay.pay",
                kind=SpanKind.CLIENT,
                attributes={"freedompay.operation": "pay"},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    outcome = await method(*args, **kwargs)
                except BaseException as exc:
                    self._finish(span, "pay", state, started, result=None, error=exc)
                    raise
                finally:
                    _CURRENT.reset(token)
                self._finish(
                    span, "pay", state, started, result=outcome.payment, error=outcome.error
                )
                counted = _BATCH.get()
                if counted is not None:
                    counted.add(id(outcome))
                return outcome

        return call

    def _wrap_batch(
        self, method: Callable[..., AsyncGenerator[PayOutcome]]
    ) -> Callable[..., AsyncGenerator[PayOutcome]]:
        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> AsyncGenerator[PayOutcome]:  # noqa: ANN401
            with self._tracer.start_as_current_span(
                "freedompay.pay_batch",
                kind=SpanKind.CLIENT,
                attributes={"freedompay.operation": "pay_batch"},
            ) as span:
                items = 0
                counted: set[int] = set()
                token = _BATCH.set(counted)
                try:
                    async with contextlib.aclosing(method(*args, **kwargs)) as outcomes:
                        async for outcome in outcomes:
                            items += 1
                            if id(outcome) in counted:
                                counted.discard(id(outcome))
                            else:
                                self._record_outcome(outcome)
                            yield outcome
                finally:
                    span.set_attribute("freedompay.batch.items", items)
                    with contextlib.suppress(ValueError):  # closed from another context
                        _BATCH.reset(token)

        return call

    def _record_outcome(self, outcome: PayOutcome) -> None:
        result = _outcome_name(outcome.payment, outcome.error)
        attributes = {"freedompay.operation": "pay", "freedompay.outcome": result}
        self._calls.add(1, attributes)
        self._duration.record(outcome.elapsed, attributes)
        if result == "ambiguous":
            self._ambiguous.add(1, {"freedompay.operation": "pay"})

    def _finish(
        self,
        span: trace.Span,
        operation: str,
        state: _CallState,
        started: float,
        *,
        result: object,
        error: BaseException | None,
    ) -> None:
        outcome = _outcome_name(result, error)
        metric_attributes = {"freedompay.operation": operation, "freedompay.outcome": outcome}
        self._calls.add(1, metric_attributes)
        self._duration.record(time.perf_counter() - started, metric_attributes)
        in_doubt = state.reconciled or isinstance(error, AmbiguousPaymentError)
        if outcome == "ambiguous":
            self._ambiguous.add(1, {"freedompay.operation": operation})
        attempts = error.attempts if isinstance(error, FreedomPayError) else state.resends + 1
        span.set_attribute("freedompay.outcome", outcome)
        span.set_attribute("freedompay.attempts", attempts)
        span.set_attribute("freedompay.retries", state.resends)
        span.set_attribute("freedompay.in_doubt", in_doubt)
        span.set_attribute("freedompay.reconciled", in_doubt and outcome != "ambiguous")
        payment = result if isinstance(result, InvoicePayment) else None
        if isinstance(error, PaymentPending):
            payment = error.payment
        if payment is not None:
            span.set_attribute("freedompay.invoice_status", payment.invoice_status.value)
            if payment.invoice_id is not None:
                span.set_attribute("freedompay.invoice_id", payment.invoice_id)
            if payment.order_id is not None:
                span.set_attribute("freedompay.order_id", payment.order_id)
            if payment.error_code is not None:
                span.set_attribute("freedompay.gateway.error_code", payment.error_code)
        invoice_id = getattr(result, "invoice_id", None)
        if payment is None and isinstance(invoice_id, int):
            span.set_attribute("freedompay.invoice_id", invoice_id)
        if isinstance(error, GatewayError) and error.error_code is not None:
            span.set_attribute("freedompay.gateway.error_code", error.error_code)
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def _outcome_name(result: object, error: BaseException | None) -> str:
    if error is None:
        return "ok" if result is not None else "error"
    if isinstance(error, AmbiguousPaymentError):
        return "ambiguous"
    if isinstance(error, PaymentPending):
        return "pending"
    return "error"
