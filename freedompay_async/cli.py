"""
The `freedompay-async` command line (also `python -m freedompay_async`), built on the public API.

Commands:

- `demo`: start the emulator in this process, create invoices with a realistic mix of fates and
  injected faults, pay them with `pay_invoices` behind a progress bar, then print the summary and
  the emulator's count of invoices charged twice (which must be 0; the exit status says so).
- `pay-batch INPUT.csv --out OUT.jsonl`: pay one invoice per CSV row (`customer,user_id,
  card_token[,key]` with a header row) and append one JSON line per outcome. `--resume` continues
  an interrupted run: rows with a terminal outcome are skipped, every other row is settled by
  asking its status first, and only invoices still `new` are paid, so a kill and a restart never
  pay twice.
- `status`: ask one invoice's current status.
- `emulate`: serve the emulator on loopback until SIGINT/SIGTERM, for manual tests; the first
  line of stdout is JSON with its base URL and credentials.

Secrets come from the environment (`FREEDOMPAY_SECRET_KEY` unless `--secret-key-env` names
another variable), never from the command line. Progress bars and tables need `rich` (the `cli`
extra); `status` and `emulate` print JSON and work without it.

Exit status: 0 success (every invoice paid); 1 some invoice not paid, or an invoice charged twice
in the demo; 2 a usage or configuration error; 128 + the signal number when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import json
import logging
import os
import random
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import attrs

from freedompay_async import (
    BatchSummary,
    ConfigurationError,
    FreedomPayClient,
    FreedomPayError,
    GatewayError,
    InvoicePayment,
    InvoiceStatus,
    PayOutcome,
    PayRequest,
    PollPolicy,
    RetryPolicy,
    SummaryBuilder,
    Timeouts,
    __version__,
)
from freedompay_async.contrib import add_enqueue_command, run_enqueue

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence

    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.table import Table

    from freedompay_async import BatchProgress
    from freedompay_async.testing import Fate, Fault, FreedomPayEmulator

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_NOT_PAID: Final = 1
EXIT_USAGE: Final = 2

SECRET_ENV: Final = "FREEDOMPAY_SECRET_KEY"  # noqa: S105 - a variable name, not a secret
MERCHANT_ENV: Final = "FREEDOMPAY_MERCHANT_ID"
BASE_URL_ENV: Final = "FREEDOMPAY_BASE_URL"

STATES: Final = ("paid", "failed", "expired", "pending", "ambiguous", "error")
TERMINAL_STATES: Final = frozenset({"paid", "failed", "expired"})
_STATE_STYLES: Final = {
    "paid": "green",
    "failed": "red",
    "expired": "yellow",
    "pending": "cyan",
    "ambiguous": "magenta",
    "error": "red",
}
_REQUIRED_COLUMNS: Final = ("customer", "user_id", "card_token")
_PAN_DIGITS_SHOWN: Final = (6, 4)
_MIN_PAN_DIGITS: Final = 12

logger = logging.getLogger("freedompay_async.cli")


class _UsageError(Exception):
    """A problem with the command line or the environment; reported with exit status 2."""


# -- rich, loaded only when a command draws ------------------------------------------------


def _require_rich() -> None:
    """
    Check that `rich` can be imported.

    Raises:
        _UsageError: It is not installed.
    """
    try:
        import rich  # noqa: F401, PLC0415 - an optional dependency, loaded by the commands that draw
    except ImportError as exc:
        raise _UsageError(
            "this command draws progress bars and tables with 'rich', which is not installed; "
            "install it with: pip install 'freedompay-async[cli]'"
        ) from exc


def _consoles() -> tuple[Console, Console]:
    """Return a console for stdout (results) and one for stderr (progress)."""
    from rich.console import Console  # noqa: PLC0415 - optional dependency

    return Console(), Console(stderr=True)


def _progress(console: Console, description: str, total: int | None) -> tuple[Progress, TaskID]:
    """Build a progress bar that shows the outcomes per state as they come."""
    from rich.progress import (  # noqa: PLC0415 - optional dependency
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[states]}"),
        console=console,
    )
    task = progress.add_task(description, total=total, states="")
    return progress, task


def _say(console: Console, text: str) -> None:
    """Print a message as is: no markup, no highlighting, never wrapped (one grep-able line)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _states_text(by_state: dict[str, int]) -> str:
    """Format per-state counts for the progress bar, non-zero states only."""
    return " ".join(
        f"[{_STATE_STYLES[state]}]{state} {by_state[state]}[/]"
        for state in STATES
        if by_state.get(state)
    )


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def _outcome_table(title: str, columns: dict[str, dict[str, int]]) -> Table:
    """Build a table of counts per state, one column per source of outcomes."""
    from rich.table import Table  # noqa: PLC0415 - optional dependency

    table = Table(title=title, title_justify="left")
    table.add_column("state")
    for name in columns:
        table.add_column(name, justify="right")
    totals = {name: sum(counts.values()) for name, counts in columns.items()}
    grand = sum(totals.values())
    if len(columns) == 1:
        table.add_column("share", justify="right")
    for state in STATES:
        cells = [str(counts.get(state, 0)) for counts in columns.values()]
        if len(columns) == 1:
            count = next(iter(columns.values())).get(state, 0)
            cells.append(f"{100 * count / grand:.1f} %" if grand else "-")
        table.add_row(f"[{_STATE_STYLES[state]}]{state}[/]", *cells)
    total_cells = [str(total) for total in totals.values()]
    if len(columns) == 1:
        total_cells.append("100.0 %" if grand else "-")
    table.add_section()
    table.add_row("[bold]total[/]", *total_cells)
    return table


