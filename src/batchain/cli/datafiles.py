"""Streaming dataset readers and result writers for the command line.

Readers yield one :class:`Record` at a time (a 1 GB file is never loaded whole) and
remember where each record came from, so bad input is reported as ``file:line: what is
wrong``. A malformed row never stops a run: it is collected as a :class:`BadRow`,
skipped, and counted. Skipping is deterministic, so reading the same file again (to
resume a job) yields the same records in the same order, which the engine relies on to
continue where it stopped.

Writers stream :class:`~batchain.job.ItemResult` rows to JSONL, CSV/TSV or stdout, one row
per item: ``index``, ``id`` (the input's ``id`` field, if any), ``status``, ``output``,
``error``, ``cost`` (USD billed for the item's own model calls). Files are written under
a temporary name and renamed at the end, so a file with the final name is always complete.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal, cast

from batchain.errors import InputError, OutputError

if TYPE_CHECKING:  # the engine (and LangChain) load only when results are written
    from batchain.job import ItemResult

__all__ = [
    "INPUT_FORMATS",
    "OUTPUT_COLUMNS",
    "OUTPUT_FORMATS",
    "BadRow",
    "InputError",
    "InputReader",
    "OutputError",
    "Record",
    "ResultWriter",
    "input_id",
    "result_row",
]

InputFormat = Literal["jsonl", "csv", "tsv", "parquet"]
OutputFormat = Literal["jsonl", "csv", "tsv"]

INPUT_FORMATS: Final[tuple[str, ...]] = ("jsonl", "csv", "tsv", "parquet")
OUTPUT_FORMATS: Final[tuple[str, ...]] = ("jsonl", "csv", "tsv")
OUTPUT_COLUMNS: Final[tuple[str, ...]] = ("index", "id", "status", "output", "error", "cost")

STDIN_NAME: Final = "<stdin>"
_EXTENSIONS: Final[dict[str, str]] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_DELIMITERS: Final[dict[str, str]] = {"csv": ",", "tsv": "\t"}
#: bad rows kept for reporting; all of them are counted
_KEEP_BAD: Final = 1000
#: a CSV field may be as long as a long document, not just csv's default 128 KiB
_CSV_FIELD_LIMIT: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BadRow:
    """One skipped input row and why."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class Record:
    """One input value and where it came from (line number, or row number for Parquet)."""

    value: Any
    file: str
    line: int


# -- input -----------------------------------------------------------------------------------


def _format_of(name: str, explicit: str | None) -> tuple[str, bool]:
    """``(format, gzipped)`` for a path, from ``explicit`` or the extension."""
    path = Path(name.lower())
    gzipped = path.suffix == ".gz"
    if gzipped:
        path = path.with_suffix("")
    if explicit is not None:
        if explicit not in INPUT_FORMATS:
            raise InputError(f"unknown input format {explicit!r}; use one of {', '.join(INPUT_FORMATS)}")
        return explicit, gzipped
    if name == "-":
        return "jsonl", False
    fmt = _EXTENSIONS.get(path.suffix)
    if fmt is None:
        raise InputError(
            f"cannot tell the format of {name} from its extension; "
            f"use .jsonl, .csv, .tsv or .parquet (optionally .gz), or pass --format"
        )
    return fmt, gzipped


