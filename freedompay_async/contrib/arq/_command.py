"""The `enqueue` command: queue a pay CSV for the workers, optionally wait and report."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from arq.connections import RedisSettings, create_pool
from redis.exceptions import RedisError

from freedompay_async import ConfigurationError, PayRequest
from freedompay_async.contrib.arq._config import (
    DEFAULT_QUEUE,
    ENV_MERCHANT_ID,
    env_redis_url,
    env_text,
)
from freedompay_async.contrib.arq._enqueue import enqueue_batch, wait_for_outcomes
from freedompay_async.contrib.arq._store import OutcomeStore
from freedompay_async.csvinput import BadRow, CsvInputError, PayCsv, open_pay_csv

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping

__all__ = ["add_enqueue_command", "main", "run_enqueue"]

_CSV_CHUNK: Final = 1000


class _CsvRows:
    """The requests of a pay CSV (`freedompay_async.csvinput`), read in a thread, in chunks."""

    def __init__(self, table: PayCsv, *, keep_customers: bool) -> None:
        self.table = table
        self.malformed = 0
        self.customers: list[str] | None = [] if keep_customers else None
        self._rows = iter(table)

    def _read_chunk(self) -> list[PayRequest | BadRow]:
        chunk: list[PayRequest | BadRow] = []
        for row in self._rows:
            chunk.append(row if isinstance(row, BadRow) else row.request())
            if len(chunk) >= _CSV_CHUNK:
                break
        return chunk

    async def __aiter__(self) -> AsyncIterator[PayRequest]:
        try:
            for _ in range(1_000_000_000):  # bounded: a billion chunks
                chunk = await asyncio.to_thread(self._read_chunk)
                if not chunk:
                    break
                for row in chunk:
                    if isinstance(row, BadRow):
                        self.malformed += 1
                        sys.stderr.write(
                            f"{self.table.path}:{row.line}: skipped a malformed row: {row.reason}\n"
                        )
                        continue
                    if self.customers is not None:
                        self.customers.append(row.customer)
                    yield row
        finally:
            await asyncio.to_thread(self.table.close)


def add_enqueue_command(
    subparsers: argparse._SubParsersAction[Any],
) -> argparse.ArgumentParser:
    """
    Register `enqueue INPUT.csv --redis URL` on a command line's subparsers.

    The handler is set as both `func` and `handler` in the parsed namespace and returns the
    exit code.

    Args:
        subparsers: What `ArgumentParser.add_subparsers()` returned.

    Returns:
        The `enqueue` subparser.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "enqueue",
        help="queue a CSV of invoices for arq pay workers",
        description=(
            "Queue one pay job per CSV row (customer,user_id,card_token[,key], header row) for "
            "workers started with: arq freedompay_async.contrib.arq.WorkerSettings"
        ),
    )
    parser.add_argument("input", type=Path, help="the CSV file")
    parser.add_argument(
        "--encoding",
        default="utf-8-sig",
        help="the CSV's encoding, e.g. cp1251 (default: %(default)s; a BOM is dropped)",
    )
    parser.add_argument(
        "--delimiter",
        default=None,
        help="the CSV's field delimiter (default: sniffed from the header: , ; tab |)",
    )
    parser.add_argument(
        "--redis",
        default=env_redis_url(os.environ),
        help="Redis URL (default: $FREEDOMPAY_REDIS_URL, $REDIS_URL or %(default)s)",
    )
    parser.add_argument(
        "--queue",
        default=env_text(os.environ, "FREEDOMPAY_QUEUE", DEFAULT_QUEUE),
        help="the workers' arq queue (default: $FREEDOMPAY_QUEUE or %(default)s)",
    )
    parser.add_argument(
        "--merchant-id",
        default=os.environ.get(ENV_MERCHANT_ID) or None,
        help="skip customers already settled, and read outcomes (default: $FREEDOMPAY_MERCHANT_ID)",
    )
    parser.add_argument(
        "--namespace",
        default=env_text(os.environ, "FREEDOMPAY_NAMESPACE", "freedompay"),
        help="the workers' key prefix (default: %(default)s)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait for every outcome, then print a summary"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds --wait waits at most"
    )
    parser.add_argument("--out", type=Path, help="with --wait: write the outcomes as JSON lines")

    def handler(args: argparse.Namespace) -> int:
        return asyncio.run(run_enqueue(args))

    parser.set_defaults(func=handler, handler=handler)
    return parser


