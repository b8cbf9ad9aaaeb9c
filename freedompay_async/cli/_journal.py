"""The JSON-lines output of `pay-batch`: written as it goes, read back by `--resume`."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import attrs

from freedompay_async.cli._common import UsageError, say
from freedompay_async.records import INTENT_STATE, TERMINAL_STATES

STDOUT = Path("-")


@attrs.define
class Prior:
    """
    What an earlier run recorded for one customer.

    Attributes:
        terminal: The terminal state recorded (never pay again), or None.
        open_intents: Pays handed to the gateway whose outcome was never recorded.
        intent_at: When the last of those was handed over (Unix time).
        doubt_at: When a pay last ended `ambiguous` or `pending` (it may have landed since).
    """

    terminal: str | None = None
    open_intents: int = 0
    intent_at: float | None = None
    doubt_at: float | None = None

    @property
    def last_write_at(self) -> float | None:
        """The last moment a pay may have been sent without a known outcome; None if never."""
        moments = [self.doubt_at, self.intent_at if self.open_intents else None]
        known = [moment for moment in moments if moment is not None]
        return max(known) if known else None


def _when(record: dict[str, Any]) -> float:
    """The record's time: `finished_at`, or an ISO `at` (older files); now when absent."""
    value = record.get("finished_at")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = record.get("at")
    if isinstance(text, str):
        try:
            return dt.datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    return dt.datetime.now(dt.UTC).timestamp()


def fold(priors: dict[str, Prior], record: dict[str, Any]) -> None:
    """Apply one record, in file order, to what is known about its customer."""
    customer, state, source = record["customer"], record["state"], record.get("source")
    if not isinstance(customer, str) or not isinstance(state, str):
        raise TypeError("customer and state must be strings")
    prior = priors.setdefault(customer, Prior())
    if state in TERMINAL_STATES:
        prior.terminal = prior.terminal or state
    elif source == "intent" or state == INTENT_STATE:
        prior.open_intents += 1
        prior.intent_at = _when(record)
    elif source == "pay":
        prior.open_intents = max(prior.open_intents - 1, 0)
        if state != "error":  # ambiguous or pending: the pay may have landed
            prior.doubt_at = _when(record)
        # error: the client proved that this pay charged nothing; an earlier doubt stays


def read_journal(path: Path) -> dict[str, Prior]:
    """
    Read an earlier run's output, if any.

    Raises:
        UsageError: The file exists but cannot be read.
    """
    priors: dict[str, Prior] = {}
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return priors
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                fold(priors, json.loads(text))
            except (ValueError, KeyError, TypeError):
                say(f"{path}:{number}: ignored an unreadable line")
    return priors


class Journal:
    """One complete JSON line per record, flushed as it is written."""

    def __init__(self, handle: TextIO, path: Path) -> None:
        self._handle = handle
        self.path = path
        self.written = 0
        self.failed: OSError | None = None

    def write(self, record: dict[str, Any]) -> bool:
        """Append *record*; False (and `failed` set) when the output cannot be written."""
        if self.failed is not None:
            return False
        try:
            self._handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
            self._handle.write("\n")
            self._handle.flush()
        except OSError as exc:
            self.failed = exc
            return False
        self.written += 1
        return True

    def close(self) -> None:
        """Close the file (never stdout); a failure to flush is kept in `failed`."""
        if self.path == STDOUT:
            return
        try:
            self._handle.close()
        except OSError as exc:
            self.failed = self.failed or exc


def open_journal(path: Path, *, resume: bool) -> Journal:
    """
    Open OUT for appending (`-`: stdout); without --resume a file must be new or empty.

    Raises:
        UsageError: The file holds an earlier run's outcomes, or cannot be opened.
    """
    if path == STDOUT:
        return Journal(sys.stdout, path)
    if not resume and path.exists() and path.is_file() and path.stat().st_size > 0:
        raise UsageError(
            f"{path} already holds the outcomes of an earlier run: pass --resume to continue "
            "that run (every row without a final outcome is checked by its status first)"
        )
    try:
        handle = path.open("a+", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(handle.tell() - 1)
            last = handle.read(1)
            handle.seek(0, os.SEEK_END)
            if last != "\n":
                handle.write("\n")  # a line cut short by a crash stays alone on its line
    except OSError as exc:
        handle.close()
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    return Journal(handle, path)
