"""
The batch engine: pay many invoices with a fixed number of workers and stream the outcomes.

Theory of operation
-------------------

`run_batch` is an async generator that owns three kinds of task, created when iteration starts:

```
requests ──► feeder ──inbox──► worker x concurrency ──results──► run_batch ──► caller
   (lazy)      ▲  (reads one item per free room)    (pay_one)        │ yields in completion order
               └──────────────── room (a semaphore of `concurrency`) ◄┘ released as each is taken
```

1. **Lazy input.** One feeder task reads `requests` (sync or async iterable), one item at a time,
   and only after it has reserved a *room*: a slot that stays taken until the caller has received
   that item's outcome. At most `concurrency` items are ever read but not yet yielded, so a
   generator over millions of rows runs in flat memory. Only the feeder touches the iterator, so
   an async generator is always resumed from the same task.
2. **Bounded workers.** `concurrency` long-lived worker tasks take items from the inbox and await
   `pay_one` for each; no task is created per item. Each outcome goes to the results queue, which
   the rooms bound to `concurrency` outcomes: a slow consumer stops the workers, then the feeder
   (back-pressure), and never grows a buffer.
3. **One outcome per input.** Outcomes are yielded in completion order; `outcome.request`
   correlates them. A `FreedomPayError` that escapes `pay_one` becomes `outcome.error`. Any other
   exception from `pay_one` is a bug: the batch stops as a cancellation would and the exception
   propagates unwrapped. An exception from the input iterator stops the reading; the items
   already taken finish and are yielded, then the exception propagates. A `CancelledError`
   raised by `pay_one` or the input without the batch being cancelled is treated the same way,
   so it can never leave the batch waiting for an outcome that will not come.
4. **Progress.** Before each yield, `on_progress` (if given) receives a frozen `BatchProgress`.
   It runs in the caller's task, so its exceptions propagate like the caller's own. With a
   `GatewayHold` (`_hold`), each item is paid through it: pays never sent while the gateway is
   down wait for it, and every change of that wait (down, up, an item held) also reaches
   `on_progress`, as a `BatchProgress` without a new outcome, so a caller sees the wait.
5. **Cancellation safety.** Whatever ends the iteration (exhaustion, `break` inside
   `contextlib.aclosing`, `aclose()`, a cancelled caller, an exception), the `finally` block
   cancels the feeder and every worker and awaits them, so no task outlives the batch. No
   `TaskGroup` spans a `yield`: a cancel scope crossing a yield of an async generator misbehaves
   (PEP 789). A request written before the stop may still have charged; the client logs those,
   and outcomes that completed but were not yet yielded are logged here (customer only).

`BatchSummary` and `SummaryBuilder` (in `_summary`, re-exported here) condense outcomes into
counts, retries, throughput and latency percentiles.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Final

from freedompay_async._exceptions import ConfigurationError, FreedomPayError
from freedompay_async._models import BatchProgress, PayOutcome
from freedompay_async._summary import STATES, BatchSummary, SummaryBuilder
from freedompay_async.facts import is_integer

if TYPE_CHECKING:
    from collections.abc import (
        AsyncGenerator,
        AsyncIterable,
        Awaitable,
        Callable,
        Iterable,
        Iterator,
    )

    from freedompay_async._hold import GatewayHold
    from freedompay_async._models import PayRequest

__all__ = ["STATES", "BatchSummary", "SummaryBuilder", "run_batch"]

logger = logging.getLogger("freedompay_async")

#: Prefix of the names of the tasks a batch owns (tests look for leftovers by it).
TASK_NAME_PREFIX: Final = "freedompay-batch"

#: Rounds of waiting for cancelled tasks when the caller is itself cancelled again meanwhile.
_STOP_ROUNDS: Final = 8


class _End:
    """The feeder read the whole input."""

    __slots__ = ()


class _InputFailed:
    """The input iterator raised; the exception is raised once the items taken are yielded."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Tick:
    """The gateway hold changed: report progress without an outcome."""

    __slots__ = ()


class _Crashed:
    """`pay_one` raised something other than a `FreedomPayError`: a bug that stops the batch."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _cancelled_from_outside() -> bool:
    """Whether the running task was cancelled (rather than handed a stray `CancelledError`)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