def _print(data: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(dict(data), separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _write_jsonl(path: Path, outcomes: Iterable[Mapping[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for outcome in outcomes:
            out.write(json.dumps(dict(outcome), ensure_ascii=False, separators=(",", ":")) + "\n")


async def run_enqueue(args: argparse.Namespace) -> int:
    """
    Run `enqueue` with the arguments `add_enqueue_command` parsed.

    Args:
        args: The parsed arguments.

    Returns:
        The exit code, as for `main`.
    """
    if args.wait and not args.merchant_id:
        sys.stderr.write("--wait needs --merchant-id (or FREEDOMPAY_MERCHANT_ID)\n")
        return 2
    if not await asyncio.to_thread(args.input.is_file):
        sys.stderr.write(f"{args.input}: no such file\n")
        return 2
    try:
        settings = RedisSettings.from_dsn(args.redis)
    except (RuntimeError, ValueError) as exc:
        sys.stderr.write(f"--redis: {exc}\n")
        return 2
    try:
        table = await asyncio.to_thread(
            open_pay_csv,
            args.input,
            encoding=getattr(args, "encoding", "utf-8-sig"),
            delimiter=getattr(args, "delimiter", None),
        )
    except (CsvInputError, ConfigurationError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    try:
        return await _enqueue_table(args, settings, table)
    except (RedisError, OSError) as exc:
        sys.stderr.write(
            f"enqueue: cannot use Redis at {settings.host}:{settings.port} "
            f"({type(exc).__name__}: {exc}); start it or pass --redis URL. Rows already "
            "queued stay queued; running enqueue again queues each customer at most once\n"
        )
        return 2
    finally:
        await asyncio.to_thread(table.close)


async def _enqueue_table(args: argparse.Namespace, settings: RedisSettings, table: PayCsv) -> int:
    redis = await create_pool(settings, default_queue_name=args.queue)
    try:
        results = (
            OutcomeStore(redis, args.merchant_id, namespace=args.namespace)
            if args.merchant_id
            else None
        )
        rows = _CsvRows(table, keep_customers=args.wait)
        report = await enqueue_batch(redis, rows, queue_name=args.queue, results=results)
        _print({**report.to_dict(), "malformed": rows.malformed, "queue": args.queue})
        if not args.wait or results is None or rows.customers is None:
            return 1 if rows.malformed else 0
        return await _wait_and_report(args, results, rows.customers, rows.malformed)
    finally:
        await redis.aclose()


async def _wait_and_report(
    args: argparse.Namespace, results: OutcomeStore, customers: list[str], malformed: int
) -> int:
    unique = list(dict.fromkeys(customers))
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0 or done == total:  # noqa: PLR2004 - one line per two seconds
            last[0] = now
            sys.stderr.write(f"outcomes: {done}/{total}\n")

    found = await wait_for_outcomes(results, unique, within=args.timeout, on_progress=progress)
    if args.out is not None:
        await asyncio.to_thread(_write_jsonl, args.out, (found[c] for c in unique if c in found))
    by_state: dict[str, int] = {}
    for outcome in found.values():
        state = str(outcome.get("state"))
        by_state[state] = by_state.get(state, 0) + 1
    missing = len(unique) - len(found)
    _print({"outcomes": len(found), "missing": missing, "by_state": by_state})
    if missing:
        sys.stderr.write(f"{missing} outcomes still missing after {args.timeout:g}s\n")
        return 2
    return 0 if by_state.get("paid", 0) == len(unique) and not malformed else 1


def main(argv: list[str] | None = None) -> int:
    """
    Run the `enqueue` command: `python -m freedompay_async.contrib.arq enqueue INPUT.csv`.

    Args:
        argv: The arguments (default: `sys.argv[1:]`).

    Returns:
        The exit code: 0 when everything was queued (with `--wait`: paid), 1 when some row or
        outcome was not, 2 for a usage error or a `--wait` that timed out.
    """
    parser = argparse.ArgumentParser(prog="python -m freedompay_async.contrib.arq")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_enqueue_command(subparsers)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
