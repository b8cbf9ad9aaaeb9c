"""
What to do after each attempt: return, raise, resend, reconcile or poll — decided, never done here.

Theory of operation. Every attempt of a call ends in a model or a `FreedomPayError`.
`classify()` maps that result to one `Outcome` through the data tables below (wire contract §5);
`decide()` turns the outcome, the attempt count, the deadline and the policy into a `Decision`.
The client's attempt loop is the only code that sleeps, sends or reads a clock; everything here is
pure and takes `now`, `deadline` and `rng` as arguments, so every rule is tested synchronously.

Rules, in the order they are applied:

1. A result that settles the call (`SETTLED`) is returned; a pay that answered a waiting status
   (`PENDING`) is polled or returned, as the caller asked.
2. `PERMANENT` (any other gateway error, other HTTP 4xx, a bad signature) and `LOCAL` (the
   client's breaker refused) are raised at once: sending again cannot change them.
3. **A pay is never resent after it may have been written.** `AMBIGUOUS` (read timeout, connection
   lost, HTTP 500/502/504, any other 5xx, 1xx or 3xx, a reply that is not XML) and `TRANSIENT`
   (error 1000) on pay lead to reconcile (`_call`): wait `reconcile_grace`, then ask the
   invoice's status by `customer`. The same outcomes on init, status and info are resent: they
   cannot charge anyone.
4. `NOT_SENT` (connect error or timeout, no gate slot) and `REFUSED` (HTTP 429, 503) are resent for
   every operation: the gateway never acted on the request.
5. A resend waits `backoff(n)` (full jitter), raised to a capped `Retry-After` hint. The call gives
   up when its attempts are spent, when the retry budget is empty, when the sleep would end past
   the call's single deadline, or when the capped hint alone exceeds the time left (give up now
   rather than sleep into the deadline).
6. `CancelledError` is not a `FreedomPayError` and never reaches this module: it always propagates.

The per-client `RetryBudget` and `CircuitBreaker` are small state machines in `_breaker`,
re-exported here; they take `now` as an argument and never read a clock.
"""

from __future__ import annotations

import email.utils
import enum
import math
from typing import TYPE_CHECKING, Literal, TypeAlias

import attrs

from freedompay_async._breaker import BreakerState, CircuitBreaker, RetryBudget
from freedompay_async._exceptions import (
    CircuitOpenError,
    ClientClosedError,
    ConfigurationError,
    ConnectError,
    ConnectionLost,
    DecodeError,
    FreedomPayError,
    GatewayError,
    HTTPStatusError,
    RequestTimeout,
    SignatureError,
)
from freedompay_async._exceptions import ConnectTimeout as _ConnectTimeout
from freedompay_async._exceptions import PoolTimeout as _PoolTimeout
from freedompay_async._exceptions import ReadTimeout as _ReadTimeout
from freedompay_async._models import InvoicePayment

if TYPE_CHECKING:
    from random import Random

    from freedompay_async._config import PollPolicy, RetryPolicy

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "Decision",
    "Outcome",
    "OutcomeName",
    "RetryAction",
    "RetryBudget",
    "RetryEvent",
    "Verb",
    "backoff",
    "classify",
    "decide",
    "poll_delay",
    "retry_after_seconds",
]


class Outcome(enum.Enum):
    """What one attempt's result means for the money and for a resend."""

    NOT_SENT = "not_sent"
    REFUSED = "refused"
    AMBIGUOUS = "ambiguous"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    LOCAL = "local"
    PENDING = "pending"
    SETTLED = "settled"

    # Members are singletons: hashing by identity keeps table lookups in C on every attempt.
    __hash__ = object.__hash__


#: `RetryEvent.outcome`: the value of an `Outcome`.
OutcomeName: TypeAlias = Literal[
    "not_sent", "refused", "ambiguous", "transient", "permanent", "local", "pending", "settled"
]
#: `RetryEvent.action`: what the call does after the attempt.
RetryAction: TypeAlias = Literal["resend", "reconcile", "giveup"]


class Verb(enum.Enum):
    """What the attempt loop does next."""

    RETURN = "return"
    RAISE = "raise"
    RESEND = "resend"
    RECONCILE = "reconcile"
    POLL = "poll"


