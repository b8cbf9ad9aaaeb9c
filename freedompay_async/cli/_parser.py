"""The argument parser of `freedompay-async`: every command, option and exit status."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from freedompay_async import __version__
from freedompay_async.cli._commands import ADMIN_HELP
from freedompay_async.cli._common import (
    BASE_URL_ENV,
    EXIT_CODES_HELP,
    MERCHANT_ENV,
    SECRET_ENV,
)
from freedompay_async.contrib import add_enqueue_command
from freedompay_async.facts import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from collections.abc import Callable


def _number(
    kind: type[float | int], low: float, high: float | None = None
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value >= low or (high is not None and value > high):
            bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


def _env_var_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise argparse.ArgumentTypeError(f"not an environment variable name: {text!r}")
    return text


def _delimiter(text: str) -> str:
    value = {"tab": "\t", "\\t": "\t"}.get(text, text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"one character (or 'tab'), got {text!r}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    """Options every command accepts after its name too."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log warnings (-v), retries (-vv) or every request (-vvv) on stderr",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an unexpected error",
    )


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        default=os.environ.get(BASE_URL_ENV),
        metavar="URL",
        help=f"the API host (default: ${BASE_URL_ENV}, else {DEFAULT_BASE_URL})",
    )
    parser.add_argument("--merchant-id", help=f"the merchant id (default: ${MERCHANT_ENV})")
    parser.add_argument(
        "--secret-key-env",
        default=SECRET_ENV,
        type=_env_var_name,
        metavar="VAR",
        help=f"the environment variable holding the secret key (default: {SECRET_ENV})",
    )


def _lookup(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--customer", help="the invoice's customer token")
    which.add_argument("--order-id", help="the merchant's order id")
    which.add_argument("--invoice-id", type=int, help="the gateway's invoice id")


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    epilog: str = EXIT_CODES_HELP,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser)
    return parser


