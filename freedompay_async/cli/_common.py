"""What every command shares: exit codes, the client from the environment, errors in words."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from freedompay_async import (
    CircuitOpenError,
    ConfigurationError,
    ConnectError,
    ConnectTimeout,
    DecodeError,
    FreedomPayClient,
    FreedomPayError,
    GatewayError,
    HTTPStatusError,
    RateLimiter,
    SignatureError,
)
from freedompay_async.facts import DEFAULT_BASE_URL
from freedompay_async.masking import printable

if TYPE_CHECKING:
    import argparse

#: Every invoice paid (or, for `status`/`info`/`init`, the call answered).
EXIT_OK: Final = 0
#: The run finished, but some rows were declined, expired, refused or malformed.
EXIT_NOT_PAID: Final = 1
#: A usage or configuration error (a bad option, file or credential; an unreachable host).
EXIT_USAGE: Final = 2
#: Some outcomes are unknown (in doubt, pending, or cut off in flight): run with --resume.
EXIT_UNKNOWN: Final = 3
#: A bug: an error the command line did not expect (rerun with --debug and report it).
EXIT_INTERNAL: Final = 70

EXIT_CODES_HELP: Final = """exit status:
  0        every invoice paid (status/info/init/pay: the call succeeded)
  1        finished, but some rows were declined, expired, refused or malformed
           (status/info/init/pay: the call failed; demo: an invoice was charged twice)
  2        usage or configuration error: bad option, file, credential or host
  3        some outcomes are unknown (in doubt, pending, cut off): run again with --resume
  70       unexpected internal error (rerun with --debug and report it)
  130/143  interrupted by SIGINT/SIGTERM (128 + the signal number)"""

SECRET_ENV: Final = "FREEDOMPAY_SECRET_KEY"  # noqa: S105 - a variable name, not a secret
MERCHANT_ENV: Final = "FREEDOMPAY_MERCHANT_ID"
BASE_URL_ENV: Final = "FREEDOMPAY_BASE_URL"

#: Gateway error codes that no retry and no other row can fix.
SYSTEMIC_CODES: Final = {
    100: "the gateway rejects the request signature: the secret key in ${var} is not merchant "
    "{merchant}'s",
    9998: "the gateway does not know merchant {merchant}: check --merchant-id or $" + MERCHANT_ENV,
}


class UsageError(Exception):
    """A problem with the command line, a file or the environment; exit status 2."""


def say(text: str) -> None:
    """Write one line to stderr, flushed."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def host_of(base_url: str) -> str:
    """Return `host:port` of an API URL, for messages."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def check_base_url(url: str) -> str:
    """
    Check an API URL before any client is built.

    Raises:
        UsageError: It is not an http(s) URL with a host and a port in range.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--base-url {url!r}: {exc}; e.g. {DEFAULT_BASE_URL}") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UsageError(f"--base-url {url!r}: give an http:// or https:// URL with a host")
    if port == 0:
        raise UsageError(f"--base-url {url!r}: port 0 is not a port to connect to")
    return url


def client_from_env(
    args: argparse.Namespace,
    *,
    max_concurrency: int = 64,
    rate_limiter: RateLimiter | None = None,
) -> FreedomPayClient:
    """
    Build a client from the options and the environment.

    Raises:
        UsageError: The merchant id or the secret key is missing, or an option is invalid.
    """
    merchant_id = args.merchant_id or os.environ.get(MERCHANT_ENV)
    if not merchant_id:
        raise UsageError(f"give --merchant-id or set {MERCHANT_ENV}")
    secret = os.environ.get(args.secret_key_env)
    if not secret:
        raise UsageError(
            f"set the secret key in the environment variable {args.secret_key_env} "
            "(it is never read from the command line)"
        )
    base_url = check_base_url(args.base_url or DEFAULT_BASE_URL)
    try:
        return FreedomPayClient(
            merchant_id,
            secret,
            base_url=base_url,
            max_concurrency=max_concurrency,
            rate_limiter=rate_limiter,
        )
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from exc


def failure_kind(error: FreedomPayError) -> str:
    """Name an error for the summary: the class, and the gateway's code when there is one."""
    if isinstance(error, GatewayError):
        return f"{type(error).__name__} {error.error_code}"
    if isinstance(error, HTTPStatusError):
        return f"{type(error).__name__} {error.status_code}"
    return type(error).__name__


def systemic_advice(error: FreedomPayError, args: argparse.Namespace) -> str | None:
    """
    Say what to fix when *error* will fail every row alike; None for a per-row failure.

    Args:
        error: The failure.
        args: The command's options (for the host, merchant and key variable names).

    Returns:
        One sentence naming what to check, or None.
    """
    merchant = args.merchant_id or os.environ.get(MERCHANT_ENV) or "?"
    host = host_of(args.base_url or DEFAULT_BASE_URL)
    if isinstance(error, GatewayError) and error.error_code in SYSTEMIC_CODES:
        template = SYSTEMIC_CODES[error.error_code]
        return template.format(var=args.secret_key_env, merchant=merchant)
    if isinstance(error, ConnectError | ConnectTimeout):
        return f"cannot reach {host}: check --base-url (or ${BASE_URL_ENV}) and the network"
    if isinstance(error, CircuitOpenError):
        return (
            f"cannot reach {host}, or it refused every recent request: check --base-url "
            f"(or ${BASE_URL_ENV}) and the network, or wait until the gateway is back"
        )
    if isinstance(error, HTTPStatusError) and error.status_code in {401, 403, 404, 405}:
        return f"{host} answers HTTP {error.status_code}: check --base-url (or ${BASE_URL_ENV})"
    if isinstance(error, DecodeError | SignatureError):
        return f"{host} does not answer like the Freedom Pay API: check --base-url"
    return None


def describe(error: FreedomPayError, args: argparse.Namespace | None = None) -> str:
    """One line for a failed call: the class, the gateway's code and text, and the host."""
    text = f"{type(error).__name__}: {printable(error)}"
    if isinstance(error, GatewayError):
        text = (
            f"gateway error {error.error_code}: {printable(error.error_description or '')} "
            f"({type(error).__name__})"
        )
    if args is not None:
        text += f" [host {host_of(args.base_url or DEFAULT_BASE_URL)}]"
        advice = systemic_advice(error, args)
        if advice:
            text += f"; {advice}"
    return text