@attrs.frozen(kw_only=True)
class Decision:
    """
    The attempt loop's next step.

    Attributes:
        verb: What to do.
        delay: Seconds to sleep first (resend and reconcile).
        reason: Why, in a few words, for logs and hooks.
    """

    verb: Verb
    delay: float = 0.0
    reason: str = ""


@attrs.frozen(kw_only=True)
class RetryEvent:
    """
    What an `on_retry` or `on_giveup` hook receives.

    Attributes:
        operation: `init`, `pay`, `status` or `info`.
        attempt: Requests sent so far in this call.
        delay: Seconds the client sleeps before the next step (0 on give-up).
        outcome: The attempt's class (`not_sent`, `refused`, `ambiguous`, `transient`, ...).
        action: `resend`, `reconcile` or `giveup`.
        cause: The error that triggered the step.
        context: Non-secret identifiers of the call (`customer`, `order_id`, `invoice_id`).
    """

    operation: str
    attempt: int
    delay: float
    outcome: OutcomeName
    action: RetryAction
    cause: FreedomPayError
    context: dict[str, str]


# Exception class -> outcome, most specific first (the first isinstance match wins).
_EXCEPTION_OUTCOMES: tuple[tuple[type[FreedomPayError], Outcome], ...] = (
    (CircuitOpenError, Outcome.LOCAL),
    (ClientClosedError, Outcome.LOCAL),
    (ConfigurationError, Outcome.LOCAL),
    (_PoolTimeout, Outcome.NOT_SENT),
    (_ConnectTimeout, Outcome.NOT_SENT),
    (ConnectError, Outcome.NOT_SENT),
    (_ReadTimeout, Outcome.AMBIGUOUS),
    # A timeout of unknown phase maps to the unsafe side.
    (RequestTimeout, Outcome.AMBIGUOUS),
    (ConnectionLost, Outcome.AMBIGUOUS),
    (DecodeError, Outcome.AMBIGUOUS),
    (SignatureError, Outcome.PERMANENT),
)

# HTTP status -> outcome for non-2xx replies; another 5xx is AMBIGUOUS, anything else PERMANENT.
HTTP_STATUS_OUTCOMES: dict[int, Outcome] = {
    429: Outcome.REFUSED,
    503: Outcome.REFUSED,
    500: Outcome.AMBIGUOUS,
    502: Outcome.AMBIGUOUS,
    504: Outcome.AMBIGUOUS,
}

#: Gateway error codes that may not recur on a repeated request ("internal service error").
TRANSIENT_ERROR_CODES: frozenset[int] = frozenset({1000})

# Outcomes a resend may follow, per kind of operation. Pay is absent from AMBIGUOUS/TRANSIENT
# on purpose: those go to reconcile.
_RESENDABLE_READ = frozenset(
    {Outcome.NOT_SENT, Outcome.REFUSED, Outcome.AMBIGUOUS, Outcome.TRANSIENT}
)
_RESENDABLE_PAY = frozenset({Outcome.NOT_SENT, Outcome.REFUSED})
_RECONCILE_PAY = frozenset({Outcome.AMBIGUOUS, Outcome.TRANSIENT})

#: Outcomes that count as a failure for the circuit breaker (the gateway did not serve us).
BREAKER_FAILURES = frozenset(
    {Outcome.NOT_SENT, Outcome.REFUSED, Outcome.AMBIGUOUS, Outcome.TRANSIENT}
)


def classify(result: object, *, moves_money: bool) -> Outcome:
    """
    Classify one attempt's result.

    Args:
        result: The decoded model, or the `FreedomPayError` the attempt raised.
        moves_money: True for pay: a non-terminal payment is then `PENDING`, not `SETTLED`.

    Returns:
        The attempt's outcome class.
    """
    if isinstance(result, GatewayError):
        if result.error_code in TRANSIENT_ERROR_CODES:
            return Outcome.TRANSIENT
        return Outcome.PERMANENT
    if isinstance(result, HTTPStatusError):
        code = result.status_code or 0
        listed = HTTP_STATUS_OUTCOMES.get(code)
        if listed is not None:
            return listed
        # An unlisted 5xx, 1xx or 3xx may come after the gateway acted: the unsafe side, like
        # the unknown. Only another 4xx (the gateway refused at the HTTP layer) is permanent.
        return Outcome.PERMANENT if 400 <= code < 500 else Outcome.AMBIGUOUS  # noqa: PLR2004
    if isinstance(result, FreedomPayError):
        for cls, outcome in _EXCEPTION_OUTCOMES:
            if isinstance(result, cls):
                return outcome
        return Outcome.PERMANENT
    if moves_money and isinstance(result, InvoicePayment) and not result.is_terminal:
        return Outcome.PENDING
    return Outcome.SETTLED


