"""
The one reader of pay CSV files (`customer,user_id,card_token[,key]`, a header row).

Every command that takes a CSV (`pay-batch`, `enqueue`) reads it here, so they agree on what a
row is and where it is:

- **Line numbers are the editor's**: a row's `line` is the physical line it starts on, counting
  every line of a multi-line quoted field.
- **Encoding**: `utf-8-sig` by default (a BOM is dropped); any Python codec, e.g. `cp1251` for
  Excel and 1C exports. `open_pay_csv` decodes the whole file once before the first row is
  handed out, and a file that does not decode is refused with the line and byte at fault — so
  nothing is paid from a file that would break half-way.
- **Delimiter**: `,`, `;`, tab or `|`, sniffed from the header (the one that yields the required
  columns), or given.
- **Nothing is silently missing**: every non-blank record comes out once, as a `PayRow` or a
  `BadRow` with its reason, and `PayCsv.rows` (counted up front) equals their number.
"""

from __future__ import annotations

import codecs
import csv
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

import attrs

from freedompay_async import ConfigurationError, PayRequest
from freedompay_async.masking import mask_token

if TYPE_CHECKING:
    import io
    from collections.abc import Iterator
    from types import TracebackType

__all__ = [
    "DEFAULT_ENCODING",
    "DELIMITERS",
    "REQUIRED_COLUMNS",
    "BadRow",
    "CsvInputError",
    "PayCsv",
    "PayRow",
    "open_pay_csv",
]

#: The encoding used when none is given: UTF-8, with or without a byte-order mark.
DEFAULT_ENCODING: Final = "utf-8-sig"
#: The delimiters tried, in order, when none is given.
DELIMITERS: Final = (",", ";", "\t", "|")
#: The columns every pay CSV must name; `key` is optional.
REQUIRED_COLUMNS: Final = ("customer", "user_id", "card_token")
_OPTIONAL_COLUMNS: Final = ("key",)


class CsvInputError(ValueError):
    """
    The CSV file cannot be used at all: unreadable, undecodable, or a header without the columns.

    A file error, not a gateway call's: it is a `ValueError`, outside the `FreedomPayError` tree.

    Attributes:
        path: The file.
        line: The line at fault (1-based), or None when the whole file is at fault.
    """

    def __init__(self, message: str, *, path: Path, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_csv_error, (str(self), self.path, self.line))


def _rebuild_csv_error(message: str, path: Path, line: int | None) -> CsvInputError:
    return CsvInputError(message, path=path, line=line)


def _token_repr(token: str) -> str:
    return f"'{mask_token(token)}'"


@attrs.frozen(kw_only=True)
class PayRow:
    """
    One good row of a pay CSV.

    Attributes:
        line: The line the row starts on (1-based, as an editor shows it).
        customer: The invoice's customer token.
        user_id: The payer's id.
        card_token: The saved card's token; shown masked in `repr`.
        key: The row's `key` column, or None when absent or empty.
    """

    line: int
    customer: str
    user_id: str
    card_token: str = attrs.field(repr=_token_repr)
    key: str | None = None

    def request(self, *, key: object = None) -> PayRequest:
        """
        Build the `PayRequest` for this row.

        Args:
            key: The request's correlation key (default: this row's `key`).

        Returns:
            The request.
        """
        return PayRequest(
            customer=self.customer,
            user_id=self.user_id,
            card_token=self.card_token,
            key=self.key if key is None else key,
        )


@attrs.frozen(kw_only=True)
class BadRow:
    """
    A record that cannot be paid, with the line it starts on and why.

    Attributes:
        line: The line the record starts on (1-based).
        reason: What is wrong, naming the field (never a card token).
    """

    line: int
    reason: str


