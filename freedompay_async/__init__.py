"""
freedompay_async: an asyncio SDK for Freedom Pay's invoice API.

```python
async with FreedomPayClient(merchant_id, secret_key) as client:
    init = await client.init_invoice(order_id="A-1", amount=Decimal("100"), description="Order A-1")
    payment = await client.pay_invoice(customer=init.customer, user_id="u1", card_token=token)
```

Everything users need is importable from here; `freedompay_async.signing` holds the signature
helpers, `freedompay_async.reporting` the batch reports, `freedompay_async.testing` the emulator.
"""

from __future__ import annotations

import logging
from importlib import metadata

from freedompay_async._classic import ClassicOptions
from freedompay_async._classic_errors import (
    AmbiguousWriteError,
    DuplicateWriteError,
    ExcessRefundError,
    WriteClaim,
    WriteRefusedError,
)
from freedompay_async._classic_models import (
    CancelResult,
    CaptureResult,
    CardAddition,
    PaymentState,
    PaymentStatus,
    RefundEntry,
    RefundResult,
    RemovedCard,
    RevokeEntry,
    SavedCard,
)
from freedompay_async._client import (
    FreedomPayClient,
    InMemoryPayGuard,
    PayGuard,
    RateLimiter,
)
from freedompay_async._config import Clock, PollPolicy, RetryPolicy, Timeouts
from freedompay_async._exceptions import (
    AmbiguousPaymentError,
    CircuitOpenError,
    ClientClosedError,
    ConfigurationError,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    DecodeError,
    DuplicatePayError,
    FreedomPayError,
    GatewayError,
    HTTPStatusError,
    PaymentPending,
    PoolTimeout,
    ReadTimeout,
    RequestTimeout,
    ResponseError,
    SignatureError,
    TransportError,
)
from freedompay_async._hold import never_sent
from freedompay_async._models import (
    BatchProgress,
    InvoiceInfo,
    InvoiceInit,
    InvoicePayment,
    InvoiceStatus,
    PayClaim,
    PayOutcome,
    PayRequest,
)
from freedompay_async._retry import RetryEvent

# The batch reports live in `freedompay_async.reporting`; their names stay importable from here,
# outside `__all__`, so existing imports keep working.
from freedompay_async.reporting import BatchSummary as BatchSummary
from freedompay_async.reporting import SummaryBuilder as SummaryBuilder

try:
    __version__ = metadata.version("freedompay-async")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0"

# A library never prints on its own: the application configures logging (Python's "last resort"
# handler would otherwise print the SDK's warnings to stderr of a plain script).
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AmbiguousPaymentError",
    "AmbiguousWriteError",
    "BatchProgress",
    "CancelResult",
    "CaptureResult",
    "CardAddition",
    "CircuitOpenError",
    "ClassicOptions",
    "ClientClosedError",
    "Clock",
    "ConfigurationError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLost",
    "DecodeError",
    "DuplicatePayError",
    "DuplicateWriteError",
    "ExcessRefundError",
    "FreedomPayClient",
    "FreedomPayError",
    "GatewayError",
    "HTTPStatusError",
    "InMemoryPayGuard",
    "InvoiceInfo",
    "InvoiceInit",
    "InvoicePayment",
    "InvoiceStatus",
    "PayClaim",
    "PayGuard",
    "PayOutcome",
    "PayRequest",
    "PaymentPending",
    "PaymentState",
    "PaymentStatus",
    "PollPolicy",
    "PoolTimeout",
    "RateLimiter",
    "ReadTimeout",
    "RefundEntry",
    "RefundResult",
    "RemovedCard",
    "RequestTimeout",
    "ResponseError",
    "RetryEvent",
    "RetryPolicy",
    "RevokeEntry",
    "SavedCard",
    "SignatureError",
    "Timeouts",
    "TransportError",
    "WriteClaim",
    "WriteRefusedError",
    "__version__",
    "never_sent",
]
