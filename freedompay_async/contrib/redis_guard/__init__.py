"""
A duplicate-pay guard and a rate limiter shared through Redis by every worker of a merchant.

`RedisPayGuard` implements the client's `PayGuard` protocol for many processes at once:

- **claim** is one Lua script: a settled customer is refused; a customer whose claim key exists
  is refused (another worker is paying it); otherwise `SET claim token PX ttl` takes it. Two
  claimers can never both win, whatever their number or host.
- While a pay runs, a heartbeat renews the claim every `heartbeat` seconds, for at most
  `max_hold`. A worker that dies stops renewing and its claim expires `claim_ttl` seconds later.
- **finish** records the pay's `PayOutcome.state` for `remember` seconds (`paid`, `failed`,
  `expired` are refused for good; `pending` and `ambiguous` are kept as doubts), or, for `error`
  (nothing is known to be charged), releases the claim and forgets a fresh one.
- A customer whose earlier claim ended without a terminal state (a crashed worker, a `pending` or
  `ambiguous` outcome) is **never paid blindly**: the next claimer holds the claim and calls the
  `settle` hook, which reads the invoice's status, and `freedompay_async.settlement.settle()`
  decides what that read proves — the same rule the client's reconcile and the CLI's resume use.
  A terminal or moving status is recorded and refused. A status of `new` is paid only when
  `settle()` says it proves the earlier pay never landed (`settle_policy`; by default it never
  does, and the customer stays refused). Without a hook such a customer is refused, and stays
  refused until a hook settles it or `forget()` is called after a manual check.
- When a pay ends in doubt (`pending`, `ambiguous`), `finish` also records the Redis time, so a
  later reclaim knows how long ago that pay could last have been written. A crashed worker's pay
  was last written at least `claim_ttl - heartbeat` before its claim expired (it renewed the
  claim while paying); without heartbeats, that bound is 0.

Keys live under `{namespace}:{merchant_id}:`; the two keys of a customer share a Redis Cluster
hash tag, so the scripts also run on a cluster.

`RedisRateLimiter` is a token bucket in one Redis hash (`rate` tokens per second, at most `burst`
saved up), updated by a Lua script that reads Redis `TIME`, so the workers' own clocks never
matter. A request that finds no token reserves the next one and sleeps until it is due: waiters
are served in order and Redis is asked once per request.
"""

from __future__ import annotations

from freedompay_async.contrib.redis_guard._common import (
    ClaimKind,
    GuardRecord,
    SettleHook,
    default_owner,
    settle_by_status,
    state_of_status,
)
from freedompay_async.contrib.redis_guard._guard import RedisPayGuard
from freedompay_async.contrib.redis_guard._limiter import RedisRateLimiter
from freedompay_async.contrib.redis_guard._scripts import DOUBT_STATES
from freedompay_async.facts import TERMINAL_STATES

__all__ = [
    "DOUBT_STATES",
    "TERMINAL_STATES",
    "ClaimKind",
    "GuardRecord",
    "RedisPayGuard",
    "RedisRateLimiter",
    "SettleHook",
    "default_owner",
    "settle_by_status",
    "state_of_status",
]