_END: Final = _End()
_TICK: Final = _Tick()

_Message = PayOutcome | _End | _InputFailed | _Crashed | _Tick


class _Counters:
    """Mutable counters shared by the feeder, the workers and the generator."""

    __slots__ = ("in_flight", "stopping", "submitted", "ticked")

    def __init__(self) -> None:
        self.submitted = 0
        self.in_flight = 0
        self.stopping = False
        self.ticked = False


async def _feed(
    requests: Iterable[PayRequest] | AsyncIterable[PayRequest],
    *,
    room: asyncio.Semaphore,
    inbox: asyncio.Queue[PayRequest],
    results: asyncio.Queue[_Message],
    counters: _Counters,
) -> None:
    """Read the input one item per free room; end with `_END` or `_InputFailed`."""
    try:
        if hasattr(requests, "__aiter__"):
            source = aiter(requests)  # type: ignore[arg-type]
            while not counters.stopping:
                await room.acquire()
                try:
                    item = await anext(source)
                except StopAsyncIteration:
                    break
                counters.submitted += 1
                inbox.put_nowait(item)
        else:
            items: Iterator[PayRequest] = iter(requests)
            while not counters.stopping:
                await room.acquire()
                try:
                    item = next(items)
                except StopIteration:
                    break
                counters.submitted += 1
                inbox.put_nowait(item)
    except asyncio.CancelledError as exc:
        if _cancelled_from_outside():
            raise
        results.put_nowait(_InputFailed(exc))  # a stray cancellation must not hang the batch
        return
    except Exception as exc:  # noqa: BLE001 - the input's failure is reported to the caller
        results.put_nowait(_InputFailed(exc))
        return
    results.put_nowait(_END)


