"""
The exception tree of freedompay_async.

Every error the SDK raises is a `FreedomPayError`. The class tells what is known about the money:
a `ConnectError` out of `pay_invoice` means nothing was sent, an `AmbiguousPaymentError` means the
invoice may have been charged and must be checked before paying again.

```
FreedomPayError                         base, never raised itself; .operation, .attempts
├── ConfigurationError (+ValueError)    bad argument or option; nothing was sent
├── TransportError                      no usable HTTP reply
│   ├── ConnectError                    DNS, refused, TLS: request never written       → not sent
│   ├── ConnectionLost                  reset/closed once the request may be written   → ambiguous
│   ├── CircuitOpenError                the client's breaker refused to send           → not sent
│   ├── ClientClosedError (+RuntimeError) the client was closed before it sent          → not sent
│   └── RequestTimeout (+TimeoutError)
│       ├── PoolTimeout                 no gate slot within Timeouts.pool              → not sent
│       ├── ConnectTimeout                                                             → not sent
│       └── ReadTimeout                 written, no reply in time                      → ambiguous
├── ResponseError                       unusable reply; .status_code, .headers, .body (≤ 2 KiB)
│   ├── HTTPStatusError                 non-2xx; .retry_after (raw header)
│   ├── DecodeError (+ValueError)       not XML, hardening refusal, bad field; .tag
│   └── SignatureError                  a signature check failed; never retried
├── GatewayError                        status=error; .error_code, .error_description
├── PaymentPending                      poll budget spent, still non-terminal; .payment (last seen)
├── AmbiguousPaymentError               a pay may or may not have charged; .customer
└── DuplicatePayError                   the duplicate guard refused the pay; .customer, .claim
```

Rules kept by every class:

- Messages say what happened and what to do next; they never hold the secret key, a signature,
  a request body, a header value or a card token.
- What a reply carried is redacted before an exception keeps it (`masking.redact_headers`,
  `masking.redact_bytes`): a proxy or gateway that echoes the request's signature or card token,
  or sends a full card number, leaves only `[redacted]` or a masked PAN in `.headers`, `.body`,
  `error_description`, `str()`, `repr()` and pickles.
- The underlying library's exception is never chained as it is (aiohttp's `request_info` holds
  the request's headers, signature included): the cause is a `TransportCause` holding only its
  class name and a redacted message.
- `ClientClosedError` is also a `RuntimeError`: using a closed client is a lifecycle mistake,
  and code written for the plain `RuntimeError` a closed client raised before still catches it.
- `RequestTimeout` is also a `TimeoutError` (the same class as `asyncio.TimeoutError`), so code
  written around `asyncio.timeout()` still catches it. `ConfigurationError` and `DecodeError` are
  also `ValueError`. Nothing mixes in `OSError`: an `except OSError` written for files must not
  swallow a payment failure.
- Every instance survives `pickle` (batch results cross process boundaries), which keyword-only
  constructors need `__reduce__` for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freedompay_async.masking import REDACTED, redact_bytes, redact_headers, redact_text

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from freedompay_async._models import InvoicePayment, PayClaim

__all__ = [
    "AmbiguousPaymentError",
    "CircuitOpenError",
    "ClientClosedError",
    "ConfigurationError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLost",
    "DecodeError",
    "DuplicatePayError",
    "FreedomPayError",
    "GatewayError",
    "HTTPStatusError",
    "PaymentPending",
    "PoolTimeout",
    "ReadTimeout",
    "RequestTimeout",
    "ResponseError",
    "SignatureError",
    "TransportCause",
    "TransportError",
]

#: How much of a reply body an exception keeps for diagnosis.
BODY_KEEP_BYTES = 2048


class FreedomPayError(Exception):
    """
    Base of every error the SDK raises; never raised itself.

    Attributes:
        operation: The operation that failed (`"init"`, `"pay"`, `"status"`, `"info"`), or None.
        attempts: How many requests the call sent before it gave up (0 if none was sent).
    """

    def __init__(self, message: str, *, operation: str | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.attempts = attempts

    def _state(self) -> dict[str, Any]:
        return {"operation": self.operation, "attempts": self.attempts}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._state()))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[FreedomPayError], message: str, state: dict[str, Any]) -> FreedomPayError:
    """Recreate an exception from its message and keyword state (the target of `__reduce__`)."""
    return cls(message, **state)


class TransportCause(Exception):
    """
    What the HTTP library reported under a `TransportError`, stripped of the request.

    It is the `__cause__` of the transport's errors in place of the library's own exception,
    whose attributes (aiohttp's `request_info`) hold the request headers and so the signature.

    Attributes:
        kind: The library exception's qualified class name, e.g.
            `aiohttp.client_exceptions.ServerDisconnectedError`.
        detail: Its message, redacted and with control characters escaped.
    """

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


def _trim_partial(body: bytes, scrub: list[str]) -> bytes:
    """Cut a cut-off beginning of a secret from the end of a truncated body."""
    for secret in scrub:
        raw = secret.encode("utf-8", "surrogateescape")
        for size in range(min(len(raw) - 1, len(body)), 3, -1):
            if body.endswith(raw[:size]):
                return body[:-size] + REDACTED.encode()
    return body


class ConfigurationError(FreedomPayError, ValueError):
    """A bad argument or option; nothing was sent."""


class TransportError(FreedomPayError):
    """No usable HTTP reply was received."""


class ConnectError(TransportError):
    """The connection could not be made (DNS, refused, TLS); the request was never written."""


class ConnectionLost(TransportError):
    """The connection broke once the request may have been written; the outcome is unknown."""


class CircuitOpenError(TransportError):
    """The client's circuit breaker is open after sustained failures; nothing was sent."""


class ClientClosedError(TransportError, RuntimeError):
    """The client was closed before this request was sent; nothing was sent."""


class RequestTimeout(TransportError, TimeoutError):
    """A timeout expired (base of the pool, connect and read timeouts)."""


class PoolTimeout(RequestTimeout):
    """No concurrency slot became free within `Timeouts.pool`; nothing was sent."""


class ConnectTimeout(RequestTimeout):
    """The connection was not established within `Timeouts.connect`; nothing was sent."""


class ReadTimeout(RequestTimeout):
    """The request was written but no reply came within `Timeouts.read`; the outcome is unknown."""


class ResponseError(FreedomPayError):
    """
    A reply arrived but cannot be used.

    Headers and body are redacted before they are kept (see the module rules); *redact* names
    exact values to remove as well (the transport passes the request's signature and card
    token, so an echo of them in any syntax is removed).

    Attributes:
        status_code: The HTTP status code, or None when not known.
        headers: The reply headers (names lower-cased), redacted.
        body: At most the first 2 KiB of the reply body, redacted.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        attempts: int = 0,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        redact: Iterable[str] = (),
    ) -> None:
        super().__init__(message, operation=operation, attempts=attempts)
        scrub = [secret for secret in redact if secret]
        self.status_code = status_code
        self.headers: dict[str, str] = redact_headers(headers or {}, scrub)
        # Redact a window wider than what is kept (a secret or a field straddling the cut is
        # still seen whole), then keep the first 2 KiB; a big body is never copied whole.
        window = 2 * BODY_KEEP_BYTES + sum(len(secret) for secret in scrub)
        kept = redact_bytes(bytes(body[:window]), scrub)
        if len(kept) > BODY_KEEP_BYTES:
            kept = _trim_partial(kept[:BODY_KEEP_BYTES], scrub)
        self.body = kept

    def _state(self) -> dict[str, Any]:
        return {
            **super()._state(),
            "status_code": self.status_code,
            "headers": self.headers,
            "body": self.body,
        }


class HTTPStatusError(ResponseError):
    """
    The gateway answered with a non-2xx HTTP status.

    Attributes:
        retry_after: The raw `Retry-After` header, or None.
    """

    @property
    def retry_after(self) -> str | None:
        """The raw `Retry-After` header value, if the reply carried one."""
        return self.headers.get("retry-after")


class DecodeError(ResponseError, ValueError):
    """
    The reply is not a usable XML document: not XML, refused by hardening, or a malformed field.

    Attributes:
        tag: The XML tag whose value was wrong, or None when the whole reply was refused.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        attempts: int = 0,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        tag: str | None = None,
        redact: Iterable[str] = (),
    ) -> None:
        super().__init__(
            message,
            operation=operation,
            attempts=attempts,
            status_code=status_code,
            headers=headers,
            body=body,
            redact=redact,
        )
        self.tag = tag

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "tag": self.tag}