def _pay_batch(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pay = _command(
        commands,
        "pay-batch",
        "pay the invoices of a CSV file, one JSON line per outcome; resumable",
        "Pay one invoice per CSV row (header: customer,user_id,card_token[,key]) and append "
        "one JSON line per outcome to OUT (no card token; masked PAN only).\n\n"
        "The whole file is decoded first: a byte that is not valid in --encoding stops the run "
        "before anything is paid, naming its line. Malformed rows are reported with their line "
        "and skipped. Every row's invoice status is read before it is paid, and only an invoice "
        "still new is paid, so running the command again (with any --out) never pays twice. "
        "With --resume, rows with a final outcome in OUT are skipped and a row whose pay may "
        "have been sent stays unpaid until its status settles it. SIGINT/SIGTERM stop "
        "gracefully; a run of identical failures that no row can fix (a wrong key, merchant "
        "or host) stops the run early.",
    )
    pay.add_argument("input", type=Path, metavar="INPUT.csv")
    pay.add_argument(
        "--out", type=Path, required=True, metavar="OUT.jsonl", help="outcomes ('-': stdout)"
    )
    pay.add_argument("--resume", action="store_true", help="continue the run recorded in OUT")
    pay.add_argument("--concurrency", type=_number(int, 1), default=16, metavar="C")
    pay.add_argument(
        "--encoding", default="utf-8-sig", help="the CSV's encoding, e.g. cp1251 (default: utf-8)"
    )
    pay.add_argument(
        "--delimiter",
        type=_delimiter,
        default=None,
        help="the CSV's delimiter (default: sniffed from the header: , ; tab |)",
    )
    pay.add_argument(
        "--no-status-check",
        dest="status_check",
        action="store_false",
        help="pay rows without reading their status first (only for invoices known to be "
        "fresh: an invoice paid before would be paid again by a gateway that allows it)",
    )
    pay.add_argument(
        "--settle-window",
        type=_number(float, 0),
        default=None,
        metavar="SECONDS",
        help="with --resume: a status of new read this long after a pay that may have been "
        "sent proves that pay never landed, so it is paid (default: never; such rows exit 3)",
    )
    pay.add_argument(
        "--stop-after",
        type=_number(int, 0),
        default=5,
        metavar="N",
        help="stop after N identical failures that no row can fix: invalid signature, unknown "
        "merchant, unreachable host (default: 5; 0: never)",
    )
    pay.add_argument(
        "--grace",
        type=_number(float, 0),
        default=10.0,
        metavar="SECONDS",
        help="after a stop, how long pays in flight may finish (default: 10)",
    )
    pay.add_argument(
        "--outage-tolerance",
        type=_number(float, 0, 86_400),
        default=300.0,
        metavar="SECONDS",
        help="how long to hold the rows not yet sent while the gateway refuses every pay "
        "(503, 429, no connection), then fail them as not sent (default: 300; 0: fail fast)",
    )
    _output(pay)
    _connection(pay)


def _classic(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`cards list|remove`, `refund`, `refund-batch`: the classic Merchant API."""
    cards = _command(
        commands,
        "cards",
        "list or remove a user's saved cards (tokens masked; remove reads it from the env)",
        "List a user's saved cards as JSON (card tokens masked), or remove one. The token of "
        "the card to remove is read from the environment, never from the command line.",
    )
    cards.add_argument("action", choices=("list", "remove"))
    cards.add_argument("--user-id", required=True, help="the card owner's id")
    cards.add_argument("--extended", action="store_true", help="list: bank, brand, expiry too")
    cards.add_argument(
        "--card-token-env",
        default="FREEDOMPAY_CARD_TOKEN",
        type=_env_var_name,
        metavar="VAR",
        help="remove: the variable holding the card token (default: %(default)s)",
    )
    _connection(cards)
    refund = _command(
        commands,
        "refund",
        "refund one payment, fully or in part (status read first); print the outcome as JSON",
        "Refund one payment at most once. Its status is read first: more than is left to "
        "refund is refused, and a refund whose outcome is unknown is reported (exit 3), never "
        "sent again.",
    )
    refund.add_argument("--payment-id", required=True, type=_number(int, 1), metavar="N")
    refund.add_argument("--amount", help="e.g. 150.00 (default: all that is left)")
    _connection(refund)
    batch = _command(
        commands,
        "refund-batch",
        "refund the payments of a CSV file, one JSON line per outcome; resumable",
        "Refund one payment per CSV row (header: payment_id[,amount][,key]; an empty amount "
        "refunds what is left) and append one JSON line per outcome to OUT. An intent line is "
        "written before each refund is sent. Every row's status is read first: a payment "
        "that already shows a refund of that amount is not refunded again, so rerunning the "
        "file never refunds twice. With --resume, rows with a final outcome are skipped and a "
        "row whose refund may have been sent is settled by its status, or stays in doubt.",
    )
    batch.add_argument("input", type=Path, metavar="INPUT.csv")
    batch.add_argument(
        "--out", type=Path, required=True, metavar="OUT.jsonl", help="outcomes ('-': stdout)"
    )
    batch.add_argument("--resume", action="store_true", help="continue the run recorded in OUT")
    batch.add_argument("--concurrency", type=_number(int, 1), default=8, metavar="C")
    batch.add_argument("--encoding", default="utf-8-sig", help="the CSV's encoding")
    batch.add_argument("--delimiter", type=_delimiter, default=None, help="default: sniffed")
    batch.add_argument(
        "--settle-window",
        type=_number(float, 0),
        default=None,
        metavar="SECONDS",
        help="with --resume: an unchanged status read this long after a refund that may have "
        "been sent proves it never landed, so it is sent (default: never; such rows exit 3)",
    )
    batch.add_argument(
        "--grace",
        type=_number(float, 0),
        default=10.0,
        metavar="SECONDS",
        help="after SIGINT/SIGTERM, how long refunds in flight may finish (default: 10)",
    )
    _connection(batch)


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--plain", action="store_true", help="plain text even on a terminal with rich"
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
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _command(
        commands,
        "demo",
        "pay invoices on an in-process emulator with faults, and show the summary",
        "Start the emulator in this process (adversarial: a second pay would charge again), "
        "create invoices with a realistic mix of fates, inject faults into their pays, pay them "
        "all, and show the summary. Exits 1 if any invoice was charged twice.",
    )
    demo.add_argument("--invoices", type=_number(int, 1), default=2000, metavar="N")
    demo.add_argument("--concurrency", type=_number(int, 1), default=64, metavar="C")
    demo.add_argument(
        "--fault-rate",
        type=_number(float, 0, 1),
        default=0.05,
        metavar="R",
        help="share of pays that meet a fault (default: 0.05)",
    )
    demo.add_argument("--seed", type=int, default=1, metavar="S")
    _output(demo)

    _pay_batch(commands)
    _classic(commands)

    pay = _command(
        commands,
        "pay",
        "pay one invoice (status checked first); print the outcome as JSON",
        "Pay one invoice with a saved card. The status is read first and only an invoice "
        "still new is paid. The card token is read from the environment, never from the "
        "command line.",
    )
    pay.add_argument("--customer", required=True, help="the invoice's customer token")
    pay.add_argument("--user-id", required=True, help="the payer's id")
    pay.add_argument(
        "--card-token-env",
        default="FREEDOMPAY_CARD_TOKEN",
        type=_env_var_name,
        metavar="VAR",
        help="the environment variable holding the card token (default: %(default)s)",
    )
    pay.add_argument(
        "--no-status-check", dest="status_check", action="store_false", help="pay at once"
    )
    _connection(pay)

    init = _command(
        commands, "init", "create an invoice; print its customer token as JSON", "Create one."
    )
    init.add_argument("--order-id", required=True)
    init.add_argument("--amount", required=True, help="e.g. 1500.00")
    init.add_argument("--description", required=True)
    init.add_argument("--currency", default="KZT")
    _connection(init)

    for name, summary in (
        ("status", "print one invoice's status as JSON"),
        ("info", "print one invoice's details (status, description, payment page) as JSON"),
    ):
        sub = _command(commands, name, summary, summary[0].upper() + summary[1:] + ".")
        _lookup(sub)
        _connection(sub)

    emulate = _command(
        commands,
        "emulate",
        "serve the emulator until interrupted",
        "Serve the Freedom Pay emulator until SIGINT/SIGTERM. The first line of stdout is JSON "
        "with base_url, admin_url, merchant_id and the secret key (or its variable).",
        epilog=ADMIN_HELP + "\n\n" + EXIT_CODES_HELP,
    )
    emulate.add_argument("--port", type=_number(int, 0, 65535), default=0, help="0: a free port")
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--merchant-id", default="123456")
    emulate.add_argument(
        "--secret-key-env",
        default=SECRET_ENV,
        type=_env_var_name,
        metavar="VAR",
        help=f"use the key in this variable if set, else the built-in test key ({SECRET_ENV})",
    )
    emulate.add_argument("--seed", type=int, default=None)
    emulate.add_argument(
        "--adversarial", action="store_true", help="commit every pay, even a second one"
    )
    enqueue = add_enqueue_command(commands)
    _common(enqueue)
    return parser
