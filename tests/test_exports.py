"""The public surface: names from wire-contract §6, a sorted __all__, picklable exceptions."""

from __future__ import annotations

import pickle
from decimal import Decimal

import pytest

import freedompay_async
from freedompay_async import (
    AmbiguousPaymentError,
    AmbiguousWriteError,
    DecodeError,
    DuplicateWriteError,
    ExcessRefundError,
    FreedomPayError,
    GatewayError,
    HTTPStatusError,
    InvoicePayment,
    InvoiceStatus,
    PaymentPending,
    ResponseError,
    WriteClaim,
    WriteRefusedError,
)

CONTRACT_NAMES = {
    "FreedomPayClient",
    "InvoiceStatus",
    "InvoiceInit",
    "InvoicePayment",
    "InvoiceInfo",
    "PayRequest",
    "PayOutcome",
    "Timeouts",
    "RetryPolicy",
    "PollPolicy",
    "FreedomPayError",
    "ConfigurationError",
    "TransportError",
    "ConnectError",
    "RequestTimeout",
    "ResponseError",
    "HTTPStatusError",
    "DecodeError",
    "SignatureError",
    "GatewayError",
    "PaymentPending",
    "AmbiguousPaymentError",
}

CLASSIC_NAMES = {
    "SavedCard",
    "CardAddition",
    "RemovedCard",
    "PaymentState",
    "PaymentStatus",
    "RefundEntry",
    "RevokeEntry",
    "RefundResult",
    "CancelResult",
    "CaptureResult",
}

CLASSIC_CLIENT_NAMES = {
    "ClassicOptions",
    "DuplicateWriteError",
    "ExcessRefundError",
    "WriteRefusedError",
    "AmbiguousWriteError",
    "WriteClaim",
}


def test_all_is_sorted_and_exported() -> None:
    """__all__ is sorted, holds no duplicates, and every name in it is importable."""
    names = freedompay_async.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(freedompay_async, name), name


def test_contract_names_are_exported() -> None:
    """Every public name of wire-contract §6 is importable from the package."""
    assert set(freedompay_async.__all__) >= CONTRACT_NAMES


def test_classic_merchant_api_models_are_exported() -> None:
    """The saved-card and payment-lifecycle models are importable from the package."""
    assert set(freedompay_async.__all__) >= CLASSIC_NAMES
    for name in CLASSIC_NAMES:
        assert getattr(freedompay_async, name).__module__ == "freedompay_async._classic_models"


def test_classic_client_names_are_exported_with_docstrings() -> None:
    """The classic client's options, claim and refusals are exported and documented."""
    assert set(freedompay_async.__all__) >= CLASSIC_CLIENT_NAMES
    for name in CLASSIC_CLIENT_NAMES:
        doc = getattr(freedompay_async, name).__doc__
        assert doc
        assert doc.strip()


def test_signing_and_testing_modules_expose_the_contract() -> None:
    """Signing has jws_detached, pg_sig, verify_pg_sig; testing has FreedomPayEmulator."""
    from freedompay_async import signing, testing

    for name in ("jws_detached", "pg_sig", "verify_pg_sig"):
        assert callable(getattr(signing, name))
    assert hasattr(testing, "FreedomPayEmulator")


def test_reporting_helpers_live_in_their_own_module() -> None:
    """The batch reports come from `freedompay_async.reporting`, not the top-level names."""
    from freedompay_async import reporting

    assert reporting.__all__ == ["BatchSummary", "SummaryBuilder"]
    for name in reporting.__all__:
        assert name not in freedompay_async.__all__
        assert getattr(freedompay_async, name) is getattr(reporting, name)  # existing imports
    summary = reporting.SummaryBuilder().build(0.0)
    assert summary.total == 0


EXCEPTIONS = sorted(
    (
        obj
        for name in freedompay_async.__all__
        if isinstance(obj := getattr(freedompay_async, name), type)
        and issubclass(obj, BaseException)
    ),
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: cls.__name__)
def test_every_exception_is_a_freedompay_error_and_pickles(cls: type[FreedomPayError]) -> None:
    """Each exported exception derives from FreedomPayError and survives a pickle round trip."""
    assert issubclass(cls, FreedomPayError)
    error = cls("something failed", operation="pay", attempts=3)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls
    assert str(clone) == "something failed"
    assert clone.operation == "pay"
    assert clone.attempts == 3


def test_rich_exceptions_keep_their_fields_through_pickle() -> None:
    """Keyword-only fields (codes, headers, payment, customer) survive pickling."""
    payment = InvoicePayment(invoice_status=InvoiceStatus.PROCESS, amount=Decimal("10.50"))
    cases = [
        GatewayError("e", error_code=1000, error_description="Internal"),
        HTTPStatusError("h", status_code=429, headers={"Retry-After": "3"}, body=b"x" * 5000),
        DecodeError("d", tag="amount"),
        PaymentPending("p", payment=payment),
        AmbiguousPaymentError("a", customer="cust-1"),
        AmbiguousWriteError("w", operation="refund", payment_id=7, amount=Decimal("1.50")),
        DuplicateWriteError(
            "d",
            payment_id=7,
            claim=WriteClaim(operation="refund", payment_id=7, amount=None, state="done"),
        ),
        ExcessRefundError("x", payment_id=7, amount=Decimal(5), refundable=Decimal(2)),
        WriteRefusedError("r", payment_id=7, reason="already captured"),
    ]
    for error in cases:
        clone = pickle.loads(pickle.dumps(error))
        assert clone.__dict__ == error.__dict__
    http = pickle.loads(pickle.dumps(cases[1]))
    assert isinstance(http, HTTPStatusError)
    assert http.retry_after == "3"
    assert len(http.body) == 2048


def test_builtin_mixins() -> None:
    """Timeouts are TimeoutErrors, bad values are ValueErrors, nothing else is an OSError."""
    assert issubclass(freedompay_async.RequestTimeout, TimeoutError)
    assert issubclass(freedompay_async.ReadTimeout, TimeoutError)
    assert issubclass(freedompay_async.ConfigurationError, ValueError)
    assert issubclass(DecodeError, ValueError)
    assert issubclass(DecodeError, ResponseError)
    for cls in EXCEPTIONS:
        # TimeoutError itself derives from OSError; no other class may.
        if not issubclass(cls, TimeoutError):
            assert not issubclass(cls, OSError), cls