async def _work(
    pay_one: Callable[[PayRequest], Awaitable[PayOutcome]],
    *,
    inbox: asyncio.Queue[PayRequest],
    results: asyncio.Queue[_Message],
    counters: _Counters,
    monotonic: Callable[[], float],
) -> None:
    """Pay items from the inbox until the batch cancels this worker."""
    while True:
        request = await inbox.get()
        counters.in_flight += 1
        start = monotonic()
        try:
            outcome = await pay_one(request)
        except FreedomPayError as exc:
            outcome = PayOutcome(
                request=request, error=exc, attempts=exc.attempts, elapsed=monotonic() - start
            )
        except asyncio.CancelledError as exc:
            if _cancelled_from_outside():
                raise
            # pay_one leaked a CancelledError of its own: a bug, and one that must not leave
            # the batch waiting forever for this item's outcome.
            counters.in_flight -= 1
            counters.stopping = True
            results.put_nowait(_Crashed(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug in pay_one stops the batch, unwrapped
            counters.in_flight -= 1
            counters.stopping = True
            results.put_nowait(_Crashed(exc))
            return
        counters.in_flight -= 1
        results.put_nowait(outcome)
        if _cancelled_from_outside():
            # Something beneath pay_one swallowed the batch's cancellation: keep the outcome,
            # and stop as asked instead of waiting on the inbox forever.
            raise asyncio.CancelledError


def _start(
    requests: Iterable[PayRequest] | AsyncIterable[PayRequest],
    pay_one: Callable[[PayRequest], Awaitable[PayOutcome]],
    *,
    concurrency: int,
    room: asyncio.Semaphore,
    inbox: asyncio.Queue[PayRequest],
    results: asyncio.Queue[_Message],
    counters: _Counters,
    monotonic: Callable[[], float],
) -> list[asyncio.Task[None]]:
    """Create the feeder and the workers."""
    tasks = [
        asyncio.create_task(
            _feed(requests, room=room, inbox=inbox, results=results, counters=counters),
            name=f"{TASK_NAME_PREFIX}-feeder",
        )
    ]
    tasks.extend(
        asyncio.create_task(
            _work(pay_one, inbox=inbox, results=results, counters=counters, monotonic=monotonic),
            name=f"{TASK_NAME_PREFIX}-worker-{number}",
        )
        for number in range(concurrency)
    )
    return tasks


def _holding(
    pay_one: Callable[[PayRequest], Awaitable[PayOutcome]],
    hold: GatewayHold | None,
    results: asyncio.Queue[_Message],
    counters: _Counters,
) -> Callable[[PayRequest], Awaitable[PayOutcome]]:
    """Pay through *hold*; its changes become one pending progress tick at a time."""
    if hold is None:
        return pay_one

    def tick() -> None:
        if not counters.ticked and not counters.stopping:
            counters.ticked = True
            results.put_nowait(_TICK)

    hold.on_change = tick
    return functools.partial(hold.pay, pay_one)


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel *tasks* and wait until every one has finished, even if we are cancelled meanwhile."""
    for task in tasks:
        task.cancel()
    pending = {task for task in tasks if not task.done()}
    cancelled = False
    for _ in range(_STOP_ROUNDS):
        if not pending:
            break
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def _log_undelivered(results: asyncio.Queue[_Message]) -> None:
    """Log outcomes that completed but were never yielded because the batch stopped."""
    while not results.empty():
        message = results.get_nowait()
        if isinstance(message, PayOutcome):
            logger.warning(
                "batch stopped before yielding an outcome: pay ended as %s customer=%s; "
                "check invoice_status before paying again",
                message.state,
                message.request.customer,
            )


async def run_batch(
    requests: Iterable[PayRequest] | AsyncIterable[PayRequest],
    *,
    pay_one: Callable[[PayRequest], Awaitable[PayOutcome]],
    concurrency: int,
    on_progress: Callable[[BatchProgress], object] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    hold: GatewayHold | None = None,
) -> AsyncGenerator[PayOutcome, None]:
    """
    Pay *requests* with *concurrency* workers, yielding each `PayOutcome` as it completes.

    Args:
        requests: `PayRequest`s, as a sync or async iterable; read lazily, one item per free
            worker slot.
        pay_one: Pays one request and describes the result; a `FreedomPayError` it raises
            becomes the outcome's error, any other exception stops the batch.
        concurrency: Worker tasks, and the most items read but not yet yielded.
        on_progress: Called with a `BatchProgress` before each outcome is yielded, and when the
            batch starts or stops waiting for the gateway.
        monotonic: The clock for elapsed times.
        hold: Holds pays never sent while the gateway is down (see `_hold`); None pays each
            item once with `pay_one`.

    Yields:
        One outcome per request, in completion order.

    Raises:
        ConfigurationError: *concurrency* is not a positive integer.
        Exception: Whatever `pay_one` (other than a `FreedomPayError`), the input iterator or
            `on_progress` raised, unwrapped.
    """
    if not is_integer(concurrency) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    counters = _Counters()
    room = asyncio.Semaphore(concurrency)
    inbox: asyncio.Queue[PayRequest] = asyncio.Queue()
    # Unbounded as a queue, bounded by the rooms: at most `concurrency` outcomes plus markers.
    results: asyncio.Queue[_Message] = asyncio.Queue()
    by_state = dict.fromkeys(STATES, 0)
    start = monotonic()
    done = 0
    pay_one = _holding(pay_one, hold, results, counters)

    def progress() -> None:
        if on_progress is None:
            return
        on_progress(
            BatchProgress(
                submitted=counters.submitted,
                in_flight=counters.in_flight,
                done=done,
                by_state=dict(by_state),
                elapsed=monotonic() - start,
                held=hold.held if hold is not None else 0,
                waiting_for_gateway=hold is not None and hold.waiting,
            )
        )

    tasks: list[asyncio.Task[None]] = []
    try:
        tasks.extend(
            _start(
                requests,
                pay_one,
                concurrency=concurrency,
                room=room,
                inbox=inbox,
                results=results,
                counters=counters,
                monotonic=monotonic,
            )
        )
        input_error: BaseException | None = None
        input_done = False
        while not input_done or done < counters.submitted:
            message = await results.get()
            if isinstance(message, PayOutcome):
                room.release()
                done += 1
                state = message.state
                by_state[state] = by_state.get(state, 0) + 1
                progress()
                yield message
            elif isinstance(message, _Tick):
                counters.ticked = False
                progress()
            elif isinstance(message, _Crashed):
                raise message.error
            elif isinstance(message, _InputFailed):
                input_done = True
                input_error = message.error
            else:
                input_done = True
        if input_error is not None:
            raise input_error
    finally:
        counters.stopping = True
        await _stop(tasks)
        _log_undelivered(results)
