"""
Integrations with the infrastructure users already run; each needs its own extra.

- `freedompay_async.contrib.redis_guard` (extra `arq`, needs `redis`): `RedisPayGuard`, a
  duplicate-pay guard shared by every process of a merchant, and `RedisRateLimiter`, a token
  bucket shared the same way. Pass them to `FreedomPayClient(guard=..., rate_limiter=...)`.
- `freedompay_async.contrib.arq` (extra `arq`): a ready arq job that pays one invoice, worker
  settings (`arq freedompay_async.contrib.arq.WorkerSettings`), an enqueue helper and the
  `enqueue` command.

Nothing here is imported by the core package, and this module imports neither arq nor redis, so
the command line can offer `enqueue` (and explain the missing extra) on any install.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_enqueue_command", "run_enqueue"]

_MISSING = "enqueue needs the 'arq' extra: pip install 'freedompay-async[arq]'\n"


def add_enqueue_command(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """
    Register the `enqueue` command on a command line's subparsers.

    With the `arq` extra installed this is `freedompay_async.contrib.arq.add_enqueue_command`;
    without it, the command is still listed and explains how to install the extra. Run the
    parsed command with `run_enqueue(args)` (async) or `args.func(args)` (sync).

    Args:
        subparsers: What `ArgumentParser.add_subparsers()` returned.

    Returns:
        The `enqueue` subparser.
    """
    try:
        from freedompay_async.contrib import arq  # noqa: PLC0415 - the extra is optional
    except ImportError:
        return _add_unavailable(subparsers, _MISSING)
    except Exception as exc:  # noqa: BLE001 - a broken optional extra must not break the CLI
        return _add_unavailable(subparsers, f"enqueue is unavailable: {exc}\n")
    return arq.add_enqueue_command(subparsers)


async def run_enqueue(args: argparse.Namespace) -> int:
    """
    Run the `enqueue` command that `add_enqueue_command` parsed.

    Args:
        args: The parsed arguments.

    Returns:
        The exit code: 0 queued (with `--wait`: every invoice paid), 1 some row or invoice was
        not, 2 a usage error, a `--wait` that timed out, or the `arq` extra is missing.
    """
    try:
        from freedompay_async.contrib import arq  # noqa: PLC0415 - the extra is optional
    except ImportError:
        sys.stderr.write(_MISSING)
        return 2
    return await arq.run_enqueue(args)


def _add_unavailable(
    subparsers: argparse._SubParsersAction[Any], message: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "enqueue",
        help="queue a CSV of invoices for arq workers (needs the 'arq' extra)",
        description=message.strip(),
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def handler(_args: argparse.Namespace) -> int:
        sys.stderr.write(message)
        return 2

    parser.set_defaults(func=handler, handler=handler)
    return parser
