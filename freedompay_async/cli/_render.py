"""
Progress and summaries, with `rich` when it is installed and stderr is a terminal, else plain.

Plain output is the same information as lines of text: progress every few seconds (a log file
gets a line every `PLAIN_INTERVAL` seconds) and the summary as aligned columns.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, Final, Self, TextIO

from freedompay_async.facts import OUTCOME_STATES

if TYPE_CHECKING:
    from freedompay_async import BatchProgress
    from freedompay_async.reporting import BatchSummary

STATES: Final[tuple[str, ...]] = OUTCOME_STATES
_STYLES: Final = {
    "paid": "green",
    "failed": "red",
    "expired": "yellow",
    "pending": "cyan",
    "ambiguous": "magenta",
    "error": "red",
}
#: Seconds between plain progress lines on a terminal, and when stderr is a file or a pipe.
TTY_INTERVAL: Final = 1.0
PLAIN_INTERVAL: Final = 10.0

Section = tuple[str, list[tuple[str, str]]]


def rich_available() -> bool:
    """Whether `rich` can be imported."""
    try:
        import rich  # noqa: F401, PLC0415 - optional
    except ImportError:
        return False
    return True


def use_rich(*, plain: bool, stream: TextIO) -> bool:
    """Draw with rich only when it is installed, wanted, and *stream* is a terminal."""
    return not plain and stream.isatty() and rich_available()


def states_text(by_state: dict[str, int]) -> str:
    """Per-state counts, non-zero states only: `paid 10 failed 2`."""
    return " ".join(f"{state} {by_state[state]}" for state in STATES if by_state.get(state))


def seconds(value: float | None) -> str:
    """Format a duration: `12.3 ms`, `1.25 s`, or `-`."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def batch_facts(
    summary: BatchSummary, *, requests: int | None = None, done: int | None = None
) -> list[tuple[str, str]]:
    """The performance lines of a summary; *requests* and *done* (rows) override its counts."""
    throughput = summary.throughput
    if done is not None:
        throughput = done / summary.elapsed if summary.elapsed > 0 else 0.0
    return [
        ("requests sent", str(summary.requests if requests is None else requests)),
        ("retries (requests beyond the first per invoice)", str(summary.retries)),
        ("throughput", f"{throughput:,.0f} invoices/s"),
        ("latency p50", seconds(summary.latency_p50)),
        ("latency p99", seconds(summary.latency_p99)),
        ("latency max", seconds(summary.latency_max)),
        ("elapsed", seconds(summary.elapsed)),
    ]


class Progress:
    """Progress of a run on stderr: a rich bar, or a plain line every few seconds."""

    def __init__(self, description: str, total: int | None, *, rich: bool) -> None:
        self.description = description
        self.total = total
        self.done = 0
        self.by_state: dict[str, int] = dict.fromkeys(STATES, 0)
        self.waiting = False
        self.held = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._interval = TTY_INTERVAL if sys.stderr.isatty() else PLAIN_INTERVAL
        self._bar: Any = None
        self._task: Any = None
        if rich:
            from rich.console import Console  # noqa: PLC0415 - optional
            from rich.progress import (  # noqa: PLC0415 - optional
                BarColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as Bar  # noqa: PLC0415 - optional

            self._bar = Bar(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._bar.add_task(description, total=total)

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        sys.stderr.write(self.line() + "\n")  # the final line, whole, whatever the width
        sys.stderr.flush()

    def line(self) -> str:
        """The progress as one line of text."""
        total = f"/{self.total}" if self.total is not None else ""
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        elapsed = time.monotonic() - self._start
        waiting = f" waiting for the gateway ({self.held} held)" if self.waiting else ""
        return (
            f"{self.description}: {self.done}{total}{share} {states_text(self.by_state)}"
            f"{waiting} [{elapsed:.1f} s]"
        ).replace("  ", " ")

    def batch(self, progress: BatchProgress) -> None:
        """Follow a batch's `on_progress`: show at once when it starts or stops waiting."""
        changed = progress.waiting_for_gateway != self.waiting
        self.waiting = progress.waiting_for_gateway
        self.held = progress.held
        if self._bar is not None:
            suffix = " (waiting for the gateway)" if self.waiting else ""
            self._bar.update(self._task, description=self.description + suffix)
        elif changed:
            self._last = time.monotonic()
            sys.stderr.write(self.line() + "\n")
            sys.stderr.flush()

    def advance(self, state: str | None) -> None:
        """Count one row done, in *state* (None for a malformed row)."""
        self.done += 1
        if state is not None:
            self.by_state[state] = self.by_state.get(state, 0) + 1
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            sys.stderr.write(self.line() + "\n")
            sys.stderr.flush()


def _plain_outcomes(columns: dict[str, dict[str, int]]) -> list[str]:
    names = list(columns)
    width = max(10, *(len(name) for name in names))
    lines = ["Outcomes", "  " + "state".ljust(10) + "".join(n.rjust(width + 2) for n in names)]
    for state in (*STATES, "total"):
        cells = [
            str(sum(counts.values()) if state == "total" else counts.get(state, 0))
            for counts in columns.values()
        ]
        lines.append("  " + state.ljust(10) + "".join(c.rjust(width + 2) for c in cells))
    return lines


def _plain_section(title: str, rows: list[tuple[str, str]]) -> list[str]:
    width = max((len(name) for name, _ in rows), default=0)
    return [title, *(f"  {name.ljust(width)}  {value}" for name, value in rows)]


def render(
    stream: TextIO,
    columns: dict[str, dict[str, int]],
    sections: list[Section],
    footer: str | None,
    *,
    rich: bool,
) -> None:
    """Print the outcome table, the sections and a footer line on *stream*."""
    if not rich:
        lines = _plain_outcomes(columns)
        for title, rows in sections:
            if rows:
                lines.extend(_plain_section(title, rows))
        if footer:
            lines.append(footer)
        stream.write("\n".join(lines) + "\n")
        stream.flush()
        return
    _render_rich(stream, columns, sections, footer)


def _render_rich(
    stream: TextIO, columns: dict[str, dict[str, int]], sections: list[Section], footer: str | None
) -> None:
    from rich.console import Console  # noqa: PLC0415 - optional
    from rich.table import Table  # noqa: PLC0415 - optional
    from rich.text import Text  # noqa: PLC0415 - optional

    console = Console(file=stream)
    table = Table(title="Outcomes", title_justify="left")
    table.add_column("state")
    for name in columns:
        table.add_column(name, justify="right")
    for state in STATES:
        cells = [str(counts.get(state, 0)) for counts in columns.values()]
        table.add_row(f"[{_STYLES[state]}]{state}[/]", *cells)
    table.add_section()
    table.add_row("[bold]total[/]", *(str(sum(c.values())) for c in columns.values()))
    console.print(table)
    for title, rows in sections:
        if not rows:
            continue
        facts = Table(title=title, title_justify="left", show_header=False)
        facts.add_column("what")
        facts.add_column("value")
        for name, value in rows:
            facts.add_row(Text(name), Text(value))
        console.print(facts)
    if footer:
        console.print(footer, markup=False, highlight=False, soft_wrap=True)


def render_json(stream: TextIO, data: dict[str, Any]) -> None:
    """Print *data* as one JSON document on *stream*."""
    stream.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    stream.flush()
