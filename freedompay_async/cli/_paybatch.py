"""`pay-batch INPUT.csv --out OUT.jsonl`: pay a CSV's invoices, once each, whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
import time
from typing import TYPE_CHECKING, Any

from freedompay_async.cli import _render
from freedompay_async.cli._common import (
    EXIT_NOT_PAID,
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    UsageError,
    client_from_env,
    host_of,
    say,
)
from freedompay_async.cli._journal import STDOUT, Journal, open_journal, read_journal
from freedompay_async.cli._signals import Stop
from freedompay_async.cli._stages import Feeder, RequestCounter, RowKey, Tally
from freedompay_async.csvinput import CsvInputError, PayCsv, open_pay_csv
from freedompay_async.facts import DEFAULT_BASE_URL, UNSETTLED_STATES
from freedompay_async.records import outcome_record
from freedompay_async.reporting import SummaryBuilder

if TYPE_CHECKING:
    import argparse

    from freedompay_async import FreedomPayClient
    from freedompay_async.reporting import BatchSummary

_UNKNOWN_STATES = UNSETTLED_STATES
_SHOWN_FAILURES = 12


def _open_input(args: argparse.Namespace) -> PayCsv:
    try:
        return open_pay_csv(args.input, encoding=args.encoding, delimiter=args.delimiter)
    except (CsvInputError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def resume_command(args: argparse.Namespace) -> str:
    """The exact command that continues this run."""
    argv = [arg for arg in args.argv if arg != "--resume"]
    return shlex.join(["freedompay-async", *argv, "--resume"])


async def pay_batch(args: argparse.Namespace) -> int:
    """Run `pay-batch`; return the exit status."""
    if args.resume and args.out == STDOUT:
        raise UsageError("--resume reads the earlier outcomes from --out: give a file, not -")
    counter = RequestCounter()
    client = client_from_env(args, max_concurrency=args.concurrency, rate_limiter=counter)
    table = await asyncio.to_thread(_open_input, args)
    with contextlib.closing(table):
        priors = read_journal(args.out) if args.resume else {}
        journal = open_journal(args.out, resume=args.resume)
        try:
            tally, stop, summary = await _run(args, client, table, journal, priors)
        finally:
            journal.close()
    return _finish(
        args, tally=tally, stop=stop, summary=summary, journal=journal, requests=counter.count
    )


async def _run(
    args: argparse.Namespace,
    client: FreedomPayClient,
    table: PayCsv,
    journal: Journal,
    priors: dict[str, Any],
) -> tuple[Tally, Stop, BatchSummary]:
    rich = _render.use_rich(plain=args.plain, stream=sys.stderr)
    progress = _render.Progress("Resuming" if args.resume else "Paying", table.rows, rich=rich)
    tally = Tally(table.rows, progress, args)
    stop = Stop(args.grace)
    builder = SummaryBuilder()
    feeder = Feeder(
        iter(table),
        client=client,
        journal=journal,
        tally=tally,
        stop=stop,
        priors=priors,
        args=args,
    )
    start = time.monotonic()

    async def pay() -> None:
        async with contextlib.aclosing(
            client.pay_invoices(
                feeder,
                concurrency=args.concurrency,
                on_progress=progress.batch,
                outage_tolerance=args.outage_tolerance,
            )
        ) as outcomes:
            async for outcome in outcomes:
                row = outcome.request.key
                line, key = (row.line, row.key) if isinstance(row, RowKey) else (None, None)
                record = outcome_record(outcome, line=line, key=key)
                if not journal.write(record):
                    stop.request("output", f"cannot write {journal.path}")
                    say("unrecorded outcome: " + _compact(record))
                builder.add(outcome)
                tally.record(record, outcome.error, stop)

    async with client:
        with progress:
            runner = asyncio.create_task(pay())
            stop.install(runner)
            try:
                await runner
            except asyncio.CancelledError:
                if not stop.hard:
                    raise
            finally:
                stop.uninstall()
    return tally, stop, builder.build(time.monotonic() - start)


def _compact(record: dict[str, Any]) -> str:
    keep = ("line", "customer", "state", "invoice_id", "error", "error_code")
    return " ".join(f"{name}={record[name]}" for name in keep if record[name] is not None)


def _exit_code(tally: Tally, stop: Stop, journal: Journal) -> int:
    if stop.signum is not None:
        return stop.exit_code
    if stop.reason == "systemic":
        return EXIT_USAGE
    unknown = tally.in_flight + sum(
        counts[state] for counts in (tally.paid_now, tally.by_status) for state in _UNKNOWN_STATES
    )
    if unknown or journal.failed is not None or tally.not_started:
        return EXIT_UNKNOWN
    paid = tally.paid_now["paid"] + tally.by_status["paid"] + tally.earlier["paid"]
    return EXIT_OK if paid == tally.rows else EXIT_NOT_PAID


def _finish(
    args: argparse.Namespace,
    *,
    tally: Tally,
    stop: Stop,
    summary: BatchSummary,
    journal: Journal,
    requests: int,
) -> int:
    code = _exit_code(tally, stop, journal)
    columns = {"paid now": dict(tally.paid_now)}
    if tally.by_status or args.resume:
        columns["checked by status"] = dict(tally.by_status)
    if args.resume:
        columns["done earlier"] = dict(tally.earlier)
    rows = [
        ("rows in the file", str(tally.rows)),
        ("malformed rows skipped", str(tally.bad)),
        ("pays in flight when stopped (outcome unknown)", str(tally.in_flight)),
        ("rows not started", str(tally.not_started)),
        (f"lines written to {args.out}", str(journal.written)),
    ]
    ranked = tally.failures.most_common()
    failures = [
        (f"{kind} {code}".strip(), f"{count}  {text}".rstrip())
        for (kind, code, text), count in ranked[:_SHOWN_FAILURES]
    ]
    if len(ranked) > _SHOWN_FAILURES:
        rest = sum(count for _, count in ranked[_SHOWN_FAILURES:])
        failures.append(("more", f"{rest} failures of {len(ranked) - _SHOWN_FAILURES} more kinds"))
    done = sum(tally.paid_now.values()) + sum(tally.by_status.values())
    perf = _render.batch_facts(summary, requests=requests, done=done)
    footer = _footer(args, tally, stop, journal, code)
    if args.json:
        data = {
            "exit_code": code,
            "rows": tally.rows,
            "outcomes": columns,
            "malformed_rows": tally.bad,
            "in_flight_unknown": tally.in_flight,
            "not_started": tally.not_started,
            "lines_written": journal.written,
            "requests_sent": requests,
            "failures": [
                {"kind": kind, "code": code or None, "message": text, "count": count}
                for (kind, code, text), count in tally.failures.most_common()
            ],
            "stopped": stop.reason,
            "resume_command": resume_command(args) if code == EXIT_UNKNOWN or stop.reason else None,
            "message": footer,
        }
        _render.render_json(sys.stderr if args.out == STDOUT else sys.stdout, data)
        return code
    stream = sys.stderr if args.out == STDOUT else sys.stdout
    rich = _render.use_rich(plain=args.plain, stream=stream)
    sections = [("Rows", rows), ("Failures", failures), ("Batch", perf)]
    _render.render(stream, columns, sections, footer, rich=rich)
    return code


def _footer(args: argparse.Namespace, tally: Tally, stop: Stop, journal: Journal, code: int) -> str:
    lines: list[str] = []
    if journal.failed is not None:
        lines.append(
            f"Could not write {args.out}: {journal.failed.strerror or journal.failed}. "
            "Free the space (or fix the file), then finish with:"
        )
    elif stop.reason == "systemic":
        lines.append(
            "Stopped early: every row would fail the same way (see above). Fix it, then run:"
        )
    elif stop.signum is not None:
        lines.append("Interrupted. To finish (nothing already paid is paid again):")
    elif code == EXIT_UNKNOWN:
        lines.append(
            "Some outcomes are unknown (pending or in doubt): nothing was paid twice. Later, run:"
        )
    if lines:
        if tally.in_flight:
            lines.insert(
                0,
                f"{tally.in_flight} pays were in flight with an unknown outcome when the run "
                f"stopped; --resume reads their status before anything is paid.",
            )
        lines.append("  " + resume_command(args))
        if args.out == STDOUT:
            lines.append("  (with --out FILE: the outcomes went to stdout, save them first)")
    elif code == EXIT_OK:
        lines.append(f"Every invoice is paid. Host {host_of(args.base_url or DEFAULT_BASE_URL)}.")
    else:
        lines.append("Finished: some rows were declined, expired, refused or malformed (above).")
    return "\n".join(lines)
