"""
The `freedompay-async` command line (also `python -m freedompay_async`), built on the public API.

Commands:

- `demo`: pay invoices on an in-process emulator with faults injected; show the summary and the
  emulator's count of invoices charged twice (which must be 0).
- `pay-batch INPUT.csv --out OUT.jsonl`: pay one invoice per CSV row, each only after its status
  reads `new`; one JSON line per outcome; `--resume` continues a stopped run.
- `pay`, `init`, `status`, `info`: one call each, JSON on stdout.
- `emulate`: serve the emulator on loopback until SIGINT/SIGTERM.
- `enqueue`: queue a CSV for arq workers (the `arq` extra).

Secrets (the secret key, a card token) come from the environment, never from the command line.
`rich` (the `cli` extra) only makes progress and tables prettier: without it, or when output
is not a terminal, they are plain text. No error reaches the user as a traceback: each is one
or two lines saying what to do next (`--debug` shows the traceback). The exit statuses are in
`EXIT_CODES_HELP` and `--help`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys
import traceback
from typing import TYPE_CHECKING, Any

from freedompay_async.cli._common import (
    EXIT_CODES_HELP,
    EXIT_INTERNAL,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    UsageError,
    say,
)
from freedompay_async.cli._parser import build_parser

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["EXIT_CODES_HELP", "build_parser", "main"]


def _configure_logging(verbosity: int) -> None:
    levels = (logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)
    level = levels[min(verbosity, len(levels) - 1)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("freedompay_async", "arq"):  # arq logs each Redis reconnect attempt
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level)


def _handlers() -> dict[str, Callable[[Any], Any]]:
    from freedompay_async.cli import (  # noqa: PLC0415 - lazy
        _cards,
        _commands,
        _demo,
        _paybatch,
        _refunds,
    )
    from freedompay_async.contrib import run_enqueue  # noqa: PLC0415 - lazy

    return {
        "demo": _demo.demo,
        "pay-batch": _paybatch.pay_batch,
        "pay": _commands.pay,
        "init": _commands.init,
        "status": _commands.status,
        "info": _commands.info,
        "emulate": _commands.emulate,
        "cards": _cards.cards,
        "refund": _refunds.refund,
        "refund-batch": _refunds.refund_batch,
        "enqueue": run_enqueue,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the `freedompay-async` command line.

    Args:
        argv: The arguments after the program name; None reads `sys.argv`.

    Returns:
        The exit status (see `EXIT_CODES_HELP`).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    args.argv = arguments
    debug = getattr(args, "debug", False)
    _configure_logging(getattr(args, "verbose", 0))
    try:
        code: int = asyncio.run(_handlers()[args.command](args))
    except UsageError as exc:
        say(f"freedompay-async {args.command}: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except OSError as exc:
        if debug:
            traceback.print_exc()
        where = f" {exc.filename}" if exc.filename else ""
        say(f"freedompay-async {args.command}: error:{where} {exc.strerror or exc}")
        if exc.errno in {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}:
            say("free some space, then run the same command with --resume")
            return EXIT_UNKNOWN
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - no traceback reaches the user unasked
        if debug:
            traceback.print_exc()
        say(
            f"freedompay-async {args.command}: unexpected error: {type(exc).__name__}: {exc}. "
            "Rerun with --debug to see the traceback, and report it."
        )
        return EXIT_INTERNAL
    return code