def backoff(retry: int, policy: RetryPolicy, rng: Random) -> float:
    """
    Return the full-jitter delay before retry number *retry*.

    `delay = uniform(0, min(backoff_max, backoff_base * 2 ** (retry - 1)))`, `retry = 1` for the
    first resend. Full jitter spreads the retries of a batch so they do not arrive in lockstep.

    Args:
        retry: 1 for the first resend, 2 for the second, ...
        policy: The retry policy.
        rng: The random source (seeded in tests).

    Returns:
        Seconds to wait, in `[0, min(backoff_max, backoff_base * 2 ** (retry - 1))]`.
    """
    exponent = min(max(retry - 1, 0), 62)
    ceiling = min(policy.backoff_max, policy.backoff_base * 2.0**exponent)
    return rng.uniform(0.0, ceiling)


def poll_delay(poll: int, policy: PollPolicy, rng: Random) -> float:
    """
    Return the wait before poll number *poll* (0 for the first).

    `min(max_interval, interval * factor ** poll) * uniform(1.0, 1.25)`: never earlier than
    planned, and polls of a batch drift apart instead of hitting the gateway together.

    Args:
        poll: 0 for the first poll.
        policy: The poll policy.
        rng: The random source.

    Returns:
        Seconds to wait.
    """
    try:
        planned = policy.interval * policy.factor ** max(poll, 0)
    except OverflowError:
        planned = policy.max_interval
    return min(policy.max_interval, planned) * rng.uniform(1.0, 1.25)


def retry_after_seconds(value: str | None, *, now_wall: float) -> float | None:
    """
    Read a `Retry-After` header: delay-seconds or an HTTP-date.

    Args:
        value: The raw header value, or None.
        now_wall: The current wall-clock time (epoch seconds), for the HTTP-date form.

    Returns:
        Seconds to wait (>= 0), or None when absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_wall)


def decide(
    outcome: Outcome,
    *,
    moves_money: bool,
    attempt: int,
    policy: RetryPolicy,
    now: float,
    deadline: float,
    rng: Random,
    retry_after: float | None = None,
    budget_ok: bool = True,
) -> Decision:
    """
    Decide the next step after an attempt (see the module docstring for the rules).

    Args:
        outcome: The attempt's class, from `classify`.
        moves_money: True for pay.
        attempt: Requests sent so far in this call (1 after the first).
        policy: The retry policy.
        now: The current monotonic time.
        deadline: The call's deadline on the same clock.
        rng: The random source for jitter.
        retry_after: A `Retry-After` hint in seconds, if the reply carried one.
        budget_ok: Whether the client's retry budget can pay for a resend.

    Returns:
        The decision.
    """
    if outcome is Outcome.SETTLED:
        return Decision(verb=Verb.RETURN, reason="settled")
    if outcome is Outcome.PENDING:
        return Decision(verb=Verb.POLL, reason="pending")
    remaining = deadline - now
    if moves_money and outcome in _RECONCILE_PAY:
        grace = min(policy.reconcile_grace, max(remaining, 0.0))
        return Decision(verb=Verb.RECONCILE, delay=grace, reason="pay outcome unknown")
    resendable = _RESENDABLE_PAY if moves_money else _RESENDABLE_READ
    if outcome not in resendable:
        return Decision(verb=Verb.RAISE, reason=outcome.value)
    if attempt >= policy.attempts:
        return Decision(verb=Verb.RAISE, reason="attempts exhausted")
    if not budget_ok:
        return Decision(verb=Verb.RAISE, reason="retry budget empty")
    delay = backoff(attempt, policy, rng)
    if retry_after is not None and not math.isnan(retry_after):
        hint = min(max(retry_after, 0.0), policy.retry_after_max)
        if hint >= remaining:
            return Decision(verb=Verb.RAISE, reason="Retry-After beyond the deadline")
        delay = max(delay, hint)
    if delay >= remaining:
        return Decision(verb=Verb.RAISE, reason="deadline")
    return Decision(verb=Verb.RESEND, delay=delay, reason=outcome.value)