class SignatureError(ResponseError):
    """A signature check failed (a callback or a signed reply); never retried."""


class GatewayError(FreedomPayError):
    """
    The gateway answered `status=error`.

    Attributes:
        error_code: The gateway's numeric error code, or None when it sent none.
        error_description: The gateway's text, or None; redacted like a reply body (*redact*
            names exact values to remove as well).
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        attempts: int = 0,
        error_code: int | None = None,
        error_description: str | None = None,
        redact: Iterable[str] = (),
    ) -> None:
        scrub = [secret for secret in redact if secret]
        super().__init__(redact_text(message, scrub), operation=operation, attempts=attempts)
        self.error_code = error_code
        self.error_description = (
            None if error_description is None else redact_text(error_description, scrub)
        )

    def _state(self) -> dict[str, Any]:
        return {
            **super()._state(),
            "error_code": self.error_code,
            "error_description": self.error_description,
        }


class PaymentPending(FreedomPayError):
    """
    The poll budget ran out while the invoice was still not in a terminal status.

    Attributes:
        payment: The last `InvoicePayment` seen.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        attempts: int = 0,
        payment: InvoicePayment | None = None,
    ) -> None:
        super().__init__(message, operation=operation, attempts=attempts)
        self.payment = payment

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "payment": self.payment}


class AmbiguousPaymentError(FreedomPayError):
    """
    A pay may or may not have charged; check `invoice_status(customer=...)` before paying again.

    Attributes:
        customer: The invoice's customer token.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = "pay",
        attempts: int = 0,
        customer: str | None = None,
    ) -> None:
        super().__init__(message, operation=operation, attempts=attempts)
        self.customer = customer

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "customer": self.customer}


class DuplicatePayError(FreedomPayError):
    """
    The duplicate-pay guard refused the pay; nothing was sent.

    Attributes:
        customer: The invoice's customer token.
        claim: The guard's `PayClaim`: why it refused and the state it holds for the customer.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = "pay",
        attempts: int = 0,
        customer: str | None = None,
        claim: PayClaim | None = None,
    ) -> None:
        super().__init__(message, operation=operation, attempts=attempts)
        self.customer = customer
        self.claim = claim

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "customer": self.customer, "claim": self.claim}
