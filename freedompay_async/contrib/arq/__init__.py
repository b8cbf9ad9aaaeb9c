"""
Pay invoices from an arq job queue: many worker processes, one duplicate guard, one rate limit.

Run as many workers as you need, on as many hosts, all pointing at the same Redis:

```console
$ export FREEDOMPAY_MERCHANT_ID=... FREEDOMPAY_SECRET_KEY=... FREEDOMPAY_REDIS_URL=redis://...
$ arq freedompay_async.contrib.arq.WorkerSettings
```

and queue a CSV (`customer,user_id,card_token[,key]`, header row) with
`freedompay-async enqueue INPUT.csv --redis URL` or `enqueue_batch()`.

Each worker process creates one `FreedomPayClient` at startup (closed at shutdown) with a
`RedisPayGuard` and a `RedisRateLimiter`, so every worker of the merchant shares one guard and one
request rate. The job `pay_invoice_job` pays one invoice through `client.pay_one` and stores a
JSON outcome (no card token; the gateway's masked PAN only) in the Redis hash of `OutcomeStore`,
one field per customer.

A job re-run after its worker died finds the dead worker's claim; once the claim expires, the
guard's settle hook asks `invoice_status(customer=...)` and `settlement.settle()` decides: a pay
that landed before the crash is recorded, not repeated. An invoice still `new` is paid only when
`FREEDOMPAY_NEW_PROVES_AFTER` is set and that many seconds have passed since the dead worker's
last possible write; by default it is stored as `ambiguous` for a manual check. Jobs have
deterministic ids (`freedompay:pay:<customer>`), so arq also drops a duplicate while the first is
queued or running.

Configuration comes from the environment, read when a worker starts (never at import):
`WorkerSettings` when arq loads it, the rest in `PayWorkerConfig.from_env` at each worker's
startup:

| variable | meaning | default |
|---|---|---|
| `FREEDOMPAY_MERCHANT_ID`, `FREEDOMPAY_SECRET_KEY` | credentials | required |
| `FREEDOMPAY_BASE_URL` | API host | `https://api.freedompay.kz` |
| `FREEDOMPAY_REDIS_URL` (or `REDIS_URL`) | Redis | `redis://127.0.0.1:6379/0` |
| `FREEDOMPAY_RATE`, `FREEDOMPAY_BURST` | requests/s of all workers (0: none), burst | 10, 1 |
| `FREEDOMPAY_QUEUE` | arq queue name | `freedompay:queue` |
| `FREEDOMPAY_MAX_JOBS` | jobs at once per worker | 32 |
| `FREEDOMPAY_JOB_TIMEOUT` | seconds one job may run | 900 |
| `FREEDOMPAY_CLAIM_TTL` | seconds a dead worker's claim blocks its customer | 30 |
| `FREEDOMPAY_NEW_PROVES_AFTER` | seconds after which `new` proves a pay never landed | unset |
| `FREEDOMPAY_OUTAGE_TOLERANCE` | seconds a job waits out a gateway outage (0: none) | 300 (1) |
| `FREEDOMPAY_NAMESPACE` | prefix of every guard, limiter and outcome key | `freedompay` |

(1) Or half of `FREEDOMPAY_JOB_TIMEOUT` when that is shorter; it must stay below the job timeout.
While the gateway refuses a pay or cannot be reached (503, 429, no connection, the breaker open),
the job tries it again every second; nothing was sent, so nothing can be paid twice.

Card tokens travel inside arq's job payload in Redis (as with any job argument) until the job
ends: protect Redis like the card data it holds. They are wrapped in `MaskedToken`, so arq's log
line for a started job shows only the last four characters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from freedompay_async.contrib.arq._command import add_enqueue_command, main, run_enqueue
from freedompay_async.contrib.arq._config import (
    CONFIG_KEY,
    DEFAULT_QUEUE,
    JOB_ID_PREFIX,
    JOB_NAME,
    REDIS_RETRY_DELAY,
    RUNTIME_KEY,
    PayWorkerConfig,
)
from freedompay_async.contrib.arq._enqueue import (
    EnqueueReport,
    MaskedToken,
    enqueue_batch,
    job_id_for,
    wait_for_outcomes,
)
from freedompay_async.contrib.arq._runtime import PayRuntime
from freedompay_async.contrib.arq._store import OutcomeStore, outcome_to_dict
from freedompay_async.contrib.arq._worker import (
    pay_invoice_job,
    settings_from_env,
    shutdown,
    startup,
    worker_settings,
)

if TYPE_CHECKING:
    from freedompay_async.contrib.arq._worker import WorkerSettings

__all__ = [
    "CONFIG_KEY",
    "DEFAULT_QUEUE",
    "JOB_ID_PREFIX",
    "JOB_NAME",
    "REDIS_RETRY_DELAY",
    "RUNTIME_KEY",
    "EnqueueReport",
    "MaskedToken",
    "OutcomeStore",
    "PayRuntime",
    "PayWorkerConfig",
    "WorkerSettings",
    "add_enqueue_command",
    "enqueue_batch",
    "job_id_for",
    "main",
    "outcome_to_dict",
    "pay_invoice_job",
    "run_enqueue",
    "settings_from_env",
    "shutdown",
    "startup",
    "wait_for_outcomes",
    "worker_settings",
]


def __getattr__(name: str) -> object:
    """
    Build `WorkerSettings` from the environment each time it is looked up.

    Args:
        name: The attribute.

    Returns:
        `settings_from_env()` for `WorkerSettings`.

    Raises:
        AttributeError: Any other name.
    """
    if name == "WorkerSettings":
        return settings_from_env()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
