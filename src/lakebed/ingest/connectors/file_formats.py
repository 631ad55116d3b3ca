"""File contents into Arrow: CSV, JSON, NDJSON and Parquet, plain or gzip/zstd compressed.

Each parser returns a `ParsedFile`: the rows as an Arrow table, each row's position in the
file, and the records that could not be parsed (`Reject`s, kept for quarantine). Positions
are 1-based line numbers for CSV (the header is line 1) and NDJSON, and 0-based record
indexes for JSON arrays and Parquet. A file rejected as a whole (truncated compression,
an invalid JSON document, a corrupt Parquet file) gives one `Reject` whose origin is the
file's path without a position.

CSV and NDJSON are parsed on a fast path, one multi-threaded pyarrow read of the whole
file, whenever every line of the file is one record; any other file (rows with the wrong
number of columns, invalid UTF-8, quoted newlines, blank lines) takes a careful path that
finds each record's line and rejects only the bad records.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lakebed.ingest.base import Reject

__all__ = [
    "Compression",
    "CsvOptions",
    "FileFormat",
    "JsonOptions",
    "ParsedFile",
    "compression_from_name",
    "decompress",
    "format_from_name",
    "parse_file",
]

FileFormat = Literal["csv", "json", "ndjson", "parquet"]
Compression = Literal["gzip", "zstd", "none"]

FORMAT_EXTENSIONS: dict[str, FileFormat] = {
    ".csv": "csv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
}
COMPRESSION_EXTENSIONS: dict[str, Compression] = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}

# Big enough that pyarrow's threads get few, large blocks; a record longer than a block is
# read again with one block for the whole file.
FAST_BLOCK_SIZE = 16 << 20
MAX_BLOCK_SIZE = 2**31 - 1
# A file rejected as a whole keeps this much of its bytes in quarantine; the file itself
# stays where it is.
WHOLE_FILE_RAW_LIMIT = 8 << 20

_SURROGATE = re.compile("[\udc80-\udcff]")
_Positions = npt.NDArray[np.int64]


class CsvOptions(BaseModel):
    """How CSV files are read (`csv:` of a files source)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    header: bool = True
    quote_char: str | None = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    null_values: list[str] = Field(default_factory=lambda: ["", "NULL"])
    column_names: list[str] | None = Field(
        default=None, description="names of the columns; with header: true the header is skipped"
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        return _check_encoding(value)


class JsonOptions(BaseModel):
    """How JSON and NDJSON files are read (`json:` of a files source)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    records_path: str | None = Field(
        default=None,
        description="dotted path of the records array in a .json document; default: the "
        "document itself (an array of records, or one object as one record)",
    )
    encoding: str = "utf-8"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        return _check_encoding(value)


def _check_encoding(value: str) -> str:
    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError(f"unknown encoding {value!r}") from None
    return value


def format_from_name(name: str) -> FileFormat | None:
    """The format a file name's extension says, looking through .gz/.zst; None if unknown."""
    lower = name.lower()
    for extension in COMPRESSION_EXTENSIONS:
        if lower.endswith(extension):
            lower = lower[: -len(extension)]
            break
    for extension, file_format in FORMAT_EXTENSIONS.items():
        if lower.endswith(extension):
            return file_format
    return None


def compression_from_name(name: str) -> Compression:
    lower = name.lower()
    for extension, compression in COMPRESSION_EXTENSIONS.items():
        if lower.endswith(extension):
            return compression
    return "none"


@dataclass
class ParsedFile:
    """One file's rows, the position of each row in the file, and its rejected records."""

    table: pa.Table
    positions: _Positions
    rejects: list[Reject] = field(default_factory=list)

    @classmethod
    def empty(cls, rejects: Sequence[Reject] = ()) -> ParsedFile:
        return cls(pa.table({}), np.empty(0, dtype=np.int64), list(rejects))


def parse_file(
    raw: bytes,
    *,
    file_format: FileFormat,
    compression: Compression,
    origin: str,
    csv_options: CsvOptions,
    json_options: JsonOptions,
) -> ParsedFile:
    """Parse one file's bytes as stored (`raw`, maybe compressed); `origin` is the file's path
    as it appears in origins (`<origin>:<position>`)."""
    try:
        data = decompress(raw, compression)
    except (OSError, pa.ArrowException) as exc:
        return ParsedFile.empty(
            [_whole_file_reject(raw, f"cannot {compression}-decompress: {exc}", origin)]
        )
    if not data:
        return ParsedFile.empty()
    if file_format == "csv":
        return _parse_csv(data, csv_options, origin)
    if file_format == "ndjson":
        return _parse_ndjson(data, json_options, origin)
    if file_format == "json":
        return _parse_json(data, json_options, origin)
    return _parse_parquet(data, origin)


def decompress(raw: bytes, compression: Compression) -> bytes:
    """A file's bytes as stored, uncompressed (raises OSError or ArrowException if broken)."""
    if compression == "none" or not raw:
        return raw
    stream = pa.CompressedInputStream(pa.BufferReader(raw), compression)
    return bytes(stream.read())


def _whole_file_reject(raw: bytes | str, error: str, origin: str) -> Reject:
    if len(raw) > WHOLE_FILE_RAW_LIMIT:
        error += f" (raw cut to its first {WHOLE_FILE_RAW_LIMIT} of {len(raw)} characters/bytes)"
        raw = raw[:WHOLE_FILE_RAW_LIMIT]
    return Reject(raw=raw, error=error, origin=origin)


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


def _transcode(data: bytes, encoding: str) -> tuple[bytes, str | None]:
    """`data` as UTF-8 when it decodes cleanly (the text is None), else its text with each
    undecodable byte kept as a lone surrogate (PEP 383) for the careful path."""
    if _is_utf8(encoding):
        return data, None
    text = data.decode(encoding, errors="surrogateescape")
    if _SURROGATE.search(text):
        return b"", text
    return text.encode("utf-8"), None


def _valid_utf8(data: bytes | pa.Buffer) -> bool:
    """Whether `data` is valid UTF-8, checked by Arrow's (SIMD) validation without a copy."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64).tobytes())
    values = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, values])
    try:
        whole.cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def _line_count(data: bytes) -> int | None:
    """Lines in `data`, ignoring line breaks at its end; None when some line ends in a bare
    CR (pyarrow ends a record there too, so lines cannot be counted by LF alone)."""
    end = len(data)
    while end and data[end - 1] in b"\r\n":
        end -= 1
    if end == 0:
        return 0
    newlines = _count_byte(data, 0x0A, end)
    if data.find(b"\r", 0, end) != -1 and _count_byte(data, 0x0D, end) != newlines:
        return None
    return newlines + 1


def _count_byte(data: bytes, byte: int, end: int) -> int:
    """How often `byte` occurs in `data[:end]`, a cache-sized slice at a time: one
    comparison of the whole file would first allocate (and fault in) a file-sized mask."""
    view = np.frombuffer(data, dtype=np.uint8, count=end)
    step = 1 << 20
    counts = (np.count_nonzero(view[at : at + step] == byte) for at in range(0, end, step))
    return sum(int(count) for count in counts)


# -- CSV -------------------------------------------------------------------------------------


def _parse_csv(data: bytes, options: CsvOptions, origin: str) -> ParsedFile:
    utf8, text = _transcode(data, options.encoding)
    if text is None:
        fast = _csv_fast(utf8, options, origin) if _valid_utf8(utf8) else None
        if fast is not None:
            return fast
        text = utf8.decode("utf-8", errors="surrogateescape")
    return _csv_careful(text, options, origin)


def _csv_arrow_options(
    options: CsvOptions, *, careful: bool, size: int, invalid: list[Any] | None = None
) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions, pa_csv.ConvertOptions]:
    names = list(options.column_names) if options.column_names else None
    read = pa_csv.ReadOptions(
        use_threads=not careful,
        block_size=min(max(size + 1, FAST_BLOCK_SIZE), MAX_BLOCK_SIZE)
        if careful
        else FAST_BLOCK_SIZE,
        column_names=names,
        skip_rows=1 if (names and options.header) else 0,
        autogenerate_column_names=not names and not options.header,
    )
    parse = pa_csv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quote_char if options.quote_char is not None else False,
        newlines_in_values=careful,
        invalid_row_handler=None if invalid is None else _collect_into(invalid),
    )
    convert = pa_csv.ConvertOptions(
        null_values=list(options.null_values),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    return read, parse, convert


def _collect_into(invalid: list[Any]) -> Callable[[Any], str]:
    """An invalid-row handler that keeps each bad row (pyarrow's InvalidRow) and skips it."""

    def handler(row: Any) -> str:
        invalid.append(row)
        return "skip"

    return handler


def _csv_fast(data: bytes, options: CsvOptions, origin: str) -> ParsedFile | None:
    """A multi-threaded read; None unless each line of `data` is exactly one record. Rows
    with the wrong number of columns cost one more (serial) read, to learn their lines."""
    invalid: list[Any] = []
    read, parse, convert = _csv_arrow_options(
        options, careful=False, size=len(data), invalid=invalid
    )
    try:
        table = pa_csv.read_csv(pa.py_buffer(data), read, parse, convert)
    except pa.ArrowInvalid as exc:
        if "straddling" not in str(exc):
            return None
        invalid.clear()
        read.block_size = min(len(data) + 1, MAX_BLOCK_SIZE)
        try:
            table = pa_csv.read_csv(pa.py_buffer(data), read, parse, convert)
        except pa.ArrowInvalid:
            return None
    header_lines = 1 if options.header else 0
    if _line_count(data) != table.num_rows + header_lines + len(invalid):
        return None  # blank lines or records over several lines: the careful path
    first = header_lines + 1
    positions = np.arange(first, first + table.num_rows + len(invalid), dtype=np.int64)
    if not invalid:
        return ParsedFile(table, positions)
    # Only a serial read numbers the bad rows; with one record per line, number = line.
    invalid.clear()
    read.use_threads = False
    try:
        table = pa_csv.read_csv(pa.py_buffer(data), read, parse, convert)
    except pa.ArrowInvalid:
        return None
    lines = np.array([row.number for row in invalid], dtype=np.int64)
    if (lines <= 0).any():
        return None
    rejects = [
        Reject(raw=row.text, error=_wrong_columns(row), origin=f"{origin}:{row.number}")
        for row in invalid
    ]
    return ParsedFile(table, positions[~np.isin(positions, lines)], rejects)


def _wrong_columns(row: Any) -> str:
    return f"CSV parse error: Expected {row.expected_columns} columns, got {row.actual_columns}"


def _csv_careful(text: str, options: CsvOptions, origin: str) -> ParsedFile:
    """Find each record's lines, reject records with invalid bytes or broken quoting, then
    parse the rest serially, rejecting rows with the wrong number of columns."""
    text = text.removeprefix("\ufeff")
    lines = list(io.StringIO(text, newline=""))
    records, broken = _csv_records(lines, options)
    rejects: list[tuple[int, Reject]] = []
    bad_lines = {i for i, line in enumerate(lines, 1) if _SURROGATE.search(line)}
    undecodable = [
        (start, end)
        for start, end in (records if bad_lines else [])
        if bad_lines.intersection(range(start, end + 1))
    ]
    faults = [
        (start, end, f"invalid {options.encoding} bytes in the record")
        for start, end in undecodable
    ]
    for start, end, error in [*faults, *broken]:
        raw_text = "".join(lines[start - 1 : end])
        raw: str | bytes = raw_text
        if _SURROGATE.search(raw_text):
            raw = raw_text.encode(options.encoding, "surrogateescape")  # the bytes as in the file
        rejects.append((start, Reject(raw=raw, error=error, origin=f"{origin}:{start}")))
    dropped = {(start, end) for start, end, _ in [*faults, *broken]}
    kept = [span for span in records if span not in dropped]
    for start, end in dropped:
        lines[start - 1 : end] = ["\n"] * (end - start + 1)  # blank lines keep line numbers

    invalid: list[Any] = []
    cleaned = "".join(lines).encode("utf-8", errors="surrogateescape")
    read, parse, convert = _csv_arrow_options(
        options, careful=True, size=len(cleaned), invalid=invalid
    )
    try:
        table = pa_csv.read_csv(pa.py_buffer(cleaned), read, parse, convert)
    except pa.ArrowInvalid as exc:
        if len(kept) > (1 if options.header else 0):
            rejects.append((0, _whole_file_reject(text, f"CSV parse error: {exc}", origin)))
            return ParsedFile.empty([reject for _, reject in sorted(rejects, key=_first)])
        # Nothing but a header (or nothing at all) is left: pyarrow cannot infer columns.
        table = _header_only_table(lines, kept, options)
    invalid_numbers = set()
    for row in invalid:
        number = row.number
        line = kept[number - 1][0] if 0 < number <= len(kept) else 0
        reject = Reject(raw=row.text, error=_wrong_columns(row), origin=f"{origin}:{line}")
        rejects.append((line, reject))
        invalid_numbers.add(number)
    header_records = 1 if options.header else 0
    positions = np.array(
        [
            span[0]
            for number, span in enumerate(kept, 1)
            if number > header_records and number not in invalid_numbers
        ],
        dtype=np.int64,
    )
    if len(positions) != table.num_rows:
        # Python's csv module split the records differently from pyarrow: fall back to
        # record ordinals rather than claim wrong line numbers.
        positions = np.arange(1, table.num_rows + 1, dtype=np.int64)
    return ParsedFile(table, positions, [reject for _, reject in sorted(rejects, key=_first)])


def _first(item: tuple[int, Reject]) -> int:
    return item[0]


def _csv_records(
    lines: list[str], options: CsvOptions
) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
    """(first, last) line of each non-empty record, and the lines where a quote opens a
    field that spans lines but is not properly closed, with the reason.

    Quoting is read as pyarrow reads it: a quote opens a field only at its start, text after
    a closing quote is kept, and a quote in the middle of a field is text. A field that runs
    over several lines must be closed by a quote followed by a delimiter or the line's end;
    otherwise its opening quote is a stray one (it would swallow the lines after it into
    one field), and only that line is rejected.
    """
    # Quoted fields may be as long as the file; the limit is process-wide, so only raise it.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_BLOCK_SIZE))
    dialect: dict[str, Any] = {"delimiter": options.delimiter}
    if options.quote_char is None:
        dialect["quoting"] = csv.QUOTE_NONE
    else:
        dialect["quotechar"] = options.quote_char
    scanned = [line.replace("\x00", "\x01") for line in lines]  # the csv module rejects NUL
    records: list[tuple[int, int]] = []
    broken: list[tuple[int, int, str]] = []
    consumed = 0  # lines read so far
    while consumed < len(scanned):
        reader = csv.reader(iter(scanned[consumed:]), **dialect)
        base = consumed
        for row in reader:
            start, end = consumed + 1, base + reader.line_num
            if end > start and not _closed_properly(scanned[start - 1 : end], dialect):
                error = (
                    "CSV parse error: the quoted field opened here is not closed properly; "
                    f"it would run over lines {start}-{end}"
                )
                broken.append((start, start, error))
                consumed = start  # read on from the next line
                break
            consumed = end
            if row:
                records.append((start, end))
        else:
            break
    return records, broken


def _closed_properly(lines: list[str], dialect: dict[str, Any]) -> bool:
    """Whether the record in `lines` parses with strict quoting."""
    try:
        for _ in csv.reader(lines, strict=True, **dialect):
            pass
    except csv.Error:
        return False
    return True


def _header_only_table(
    lines: list[str], kept: list[tuple[int, int]], options: CsvOptions
) -> pa.Table:
    """A 0-row table with the header's columns (pyarrow cannot infer them without rows)."""
    names = list(options.column_names or [])
    if not names and options.header and kept:
        start, end = kept[0]
        header = "".join(lines[start - 1 : end])
        reader = csv.reader(
            [header],
            delimiter=options.delimiter,
            quotechar=options.quote_char or '"',
            quoting=csv.QUOTE_MINIMAL if options.quote_char else csv.QUOTE_NONE,
        )
        names = next(reader, [])
    return pa.table({name: pa.array([], pa.null()) for name in dict.fromkeys(names)})


# -- NDJSON and JSON -------------------------------------------------------------------------


def _parse_ndjson(data: bytes, options: JsonOptions, origin: str) -> ParsedFile:
    utf8, text = _transcode(data, options.encoding)
    if text is None:
        fast = _ndjson_fast(utf8) if _valid_utf8(utf8) else None
        if fast is not None:
            return fast
        text = utf8.decode("utf-8", errors="surrogateescape")
    return _ndjson_careful(text, options, origin)


def _ndjson_fast(data: bytes) -> ParsedFile | None:
    read = pa_json.ReadOptions(use_threads=True, block_size=FAST_BLOCK_SIZE)
    try:
        try:
            table = pa_json.read_json(pa.py_buffer(data), read_options=read)
        except pa.ArrowInvalid as exc:
            if "straddling" not in str(exc):
                return None
            read.block_size = min(len(data) + 1, MAX_BLOCK_SIZE)
            table = pa_json.read_json(pa.py_buffer(data), read_options=read)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    if _line_count(data) == table.num_rows:
        return ParsedFile(table, np.arange(1, table.num_rows + 1, dtype=np.int64))
    # Blank lines: the records are the other lines, if each holds exactly one.
    filled = [i for i, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    if len(filled) != table.num_rows:
        return None
    return ParsedFile(table, np.array(filled, dtype=np.int64))


def _ndjson_careful(text: str, options: JsonOptions, origin: str) -> ParsedFile:
    rows: list[dict[str, Any]] = []
    positions: list[int] = []
    rejects: list[Reject] = []
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        record = line.strip()
        if not record:
            continue
        where = f"{origin}:{number}"
        if _SURROGATE.search(line):
            raw = line.encode(options.encoding, "surrogateescape")
            rejects.append(Reject(raw, f"invalid {options.encoding} bytes in the line", where))
            continue
        try:
            value = json.loads(record)
        except json.JSONDecodeError as exc:
            rejects.append(Reject(line, f"invalid JSON: {exc}", where))
            continue
        if not isinstance(value, dict):
            rejects.append(Reject(line, f"not a JSON object but {_json_kind(value)}", where))
            continue
        rows.append(value)
        positions.append(number)
    return ParsedFile(rows_to_table(rows), np.array(positions, dtype=np.int64), rejects)


def _parse_json(data: bytes, options: JsonOptions, origin: str) -> ParsedFile:
    try:
        text = data.decode(options.encoding)
    except UnicodeDecodeError as exc:
        return ParsedFile.empty(
            [_whole_file_reject(data, f"invalid {options.encoding} document: {exc}", origin)]
        )
    text = text.removeprefix("\ufeff")
    if not text.strip():
        return ParsedFile.empty()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return ParsedFile.empty([_whole_file_reject(text, f"invalid JSON document: {exc}", origin)])
    records = document
    if options.records_path:
        for step, key in enumerate(options.records_path.split(".")):
            if not isinstance(records, dict) or key not in records:
                walked = ".".join(options.records_path.split(".")[:step]) or "the document"
                error = f"records_path {options.records_path!r}: no key {key!r} in {walked}"
                return ParsedFile.empty([_whole_file_reject(text, error, origin)])
            records = records[key]
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list):
        error = f"expected an array of records or an object, found {_json_kind(records)}"
        return ParsedFile.empty([_whole_file_reject(text, error, origin)])
    rows: list[dict[str, Any]] = []
    positions: list[int] = []
    rejects: list[Reject] = []
    for index, item in enumerate(records):
        if isinstance(item, dict):
            rows.append(item)
            positions.append(index)
        else:
            error = f"record is not a JSON object but {_json_kind(item)}"
            rejects.append(Reject(json.dumps(item), error, f"{origin}:{index}"))
    return ParsedFile(rows_to_table(rows), np.array(positions, dtype=np.int64), rejects)


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else "an object"


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Records as columns: every key any record has; a column whose values do not share one
    Arrow type (a number here, a string there) is kept as text (JSON for non-strings)."""
    names = list(dict.fromkeys(key for row in rows for key in row))
    if not names:
        # Records with no fields still count as rows.
        return pa.table({"_": pa.nulls(len(rows))}).drop_columns(["_"])
    arrays = []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            arrays.append(pa.array([_as_text(value) for value in values], pa.string()))
    return pa.Table.from_arrays(arrays, names=names)


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


# -- Parquet ---------------------------------------------------------------------------------


def _parse_parquet(data: bytes, origin: str) -> ParsedFile:
    try:
        table = pq.read_table(pa.py_buffer(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        return ParsedFile.empty([_whole_file_reject(data, f"invalid Parquet file: {exc}", origin)])
    return ParsedFile(table, np.arange(table.num_rows, dtype=np.int64))