def _facts_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """Build a two-column table of named values."""
    from rich.table import Table  # noqa: PLC0415 - optional dependency

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for name, value in rows:
        table.add_row(name, value)
    return table


def _batch_facts(summary: BatchSummary) -> list[tuple[str, str]]:
    """The performance lines of a summary."""
    return [
        ("requests sent", str(summary.requests)),
        ("retries (requests beyond the first per invoice)", str(summary.retries)),
        ("throughput", f"{summary.throughput:,.0f} invoices/s"),
        ("latency p50", _seconds(summary.latency_p50)),
        ("latency p99", _seconds(summary.latency_p99)),
        ("latency max", _seconds(summary.latency_max)),
        ("elapsed", _seconds(summary.elapsed)),
    ]


# -- signals ---------------------------------------------------------------------------------


class _Interrupt:
    """
    Turns SIGINT/SIGTERM into a graceful stop, then a hard one.

    The first signal sets `signum` (the request sources stop handing out work) and arms a timer
    that cancels *task* after *grace* seconds; a second signal cancels it at once.
    """

    def __init__(self, grace: float) -> None:
        self.signum: int | None = None
        self._grace = grace
        self._task: asyncio.Task[Any] | None = None
        self._installed: list[int] = []

    @property
    def requested(self) -> bool:
        """Whether a stop was requested."""
        return self.signum is not None

    def install(self, task: asyncio.Task[Any]) -> None:
        """Route SIGINT and SIGTERM to this object while *task* runs."""
        self._task = task
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._on_signal, signum)
                self._installed.append(signum)

    def uninstall(self) -> None:
        """Restore the default handlers."""
        loop = asyncio.get_running_loop()
        for signum in self._installed:
            loop.remove_signal_handler(signum)
        self._installed.clear()

    def _on_signal(self, signum: int) -> None:
        task = self._task
        if task is None or task.done():
            return
        if self.signum is not None:
            task.cancel()
            return
        self.signum = signum
        name = signal.Signals(signum).name
        print(
            f"{name}: stopping; no new payments start"
            + (f", waiting up to {self._grace:g}s for those in flight" if self._grace else ""),
            file=sys.stderr,
        )
        asyncio.get_running_loop().call_later(self._grace, task.cancel)

    @property
    def exit_code(self) -> int:
        """128 + the signal number (143 for SIGTERM, 130 for SIGINT)."""
        return 128 + (self.signum or 0)


# -- the demo --------------------------------------------------------------------------------

#: The demo's mix of fates: (name, weight).
DEMO_FATES: Final = (
    ("paid", 82),
    ("declined", 6),
    ("pending_then_paid", 5),
    ("pending_then_failed", 1),
    ("expired", 3),
    ("gateway_error", 3),
)
#: The faults the demo injects, drawn uniformly.
DEMO_FAULTS: Final = ("429", "503", "500-after-commit", "drop-after-commit", "slow")

_DEMO_TIMEOUTS: Final = Timeouts(connect=2.0, read=1.0, pool=30.0)
_DEMO_RETRY: Final = RetryPolicy(
    attempts=5,
    deadline=20.0,
    backoff_base=0.05,
    backoff_max=0.5,
    retry_after_max=1.0,
    reconcile_grace=0.05,
)
_DEMO_POLL: Final = PollPolicy(interval=0.05, factor=1.5, max_interval=0.25, timeout=10.0)


