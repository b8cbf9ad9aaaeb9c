"""The pure classic call against a modelled gateway: a write lands at most once, told truly."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freedompay_async import (
    AmbiguousWriteError,
    ConnectError,
    ConnectionLost,
    FreedomPayError,
    GatewayError,
    HTTPStatusError,
    PaymentState,
    PaymentStatus,
    ReadTimeout,
    RefundEntry,
    RefundResult,
    RetryPolicy,
)
from freedompay_async._call import Act
from freedompay_async._classic_call import ClassicCall
from freedompay_async._classic_models import CaptureResult, ClassicOperation
from freedompay_async.settlement import SettlePolicy

PID = 77
AMOUNT = Decimal(30)

# What one send meets at the gateway: (it commits, what the client is told).
SENDS = {
    "ok": True,
    "drop_after": True,
    "500_after": True,
    "1000_after": True,
    "timeout_after": True,
    "503": False,
    "connect": False,
    "drop_before": False,
    "490": False,
}


def _told(kind: str, operation: ClassicOperation) -> object:
    if kind == "ok":
        if operation is ClassicOperation.REFUND:
            return RefundResult(payment_id=PID, refund_payment_id=900, amount=AMOUNT)
        return CaptureResult(payment_id=PID)
    if kind in ("drop_after", "drop_before"):
        return ConnectionLost("lost", operation=operation.value)
    if kind == "500_after":
        return HTTPStatusError("500", operation=operation.value, status_code=500)
    if kind == "503":
        return HTTPStatusError("503", operation=operation.value, status_code=503)
    if kind == "1000_after":
        return GatewayError("busy", operation=operation.value, error_code=1000)
    if kind == "490":
        return GatewayError("refused", operation=operation.value, error_code=490)
    if kind == "timeout_after":
        return ReadTimeout("slow", operation=operation.value)
    return ConnectError("down", operation=operation.value)


def _status(operation: ClassicOperation, commits: int) -> PaymentStatus:
    if operation is ClassicOperation.REFUND:
        refunds = tuple(
            RefundEntry(payment_id=900 + n, state=PaymentState.SUCCESS, amount=AMOUNT)
            for n in range(commits)
        )
        return PaymentStatus(
            payment_id=PID,
            state=PaymentState.SUCCESS,
            amount=Decimal(100),
            captured=True,
            refunds=refunds,
        )
    return PaymentStatus(
        payment_id=PID,
        state=PaymentState.SUCCESS,
        amount=Decimal(100),
        captured=commits > 0,
        clearing_amount=Decimal(100) if commits else None,
    )


@settings(max_examples=400, deadline=None)
@given(
    operation=st.sampled_from([ClassicOperation.REFUND, ClassicOperation.CAPTURE]),
    sends=st.lists(st.sampled_from(sorted(SENDS)), min_size=1, max_size=8),
    reads=st.lists(st.sampled_from(["fresh", "stale", "fail"]), max_size=8),
    window=st.sampled_from([None, 0.5, 5.0]),
    attempts=st.integers(min_value=1, max_value=5),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_a_write_never_lands_twice_and_its_end_is_the_truth(  # noqa: PLR0917
    operation: ClassicOperation,
    sends: list[str],
    reads: list[str],
    window: float | None,
    attempts: int,
    seed: int,
) -> None:
    """Whatever the gateway answers, a write commits at most once and the call says so."""
    if window is not None:
        # With a window, a status that lags past it is the documented trade-off; model none.
        reads = [r for r in reads if r != "stale"]
    policy = RetryPolicy(attempts=attempts, deadline=60.0, reconcile_grace=1.0)
    call = ClassicCall(
        operation,
        policy=policy,
        now=0.0,
        rng=random.Random(seed),
        context={"payment_id": str(PID)},
        amount=AMOUNT if operation is ClassicOperation.REFUND else None,
        before=_status(operation, 0),
        settle=SettlePolicy(new_proves_not_landed_after=window),
    )
    now = 0.0
    commits = 0
    send_iter = iter(sends)
    read_iter = iter(reads)
    for _ in range(100):
        act = call.next_step(now)
        if act is Act.SEND:
            kind = next(send_iter, "connect")
            if SENDS[kind]:
                commits += 1
            now += 0.1
            call.record(_told(kind, operation), now=now)
        elif act is Act.ASK_STATUS:
            read = next(read_iter, "fresh")
            now += 0.1
            if read == "fail":
                call.record(ReadTimeout("slow", operation="payment_status"), now=now)
            else:
                call.record(_status(operation, commits if read == "fresh" else 0), now=now)
        elif act is Act.SLEEP:
            assert call.delay >= 0
            now += call.delay
            call.woke()
        else:
            break
    assert call.next_act in (Act.DONE, Act.FAIL), "every call ends"
    assert commits <= 1, "a write landed twice"
    if call.next_act is Act.DONE:
        assert commits == 1
        assert call.guard_state == "done"
    else:
        assert isinstance(call.error, FreedomPayError)
        if commits:
            assert isinstance(call.error, AmbiguousWriteError)
            assert call.guard_state == "ambiguous"


def test_an_unchanged_status_after_a_lost_reply_is_never_a_resend() -> None:
    """Default settle policy: a refund whose reply was lost is never sent again on `no trace`."""
    call = ClassicCall(
        ClassicOperation.REFUND,
        policy=RetryPolicy(attempts=3, deadline=60.0, reconcile_grace=1.0),
        now=0.0,
        rng=random.Random(1),
        context={"payment_id": str(PID)},
        amount=AMOUNT,
        before=_status(ClassicOperation.REFUND, 0),
    )
    now, sends = 0.0, 0
    while (act := call.next_step(now)) not in (Act.DONE, Act.FAIL):
        if act is Act.SEND:
            sends += 1
            call.record(ConnectionLost("lost", operation="refund"), now=now)
        elif act is Act.ASK_STATUS:
            call.record(_status(ClassicOperation.REFUND, 0), now=now)
        else:
            now += call.delay
            call.woke()
    assert sends == 1
    assert call.reads == 3
    with pytest.raises(AmbiguousWriteError, match="payment_status"):
        raise call.error  # type: ignore[misc]
