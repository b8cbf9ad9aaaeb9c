"""
How a call's steps reach the log and the `on_retry`/`on_giveup` hooks.

`_call.Call` writes notes (action, outcome, delay, cause); the driver hands them here after each
step. Log lines carry the operation, the call's non-secret identifiers, the attempt, the class
and the delay — never a body, a header, the secret or a card token. A hook that raises is logged
and the call goes on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from freedompay_async._retry import RetryEvent

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from freedompay_async._call import Call
    from freedompay_async._retry import RetryAction

__all__ = ["emit", "fmt_context"]

logger = logging.getLogger("freedompay_async")


def emit(
    call: Call,
    *,
    on_retry: Callable[[RetryEvent], object] | None,
    on_giveup: Callable[[RetryEvent], object] | None,
) -> None:
    """
    Log the call's notes and hand resends, reconciles and give-ups to the hooks.

    Args:
        call: The call whose notes are taken (and cleared).
        on_retry: The client's `on_retry` hook.
        on_giveup: The client's `on_giveup` hook.
    """
    notes, call.notes = call.notes or [], None
    context = fmt_context(call.context)
    for action, outcome, delay, cause in notes:
        if action == "poll_miss":
            logger.warning("poll read failed (%s) %s", type(cause).__name__, context)
            continue
        if action == "resend_if_new":
            logger.warning(
                "pay status reads new after an ambiguous attempt; resending once as "
                "RetryPolicy.resend_pay_if_new allows %s",
                context,
            )
            continue
        hook = on_giveup if action == "giveup" else on_retry
        log = logger.warning if action in ("giveup", "reconcile") else logger.info
        log(
            "%s %s after attempt %d (%s, %s); delay %.3fs %s",
            call.operation.value,
            action,
            call.attempts,
            outcome.value,
            type(cause).__name__,
            delay,
            context,
        )
        if hook is None:
            continue
        event = RetryEvent(
            operation=call.operation.value,
            attempt=call.attempts,
            delay=delay,
            outcome=outcome.value,
            action=cast("RetryAction", action),
            cause=cause,
            context=dict(call.context),
        )
        try:
            hook(event)
        except Exception:
            logger.exception("the %s hook raised; the call goes on", action)


def fmt_context(context: Mapping[str, str]) -> str:
    """
    Render a call's identifiers for a log line: `customer=... order_id=...`.

    Args:
        context: The call's non-secret identifiers.

    Returns:
        The rendered text.
    """
    return " ".join(f"{key}={value}" for key, value in context.items())