def _demo_fate(name: str, rng: random.Random) -> Fate:
    from freedompay_async.testing import Fate  # noqa: PLC0415 - the emulator loads on demand

    if name == "paid":
        return Fate.paid()
    if name == "declined":
        return Fate.declined(rng.choice((51, 54, 61)), description="Insufficient funds")
    if name == "pending_then_paid":
        return Fate.pending_then_paid(polls=rng.randint(1, 3))
    if name == "pending_then_failed":
        return Fate.pending_then_failed(polls=rng.randint(1, 3))
    if name == "expired":
        return Fate.expired()
    return Fate.gateway_error(600, "General error")


def _demo_fault(name: str) -> Fault:
    from freedompay_async.testing import Fault  # noqa: PLC0415 - the emulator loads on demand

    if name == "429":
        return Fault.http_status(429, retry_after="1")
    if name == "503":
        return Fault.http_status(503)
    if name == "500-after-commit":
        return Fault.http_status(500, after_commit=True)
    if name == "drop-after-commit":
        return Fault.drop(after_commit=True)
    return Fault.delay(_DEMO_TIMEOUTS.read + 0.5, after_commit=True)


@attrs.frozen
class _DemoPlan:
    requests: list[PayRequest]
    fates: dict[str, int]
    faults: dict[str, int]


def _plan_demo(
    emulator: FreedomPayEmulator, count: int, fault_rate: float, rng: random.Random
) -> _DemoPlan:
    """Create *count* invoices with drawn fates, inject faults at *fault_rate* on their pays."""
    names = [name for name, _ in DEMO_FATES]
    weights = [weight for _, weight in DEMO_FATES]
    fates = dict.fromkeys(names, 0)
    faults = dict.fromkeys(DEMO_FAULTS, 0)
    requests: list[PayRequest] = []
    for number in range(count):
        name = rng.choices(names, weights)[0]
        fates[name] += 1
        customer = emulator.create_invoice(
            order_id=f"demo-{number + 1:06d}", fate=_demo_fate(name, rng)
        )
        if rng.random() < fault_rate:
            kind = rng.choice(DEMO_FAULTS)
            faults[kind] += 1
            emulator.inject(_demo_fault(kind), operation="pay", customer=customer)
        requests.append(
            PayRequest(
                customer=customer,
                user_id=f"user-{number + 1:06d}",
                card_token=f"card-{rng.getrandbits(64):016x}",
                key=number + 1,
            )
        )
    return _DemoPlan(requests=requests, fates=fates, faults=faults)


async def _demo(args: argparse.Namespace) -> int:
    from freedompay_async.testing import FreedomPayEmulator  # noqa: PLC0415 - loads aiohttp.web

    out, err = _consoles()
    rng = random.Random(args.seed)  # noqa: S311 - a reproducible demo, not cryptography
    async with FreedomPayEmulator(seed=args.seed, adversarial=True) as emulator:
        plan = _plan_demo(emulator, args.invoices, args.fault_rate, rng)
        _say(
            err,
            f"Emulator at {emulator.base_url} (adversarial: a second pay would charge again). "
            f"{args.invoices} invoices; faults injected on "
            f"{sum(plan.faults.values())} pays ({args.fault_rate:.0%}).",
        )
        builder = SummaryBuilder()
        progress, task = _progress(err, "Paying", args.invoices)

        def show(report: BatchProgress) -> None:
            progress.update(task, completed=report.done, states=_states_text(report.by_state))

        async with FreedomPayClient(
            emulator.merchant_id,
            emulator.secret_key,
            base_url=emulator.base_url,
            timeouts=_DEMO_TIMEOUTS,
            retry=_DEMO_RETRY,
            poll=_DEMO_POLL,
            max_concurrency=args.concurrency,
        ) as client:
            start = time.monotonic()
            with progress:
                async with contextlib.aclosing(
                    client.pay_invoices(
                        iter(plan.requests), concurrency=args.concurrency, on_progress=show
                    )
                ) as outcomes:
                    async for outcome in outcomes:
                        builder.add(outcome)
            summary = builder.build(time.monotonic() - start)
        stats = emulator.stats
        double = emulator.double_charged()
    out.print()
    out.print(_outcome_table("Outcomes", {"invoices": dict(summary.by_state)}))
    out.print(_facts_table("Batch", _batch_facts(summary)))
    scripted = ", ".join(f"{name} {n}" for name, n in plan.fates.items() if n)
    injected = ", ".join(f"{name} {n}" for name, n in plan.faults.items() if n)
    served = ", ".join(f"{name} {n}" for name, n in stats.by_operation.items() if n)
    gateway = [
        ("fates scripted", scripted),
        ("faults injected", injected or "none"),
        ("requests served", served),
        ("most requests in flight", f"{stats.max_in_flight} (concurrency {args.concurrency})"),
        ("pays committed", str(stats.committed_pays)),
        ("invoices charged twice", str(len(double))),
    ]
    out.print(_facts_table("Gateway (emulator)", gateway))
    if double:
        out.print(f"[bold red]{len(double)} invoice(s) were charged twice.[/]")
        return EXIT_NOT_PAID
    out.print("[bold green]No invoice was charged twice.[/]")
    return EXIT_OK