class InputReader:
    """Lazily read records from a JSONL, CSV/TSV or Parquet file, or JSONL on stdin (``-``).

    Problems with the input as a whole (missing file, unknown format, no pyarrow) raise
    :class:`InputError` here, before any job exists. Problems with single rows are
    collected in :attr:`bad_rows` and counted in :attr:`n_bad` while iterating.
    """

    def __init__(
        self,
        source: str,
        *,
        fmt: str | None = None,
        limit: int | None = None,
        stdin: IO[bytes] | None = None,
    ) -> None:
        if limit is not None and limit < 0:
            raise InputError(f"--limit must not be negative, got {limit}")
        self.source = source
        self.name = STDIN_NAME if source == "-" else source
        self.format, self.gzipped = _format_of(source, fmt)
        self.limit = limit
        self._stdin = stdin
        self.bad_rows: list[BadRow] = []
        self.n_bad = 0
        self.n_read = 0
        #: the line (row, for Parquet) of every record read, by position: item index -> line
        self._lines: array[int] = array("Q")
        self._check_readable()

    def _check_readable(self) -> None:
        if self.source == "-":
            if self.format == "parquet":
                raise InputError("Parquet cannot be read from stdin; pass a file path")
            return
        path = Path(self.source)
        if not path.exists():
            raise InputError(f"input file not found: {self.source}")
        if path.is_dir():
            raise InputError(f"input is a directory, not a file: {self.source}")
        if not os.access(path, os.R_OK):
            raise InputError(f"input file is not readable: {self.source}")
        if self.format == "parquet":
            _require_pyarrow()

    def __iter__(self) -> Iterator[Record]:
        if self.limit == 0:
            return
        for record in self._records():
            self.n_read += 1
            self._lines.append(record.line)
            yield record
            if self.limit is not None and self.n_read >= self.limit:
                return

    def count_rows(self) -> int | None:
        """How many rows the input has, counted cheaply before it is read (for the progress
        line's total): newlines for JSONL, rows for CSV/TSV (a quoted field may span lines),
        the footer for Parquet; at most ``limit``. An estimate (blank and malformed rows
        count); None for stdin, which can be read only once, or when it cannot be counted."""
        if self.source == "-":
            return None
        try:
            n = self._count()
        except Exception:  # the count is only for show: reading the rows says what is wrong
            return None
        return n if self.limit is None else min(n, self.limit)

    def _count(self) -> int:
        if self.format == "parquet":
            return int(_require_pyarrow().ParquetFile(self.source).metadata.num_rows)
        with contextlib.ExitStack() as stack:
            stream = self._open_binary(stack)
            if self.format != "jsonl":
                text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
                csv.field_size_limit(_CSV_FIELD_LIMIT)
                rows = sum(1 for row in csv.reader(text, delimiter=_DELIMITERS[self.format]) if row)
                return max(rows - 1, 0)  # the header
            lines, last = 0, b"\n"
            while chunk := stream.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
            return lines + (last != b"\n")  # a last line without its newline

    def where(self, index: int) -> str | None:
        """``file:line`` of the ``index``-th record read (a job's item ``index``), if read."""
        if 0 <= index < len(self._lines):
            return f"{self.name}:{self._lines[index]}"
        return None

    def values(self) -> Iterator[Any]:
        """Just the values, for ``batchain.run``."""
        for record in self:
            yield record.value

    def _bad(self, line: int, message: str) -> None:
        self.n_bad += 1
        if len(self.bad_rows) < _KEEP_BAD:
            self.bad_rows.append(BadRow(self.name, line, message))

    def _records(self) -> Iterator[Record]:
        if self.format == "parquet":
            yield from self._parquet_records()
            return
        with contextlib.ExitStack() as stack:
            stream = self._open_binary(stack)
            if self.format == "jsonl":
                yield from self._jsonl_records(stream)
            else:
                yield from self._csv_records(stream, _DELIMITERS[self.format])

    def _open_binary(self, stack: contextlib.ExitStack) -> IO[bytes]:
        if self.source == "-":
            # stdin stays open: it belongs to the process, not to this reader
            stream: IO[bytes] = self._stdin if self._stdin is not None else sys.stdin.buffer
        else:
            try:
                stream = stack.enter_context(open(self.source, "rb"))  # noqa: SIM115
            except OSError as exc:
                raise InputError(f"cannot open {self.source}: {exc.strerror}") from exc
        if self.gzipped:
            return cast(IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=stream, mode="rb")))
        return stream

    def _jsonl_records(self, stream: IO[bytes]) -> Iterator[Record]:
        for lineno, raw in enumerate(_read_lines(stream, self.name), start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark is not part of the first value
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._bad(lineno, f"not valid UTF-8 (byte {exc.start + 1} of the line)")
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                self._bad(lineno, f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            yield Record(value, self.name, lineno)

    def _csv_records(self, stream: IO[bytes], delimiter: str) -> Iterator[Record]:
        # surrogateescape keeps undecodable bytes visible per row instead of aborting the
        # whole file; such rows are reported below
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
        csv.field_size_limit(_CSV_FIELD_LIMIT)
        try:
            yield from self._csv_rows(csv.reader(text, delimiter=delimiter))
        finally:
            text.detach()  # the stream beneath belongs to the caller (it may be stdin)

    def _csv_rows(self, reader: Any) -> Iterator[Record]:
        header = self._csv_header(reader)
        if header is None:
            return
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                self._bad(start, f"malformed {self.format.upper()} row: {exc}")
                if reader.line_num < start:  # nothing consumed: give up rather than spin
                    return
                continue
            record = self._csv_record(header, row, start)
            if record is not None:
                yield record

    def _csv_header(self, reader: Any) -> list[str] | None:
        try:
            header: list[str] | None = next(reader, None)
        except csv.Error as exc:
            raise InputError(f"{self.name}:1: malformed header row: {exc}") from exc
        if header is None:
            return None
        names = [h.strip() for h in header]
        if not _valid_utf8(names):
            raise InputError(f"{self.name}:1: header row is not valid UTF-8")
        seen: set[str] = set()
        for name in names:
            if not name:
                raise InputError(f"{self.name}:1: header row has an empty column name")
            if name in seen:
                raise InputError(f"{self.name}:1: duplicate column name {name!r}")
            seen.add(name)
        return names

    def _csv_record(self, header: list[str], row: list[str], line: int) -> Record | None:
        if not row:  # a blank line
            return None
        if len(row) != len(header):
            self._bad(line, f"expected {len(header)} fields (as in the header), got {len(row)}")
            return None
        if not _valid_utf8(row):
            self._bad(line, "not valid UTF-8")
            return None
        return Record(dict(zip(header, row, strict=True)), self.name, line)

    def _parquet_records(self) -> Iterator[Record]:
        pq = _require_pyarrow()
        try:
            parquet = pq.ParquetFile(self.source)
        except Exception as exc:  # pyarrow raises its own error types for bad files
            raise InputError(f"cannot read Parquet file {self.source}: {exc}") from exc
        row = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for value in batch.to_pylist():
                row += 1
                yield Record(_plain(value), self.name, row)


def _read_lines(stream: IO[bytes], name: str) -> Iterator[bytes]:
    try:
        yield from stream
    except (OSError, EOFError) as exc:  # e.g. a truncated .gz file
        raise InputError(f"{name}: read failed: {exc}") from exc


def _valid_utf8(values: Iterable[str]) -> bool:
    try:
        "\x00".join(values).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _require_pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'batchain[parquet]'") from None
    return pq


def _plain(value: Any) -> Any:
    """Parquet cells as JSON data: dates as ISO strings, decimals as strings, bytes as text.

    Inputs are stored as JSON so that a resumed item gets exactly the same value; types
    JSON cannot hold would otherwise fail the item.
    """
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


# -- output ----------------------------------------------------------------------------------


def input_id(value: Any) -> Any:
    """The input's own ``id`` field, if it is a mapping with one."""
    if isinstance(value, dict):
        return value.get("id")
    return None


def result_row(result: ItemResult, cost: Decimal | None = None) -> dict[str, Any]:
    """One output row as JSON data (outputs serialised faithfully, messages included).

    ``cost`` is what the item's own model calls were billed, in USD (None: not known).
    """
    from batchain.serialize import to_jsonable

    return {
        "index": result.index,
        "id": to_jsonable(input_id(result.input)),
        "status": result.status.value,
        "output": to_jsonable(result.output),
        "error": result.error,
        "cost": None if cost is None else float(cost),
    }


def _is_device(target: str) -> bool:
    """``/dev/null``, ``/dev/stderr``, a named pipe: written directly, JSONL by default."""
    path = Path(target)
    return path.exists() and not path.is_file() and not path.is_dir()


def _output_format(target: str, explicit: str | None) -> tuple[str, bool]:
    if Path(target).is_dir():
        raise OutputError(f"output is a directory: {target}")
    if _is_device(target) and explicit is None:
        return "jsonl", False
    path = Path(target.lower())
    gzipped = path.suffix == ".gz"
    if gzipped:
        path = path.with_suffix("")
    if explicit is not None:
        if explicit not in OUTPUT_FORMATS:
            raise OutputError(f"unknown output format {explicit!r}; use one of {', '.join(OUTPUT_FORMATS)}")
        return explicit, gzipped
    fmt = _EXTENSIONS.get(path.suffix)
    if fmt not in OUTPUT_FORMATS:
        raise OutputError(f"cannot tell the output format of {target} from its extension; use .jsonl or .csv")
    return fmt, gzipped


class ResultWriter:
    """Write result rows to a file (JSONL/CSV/TSV by extension, optionally .gz) or stdout.

    ``target`` of ``None`` or ``"-"`` means stdout (JSONL unless ``fmt`` says otherwise).
    Use as a context manager: on success the temporary file is renamed into place, on an
    exception it is removed and any earlier file of that name is left untouched.
    """

    def __init__(self, target: str | None, *, fmt: str | None = None, stdout: IO[str] | None = None) -> None:
        self.to_stdout = target in (None, "-")
        self.target = "-" if target is None else target
        if self.to_stdout:
            self.format, self.gzipped = fmt or "jsonl", False
            if self.format not in OUTPUT_FORMATS:
                raise OutputError(f"unknown output format {fmt!r}; use one of {', '.join(OUTPUT_FORMATS)}")
        else:
            self.format, self.gzipped = _output_format(self.target, fmt)
        self._stdout = stdout
        self._tmp: Path | None = None
        self._binary: IO[bytes] | None = None
        self._text: IO[str] | None = None
        self._csv: Any = None
        self.n_written = 0

    def __enter__(self) -> ResultWriter:
        self._text = self._open()
        if self.format != "jsonl":
            self._csv = csv.writer(self._text, delimiter=_DELIMITERS[self.format], lineterminator="\n")
            self._csv.writerow(OUTPUT_COLUMNS)
        return self

    def _open(self) -> IO[str]:
        if self.to_stdout:
            return self._stdout if self._stdout is not None else sys.stdout
        final = Path(self.target)
        if final.is_dir():
            raise OutputError(f"output is a directory: {self.target}")
        if _is_device(self.target):
            return open(final, "w", encoding="utf-8", newline="")  # closed in __exit__
        self._tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._binary = open(self._tmp, "wb")  # noqa: SIM115 - closed in __exit__
        except OSError as exc:
            raise OutputError(f"cannot write {self.target}: {exc.strerror}") from exc
        raw = (
            cast(IO[bytes], gzip.GzipFile(fileobj=self._binary, mode="wb")) if self.gzipped else self._binary
        )
        return io.TextIOWrapper(raw, encoding="utf-8", newline="")

    def write(self, result: ItemResult, cost: Decimal | None = None) -> None:
        row = result_row(result, cost)
        assert self._text is not None, "use ResultWriter as a context manager"
        if self._csv is not None:
            self._csv.writerow([_cell(row[c]) for c in OUTPUT_COLUMNS])
        else:
            self._text.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.n_written += 1

    def write_all(self, results: Iterable[ItemResult]) -> int:
        for result in results:
            self.write(result)
        return self.n_written

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._text is None:
            return
        if self.to_stdout:
            self._text.flush()
            return
        self._text.close()  # closes the gzip layer and the file beneath it
        if self._binary is not None and not self._binary.closed:
            self._binary.close()
        if self._tmp is None:  # a device, written directly
            return
        if exc_type is None:
            os.replace(self._tmp, self.target)
        else:
            self._tmp.unlink(missing_ok=True)


def _cell(value: Any) -> str:
    """CSV cells: strings as they are, empty for null, everything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float):  # plain decimals, never 7.95e-06, for spreadsheets
        return format(Decimal(repr(value)), "f")
    return json.dumps(value, ensure_ascii=False)