def _check_decodes(path: Path, encoding: str) -> None:
    """Decode the whole file once; raise `CsvInputError` naming the first bad line and byte."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise CsvInputError(f"{path}: cannot read: {exc.strerror}", path=path) from None
    line = 1
    with handle:
        for raw in handle:
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as exc:
                before = raw[: exc.start]
                line += before.count(b"\r") - before.count(b"\r\n")
                column = exc.start - max(before.rfind(b"\r"), -1)
                shown = raw[exc.start : exc.start + 1].hex()
                raise CsvInputError(
                    f"{path}:{line}: byte {column} of the line (0x{shown}) is not "
                    f"valid {encoding}; nothing was paid. Give the file's encoding with "
                    "--encoding (cp1251 for most Excel and 1C exports)",
                    path=path,
                    line=line,
                ) from None
            line += 1 + raw.count(b"\r") - raw.count(b"\r\n") - (not raw.endswith(b"\n"))
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise CsvInputError(
                f"{path}:{line}: the file ends inside a {encoding} character; nothing was paid",
                path=path,
                line=line,
            ) from None


def _names(cells: list[str]) -> list[str]:
    return [cell.strip().lower() for cell in cells]


def _sniff(
    path: Path,
    header: str,
    delimiter: str | None,
    required: tuple[str, ...] = REQUIRED_COLUMNS,
    optional: tuple[str, ...] = _OPTIONAL_COLUMNS,
) -> tuple[str, list[str]]:
    """Pick the delimiter whose split of *header* names the required columns."""
    for candidate in (delimiter,) if delimiter else DELIMITERS:
        names = _names(next(csv.reader([header], delimiter=candidate), []))
        if all(column in names for column in required):
            if len(set(names)) != len(names):
                raise CsvInputError(
                    f"{path}:1: the header names a column twice: {header.strip()!r}",
                    path=path,
                    line=1,
                )
            return candidate, names
    tried = repr(delimiter) if delimiter else "comma, semicolon, tab or |"
    raise CsvInputError(
        f"{path}:1: the header must name the columns {', '.join(required)} (and "
        f"optionally {', '.join(optional)}), separated by {tried}; found "
        f"{header.strip()[:120]!r}",
        path=path,
        line=1,
    )


class PayCsv:
    """
    An open pay CSV: iterate it for `PayRow`s and `BadRow`s, in file order.

    Use `open_pay_csv` to build one. Iterating reads the file lazily (flat memory), once.

    Attributes:
        path: The file.
        encoding: The encoding it was decoded with.
        delimiter: The field delimiter (given or sniffed).
        columns: The header's column names, lower-cased.
        rows: How many non-blank records follow the header (good and bad together).
    """

    #: The columns a file of this kind must name, and those it may name.
    REQUIRED: tuple[str, ...] = REQUIRED_COLUMNS
    OPTIONAL: tuple[str, ...] = _OPTIONAL_COLUMNS

    def __init__(self, path: Path, *, encoding: str, delimiter: str, columns: list[str]) -> None:
        self.path = path
        self.encoding = encoding
        self.delimiter = delimiter
        self.columns = columns
        self.rows = 0
        self._index = {
            name: columns.index(name)
            for name in (*self.REQUIRED, *self.OPTIONAL)
            if name in columns
        }
        self._handle: io.TextIOWrapper | None = None

    def _open(self) -> io.TextIOWrapper:
        return self.path.open(encoding=self.encoding, newline="")

    def _count(self) -> None:
        with self._open() as handle:
            self.rows = sum(1 for _line, record in self._records(handle) if record != [])

    def _records(self, handle: io.TextIOWrapper) -> Iterator[tuple[int, list[str] | None]]:
        """Yield (start line, fields) per record after the header; fields None when unreadable."""
        reader = csv.reader(handle, delimiter=self.delimiter, strict=True)
        try:
            next(reader)
        except (StopIteration, csv.Error):
            return
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error:
                yield start, None
                continue
            yield start, [] if not any(cell.strip() for cell in record) else record

    def _row(self, line: int, record: list[str] | None) -> PayRow | BadRow:
        if record is None:
            return BadRow(line=line, reason="unreadable CSV (a quote is not closed or misplaced)")
        if len(record) > len(self.columns):
            return BadRow(
                line=line,
                reason=f"{len(record)} fields, but the header names {len(self.columns)}",
            )
        values = {
            name: record[index].strip() if index < len(record) else ""
            for name, index in self._index.items()
        }
        empty = [name for name in self.REQUIRED if not values[name]]
        if empty:
            return BadRow(
                line=line,
                reason=f"missing {', '.join(empty)} ({len(record)} of {len(self.columns)} fields)",
            )
        return self._build(line, values)

    def _build(self, line: int, values: dict[str, str]) -> PayRow | BadRow:
        """Turn one complete record's values (by column name) into a row, or a `BadRow`."""
        return PayRow(
            line=line,
            customer=values["customer"],
            user_id=values["user_id"],
            card_token=values["card_token"],
            key=values.get("key") or None,
        )

    def __iter__(self) -> Iterator[PayRow | BadRow]:
        if self._handle is not None:
            raise RuntimeError("a PayCsv is read once")
        self._handle = self._open()
        for line, record in self._records(self._handle):
            if record != []:
                yield self._row(line, record)

    def close(self) -> None:
        """Close the file, if iterating opened it."""
        if self._handle is not None:
            self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_pay_csv(
    path: Path | str,
    *,
    encoding: str = DEFAULT_ENCODING,
    delimiter: str | None = None,
    kind: type[PayCsv] = PayCsv,
) -> PayCsv:
    """
    Check a pay CSV from end to end and return it, ready to iterate.

    The whole file is decoded and its records counted first (a fast pass, in flat memory), so a
    file that would break half-way is refused before anything is paid.

    Args:
        path: The CSV file.
        encoding: A Python codec name (default `utf-8-sig`; `cp1251` for Cyrillic Windows).
        delimiter: One character; None sniffs `,` `;` tab `|` from the header.
        kind: The kind of file: `PayCsv`, or a subclass naming other columns.

    Returns:
        The open file; `rows` holds its number of non-blank records.

    Raises:
        CsvInputError: The file cannot be read or decoded, or its header lacks a column.
        ConfigurationError: *encoding* is not a codec, or *delimiter* is not one character.
    """
    path = Path(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigurationError(f"encoding: unknown codec {encoding!r}") from None
    if delimiter is not None and len(delimiter) != 1:
        raise ConfigurationError(f"delimiter must be one character, got {delimiter!r}")
    if path.is_dir():
        raise CsvInputError(f"{path}: is a directory, not a CSV file", path=path)
    _check_decodes(path, encoding)
    with path.open(encoding=encoding, newline="") as handle:
        header = handle.readline()
    if not header.strip():
        raise CsvInputError(f"{path}:1: the file is empty or starts with a blank line", path=path)
    sniffed, columns = _sniff(path, header, delimiter, kind.REQUIRED, kind.OPTIONAL)
    table = kind(path, encoding=encoding, delimiter=sniffed, columns=columns)
    table._count()  # noqa: SLF001 - the module's own helper
    return table