# -- pay-batch -------------------------------------------------------------------------------


@attrs.frozen
class _RowKey:
    """What a `PayRequest.key` holds for a CSV row: its line number and its own key, if any."""

    line: int
    key: str | None


@attrs.frozen
class _Malformed:
    line: int
    reason: str


def _count_rows(path: Path) -> int | None:
    """Count the data lines of a CSV file (an estimate for the progress bar), if it can."""
    try:
        with path.open(encoding="utf-8-sig", newline="", errors="replace") as handle:
            return max(sum(1 for line in handle if line.strip()) - 1, 0)
    except OSError:
        return None


class _CsvRows:
    """
    The rows of the input CSV, read lazily; the header is checked when the file is opened.

    Iterating yields one `PayRequest` per good row and one `_Malformed` per bad one.

    Raises:
        _UsageError: The file cannot be read or its header does not name the columns.
    """

    def __init__(self, path: Path) -> None:
        try:
            self._handle = path.open(encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise _UsageError(f"cannot read {path}: {exc.strerror}") from exc
        self._reader = csv.reader(self._handle, strict=True)
        try:
            header = next(self._reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            self.close()
            raise _UsageError(f"{path}:1: unreadable header: {exc}") from exc
        self._names = [name.strip().lower() for name in header or []]
        missing = [name for name in _REQUIRED_COLUMNS if name not in self._names]
        if missing or len(set(self._names)) != len(self._names):
            self.close()
            raise _UsageError(
                f"{path}:1: the header must name the columns customer, user_id, card_token "
                "(and optionally key), each once"
            )
        self._index = {
            name: self._names.index(name)
            for name in (*_REQUIRED_COLUMNS, "key")
            if name in self._names
        }

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __iter__(self) -> Iterator[PayRequest | _Malformed]:
        reader, names, index = self._reader, self._names, self._index
        line = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                yield _Malformed(line, f"unreadable CSV ({exc})")
                line = reader.line_num + 1
                continue
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                yield _Malformed(start, f"expected {len(names)} fields, got {len(row)}")
                continue
            values = {name: row[position].strip() for name, position in index.items()}
            empty = [name for name in _REQUIRED_COLUMNS if not values[name]]
            if empty:
                yield _Malformed(start, f"empty {', '.join(empty)}")
                continue
            yield PayRequest(
                customer=values["customer"],
                user_id=values["user_id"],
                card_token=values["card_token"],
                key=_RowKey(line=start, key=values.get("key") or None),
            )


def _mask_pan(pan: str | None) -> str | None:
    """Keep at most the first six and last four digits of a card number (defence in depth)."""
    if pan is None:
        return None
    digits = [position for position, char in enumerate(pan) if char.isdigit()]
    if len(digits) < _MIN_PAN_DIGITS:
        return pan
    first, last = _PAN_DIGITS_SHOWN
    hidden = set(digits[first : len(digits) - last])
    return "".join("X" if position in hidden else char for position, char in enumerate(pan))


def _error_record(error: FreedomPayError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    record: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, GatewayError):
        record["error_code"] = error.error_code
        record["error_description"] = error.error_description
    return record


def _outcome_record(outcome: PayOutcome, *, source: str) -> dict[str, Any]:
    """The JSON line for an outcome: no card token, only a masked PAN."""
    request = outcome.request
    row = request.key if isinstance(request.key, _RowKey) else None
    payment = outcome.payment
    return {
        "line": row.line if row else None,
        "key": row.key if row else None,
        "customer": request.customer,
        "user_id": request.user_id,
        "state": outcome.state,
        "source": source,
        "invoice_status": payment.invoice_status.value if payment else None,
        "invoice_id": payment.invoice_id if payment else None,
        "order_id": payment.order_id if payment else None,
        "amount": str(payment.amount) if payment and payment.amount is not None else None,
        "currency": payment.currency if payment else None,
        "card_pan": _mask_pan(payment.card_pan) if payment else None,
        "payment_error_code": payment.error_code if payment else None,
        "payment_error_description": payment.error_description if payment else None,
        "error": _error_record(outcome.error),
        "attempts": outcome.attempts,
        "elapsed": round(outcome.elapsed, 6),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    }


class _Journal:
    """The JSON-lines output, one complete line per outcome, flushed as it is written."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self.written = 0

    def write(self, outcome: PayOutcome, *, source: str) -> None:
        record = _outcome_record(outcome, source=source)
        self._handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._handle.flush()
        self.written += 1


def _read_journal(path: Path, err: Console) -> dict[str, str]:
    """Return the customers that already have a terminal outcome in *path*, with that state."""
    terminal: dict[str, str] = {}
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return terminal
    except OSError as exc:
        raise _UsageError(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
                customer, state = record["customer"], record["state"]
            except (ValueError, KeyError, TypeError):
                _say(err, f"{path}:{number}: ignored an unreadable line")
                continue
            if isinstance(customer, str) and state in TERMINAL_STATES:
                terminal.setdefault(customer, state)
    return terminal


def _open_journal(path: Path, *, resume: bool) -> TextIO:
    """Open OUT for appending; without --resume it must be new or empty."""
    if not resume and path.exists() and path.stat().st_size > 0:
        raise _UsageError(
            f"{path} already holds outcomes; pass --resume to continue that run, or choose "
            "another --out file"
        )
    try:
        handle = path.open("a+", encoding="utf-8")
    except OSError as exc:
        raise _UsageError(f"cannot write {path}: {exc.strerror}") from exc
    handle.seek(0, os.SEEK_END)
    if handle.tell() > 0:
        handle.seek(handle.tell() - 1)
        last = handle.read(1)
        handle.seek(0, os.SEEK_END)
        if last != "\n":
            handle.write("\n")  # a line cut short by a crash stays alone on its line
    return handle


class _Tally:
    """Counts for the pay-batch summary and the progress bar."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.paid_now = SummaryBuilder()
        self.by_status: dict[str, int] = dict.fromkeys(STATES, 0)
        self.earlier: dict[str, int] = dict.fromkeys(STATES, 0)
        self.malformed = 0
        self._shown: dict[str, int] = dict.fromkeys(STATES, 0)
        self._progress = progress
        self._task = task

    def _advance(self, state: str | None) -> None:
        if state is not None:
            self._shown[state] += 1
        self._progress.update(task_id=self._task, advance=1, states=_states_text(self._shown))

    def pay(self, outcome: PayOutcome) -> None:
        self.paid_now.add(outcome)
        self._advance(outcome.state)

    def settled(self, state: str) -> None:
        self.by_status[state] += 1
        self._advance(state)

    def skipped(self, state: str) -> None:
        self.earlier[state] += 1
        self._advance(state)

    def bad_row(self) -> None:
        self.malformed += 1
        self._advance(None)


def _good_rows(
    path: Path,
    rows: Iterator[PayRequest | _Malformed],
    *,
    err: Console,
    tally: _Tally,
    interrupt: _Interrupt,
    done: dict[str, str],
) -> Iterator[PayRequest]:
    """The CSV's payable rows: malformed ones reported, terminal ones skipped; stops on signal."""
    for row in rows:
        if interrupt.requested:
            return
        if isinstance(row, _Malformed):
            _say(err, f"{path}:{row.line}: skipped a malformed row: {row.reason}")
            tally.bad_row()
            continue
        earlier = done.get(row.customer)
        if earlier is not None:
            tally.skipped(earlier)
            continue
        yield row


async def _status_outcome(client: FreedomPayClient, request: PayRequest) -> PayOutcome:
    """Ask an invoice's status and describe it as an outcome (never raises a FreedomPayError)."""
    start = time.monotonic()
    try:
        payment = await client.invoice_status(customer=request.customer)
    except FreedomPayError as exc:
        return PayOutcome(
            request=request, error=exc, attempts=exc.attempts, elapsed=time.monotonic() - start
        )
    return PayOutcome(
        request=request, payment=payment, attempts=1, elapsed=time.monotonic() - start
    )


async def _settle_by_status(
    rows: Iterator[PayRequest],
    client: FreedomPayClient,
    *,
    limit: int,
    on_settled: Callable[[PayOutcome], None],
    interrupt: _Interrupt,
) -> AsyncGenerator[PayRequest, None]:
    """
    Ask the status of each row first; yield only the rows whose invoice is still `new`.

    At most *limit* status requests run at once. Rows settled by their status (paid, failed,
    expired, still processing, or a status that could not be read) go to *on_settled*.
    """
    pending: set[asyncio.Task[PayOutcome]] = set()
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < limit:
                row = next(rows, None)
                if row is None:
                    exhausted = True
                else:
                    pending.add(asyncio.create_task(_status_outcome(client, row)))
            if not pending:
                return
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                outcome = task.result()
                payment = outcome.payment
                if payment is not None and payment.invoice_status is InvoiceStatus.NEW:
                    if not interrupt.requested:
                        yield outcome.request
                else:
                    on_settled(outcome)
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


def _client_from_env(args: argparse.Namespace, *, max_concurrency: int = 64) -> FreedomPayClient:
    """
    Build a client from the options and the environment.

    Raises:
        _UsageError: The merchant id or the secret key is missing, or an option is invalid.
    """
    merchant_id = args.merchant_id or os.environ.get(MERCHANT_ENV)
    if not merchant_id:
        raise _UsageError(f"give --merchant-id or set {MERCHANT_ENV}")
    secret = os.environ.get(args.secret_key_env)
    if not secret:
        raise _UsageError(
            f"set the secret key in the environment variable {args.secret_key_env} "
            "(it is never read from the command line)"
        )
    try:
        if args.base_url:
            return FreedomPayClient(
                merchant_id, secret, base_url=args.base_url, max_concurrency=max_concurrency
            )
        return FreedomPayClient(merchant_id, secret, max_concurrency=max_concurrency)
    except ConfigurationError as exc:
        raise _UsageError(str(exc)) from exc


async def _pay_batch(args: argparse.Namespace) -> int:
    out, err = _consoles()
    client = _client_from_env(args, max_concurrency=args.concurrency)
    with contextlib.ExitStack() as files:
        csv_rows = files.enter_context(contextlib.closing(_CsvRows(args.input)))
        done = _read_journal(args.out, err) if args.resume else {}
        journal = _Journal(files.enter_context(_open_journal(args.out, resume=args.resume)))
        summary, tally, interrupt = await _run_pay_batch(
            args, client, csv_rows, journal, done, err=err
        )
    _print_pay_batch_summary(out, args, summary, tally, journal)
    if interrupt.requested:
        _say(
            err,
            f"Interrupted: run again with --resume --out {args.out} to finish; rows without an "
            "outcome are settled by their status first, so nothing is paid twice.",
        )
        return interrupt.exit_code
    not_paid = (
        summary.total
        - summary.paid
        + sum(tally.by_status.values())
        - tally.by_status["paid"]
        + sum(tally.earlier.values())
        - tally.earlier["paid"]
        + tally.malformed
    )
    return EXIT_OK if not_paid == 0 else EXIT_NOT_PAID


async def _run_pay_batch(
    args: argparse.Namespace,
    client: FreedomPayClient,
    csv_rows: _CsvRows,
    journal: _Journal,
    done: dict[str, str],
    *,
    err: Console,
) -> tuple[BatchSummary, _Tally, _Interrupt]:
    """Pay (or, resuming, settle then pay) the rows; return the summary, counts and signal."""
    progress, task = _progress(
        err, "Resuming" if args.resume else "Paying", _count_rows(args.input)
    )
    tally = _Tally(progress, task)
    interrupt = _Interrupt(args.grace)
    start = time.monotonic()

    def settled(outcome: PayOutcome) -> None:
        journal.write(outcome, source="status")
        tally.settled(outcome.state)

    async def pay(source: Iterator[PayRequest] | AsyncIterator[PayRequest]) -> None:
        async with contextlib.aclosing(
            client.pay_invoices(source, concurrency=args.concurrency)
        ) as outcomes:
            async for outcome in outcomes:
                journal.write(outcome, source="pay")
                tally.pay(outcome)

    async def run() -> None:
        rows = _good_rows(
            args.input, iter(csv_rows), err=err, tally=tally, interrupt=interrupt, done=done
        )
        if not args.resume:
            await pay(rows)
            return
        still_new = _settle_by_status(
            rows, client, limit=args.concurrency, on_settled=settled, interrupt=interrupt
        )
        async with contextlib.aclosing(still_new):
            await pay(still_new)

    async with client:
        with progress:
            runner = asyncio.create_task(run())
            interrupt.install(runner)
            try:
                await runner
            except asyncio.CancelledError:
                if not interrupt.requested:
                    raise
            finally:
                interrupt.uninstall()
    return tally.paid_now.build(time.monotonic() - start), tally, interrupt


def _print_pay_batch_summary(
    out: Console,
    args: argparse.Namespace,
    summary: BatchSummary,
    tally: _Tally,
    journal: _Journal,
) -> None:
    columns = {"paid now": dict(summary.by_state)}
    if args.resume:
        columns["settled by status"] = tally.by_status
        columns["done earlier"] = tally.earlier
    out.print(_outcome_table("Outcomes", columns))
    facts = [
        ("malformed rows skipped", str(tally.malformed)),
        (f"lines written to {args.out}", str(journal.written)),
        *_batch_facts(summary),
    ]
    out.print(_facts_table("Batch", facts))


# -- status and emulate ----------------------------------------------------------------------


def _payment_json(payment: InvoicePayment) -> dict[str, Any]:
    return {
        "invoice_status": payment.invoice_status.value,
        "invoice_status_raw": payment.invoice_status_raw,
        "is_terminal": payment.is_terminal,
        "customer": payment.customer,
        "order_id": payment.order_id,
        "invoice_id": payment.invoice_id,
        "amount": str(payment.amount) if payment.amount is not None else None,
        "currency": payment.currency,
        "card_pan": _mask_pan(payment.card_pan),
        "error_code": payment.error_code,
        "error_description": payment.error_description,
        "dt": payment.dt.isoformat() if payment.dt else None,
    }


async def _status(args: argparse.Namespace) -> int:
    client = _client_from_env(args)
    async with client:
        try:
            payment = await client.invoice_status(
                customer=args.customer, order_id=args.order_id, invoice_id=args.invoice_id
            )
        except FreedomPayError as exc:
            print(f"status failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_NOT_PAID
    print(json.dumps(_payment_json(payment), ensure_ascii=False))
    return EXIT_OK


async def _emulate(args: argparse.Namespace) -> int:
    from freedompay_async.testing import FreedomPayEmulator  # noqa: PLC0415 - loads aiohttp.web

    secret = os.environ.get(args.secret_key_env)
    options: dict[str, Any] = {"secret_key": secret} if secret else {}
    emulator = FreedomPayEmulator(
        merchant_id=args.merchant_id,
        host=args.host,
        port=args.port,
        adversarial=args.adversarial,
        seed=args.seed,
        **options,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with emulator:
            info: dict[str, Any] = {
                "base_url": emulator.base_url,
                "merchant_id": emulator.merchant_id,
                "secret_key_env": args.secret_key_env,
                "secret_key_from_env": bool(secret),
                "admin_url": f"{emulator.base_url}/_emulator/",
                "adversarial": emulator.adversarial,
            }
            if not secret:
                # The emulator's built-in test key is public; a key from the environment is not.
                info["secret_key"] = emulator.secret_key
            print(json.dumps(info), flush=True)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
    print(f"{signal.Signals(received[0]).name}: emulator stopped", file=sys.stderr)
    return EXIT_OK


# -- argument parsing ------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65535:  # noqa: PLR2004 - the TCP port range
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {value}")
    return value


def _env_var_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise argparse.ArgumentTypeError(f"not an environment variable name: {text!r}")
    return text


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        default=os.environ.get(BASE_URL_ENV),
        metavar="URL",
        help=f"the API host (default: ${BASE_URL_ENV}, else the client's default host)",
    )
    parser.add_argument("--merchant-id", help=f"the merchant id (default: ${MERCHANT_ENV})")
    parser.add_argument(
        "--secret-key-env",
        default=SECRET_ENV,
        type=_env_var_name,
        metavar="VAR",
        help=f"the environment variable holding the secret key (default: {SECRET_ENV})",
    )


def build_parser() -> argparse.ArgumentParser:
    """
    Build the argument parser of the `freedompay-async` command.

    Returns:
        The parser, with one sub-command per command.
    """
    parser = argparse.ArgumentParser(
        prog="freedompay-async",
        description="Pay Freedom Pay invoices in bulk, check them, and try it on an emulator.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log warnings (-v), retries (-vv) or every request (-vvv) on stderr",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="pay invoices on an in-process emulator with faults, and show the summary",
        description="Start the emulator in this process (adversarial: a second pay would "
        "charge again), create invoices with a realistic mix of fates, inject faults into "
        "their pays, pay them all with pay_invoices, and show the summary. Exits non-zero "
        "if any invoice was charged twice.",
    )
    demo.add_argument("--invoices", type=_positive_int, default=2000, metavar="N")
    demo.add_argument("--concurrency", type=_positive_int, default=64, metavar="C")
    demo.add_argument(
        "--fault-rate",
        type=_fraction,
        default=0.05,
        metavar="R",
        help="share of pays that meet a fault: 429, 503, 500 after commit, a dropped "
        "connection after commit, or a reply slower than the read timeout (default: 0.05)",
    )
    demo.add_argument("--seed", type=int, default=1, metavar="S")

    pay = commands.add_parser(
        "pay-batch",
        help="pay the invoices of a CSV file, one JSON line per outcome; resumable",
        description="Pay one invoice per CSV row (header: customer,user_id,card_token[,key]) "
        "and append one JSON line per outcome to OUT (no card token; masked PAN only). "
        "Malformed rows are reported with their line number and skipped. With --resume, rows "
        "with a terminal outcome in OUT are skipped, and every other row is settled by its "
        "status first: only invoices still new are paid. SIGINT/SIGTERM stop gracefully.",
    )
    pay.add_argument("input", type=Path, metavar="INPUT.csv")
    pay.add_argument("--out", type=Path, required=True, metavar="OUT.jsonl")
    pay.add_argument("--resume", action="store_true", help="continue the run recorded in OUT")
    pay.add_argument("--concurrency", type=_positive_int, default=16, metavar="C")
    pay.add_argument(
        "--grace",
        type=_non_negative,
        default=10.0,
        metavar="SECONDS",
        help="after SIGINT/SIGTERM, how long payments in flight may finish (default: 10)",
    )
    _add_connection_options(pay)

    status = commands.add_parser("status", help="print one invoice's status as JSON")
    which = status.add_mutually_exclusive_group(required=True)
    which.add_argument("--customer")
    which.add_argument("--order-id")
    which.add_argument("--invoice-id", type=int)
    _add_connection_options(status)

    emulate = commands.add_parser(
        "emulate",
        help="serve the emulator until interrupted",
        description="Serve the Freedom Pay emulator on loopback until SIGINT/SIGTERM. The first "
        "line of stdout is JSON with base_url, merchant_id and the secret key's environment "
        "variable; the admin API is under /_emulator/.",
    )
    emulate.add_argument("--port", type=_port, default=0, help="0 picks a free port (default)")
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--merchant-id", default="123456")
    emulate.add_argument(
        "--secret-key-env",
        default=SECRET_ENV,
        type=_env_var_name,
        metavar="VAR",
        help=f"use the key in this variable if set, else the built-in test key (default: "
        f"{SECRET_ENV})",
    )
    emulate.add_argument("--seed", type=int, default=None)
    emulate.add_argument(
        "--adversarial", action="store_true", help="commit every pay, even a second one"
    )
    add_enqueue_command(commands)
    return parser


def _configure_logging(verbosity: int) -> None:
    levels = (logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)
    level = levels[min(verbosity, len(levels) - 1)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("freedompay_async")
    root.addHandler(handler)
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the `freedompay-async` command line.

    Args:
        argv: The arguments after the program name; None reads `sys.argv`.

    Returns:
        The exit status.
    """
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    commands: dict[str, Callable[[argparse.Namespace], Any]] = {
        "demo": _demo,
        "pay-batch": _pay_batch,
        "status": _status,
        "emulate": _emulate,
        "enqueue": run_enqueue,
    }
    try:
        if args.command in ("demo", "pay-batch"):
            _require_rich()
        code: int = asyncio.run(commands[args.command](args))
    except _UsageError as exc:
        print(f"freedompay-async: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return code
