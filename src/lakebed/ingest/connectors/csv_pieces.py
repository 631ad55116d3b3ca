"""A large CSV file read piece by piece, for the runner's streamed writes: parsing the next
piece overlaps writing this one (see `lakebed.ingest.base.StreamedBatch`).

The pieces give exactly the rows, types and line numbers of `file_formats`' fast path, one
multi-threaded read of the whole file, or the stream is abandoned and the whole file is
read after all. Pieces end at line breaks. The first piece's types are given to the later
pieces, so a later value that does not fit them abandons the stream: the whole read would
widen the column instead (a column of only nulls so far must stay so). The same goes for
anything the fast path would hand to its careful path: invalid UTF-8, rows with the wrong
number of columns, and lines that are not one record each (blank lines, quoted newlines,
a bare CR).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv

from lakebed.ingest.base import Piece, StreamAbandonedError
from lakebed.ingest.connectors.file_formats import CsvOptions, _csv_arrow_options, _is_utf8
from lakebed.ingest.connectors.file_formats import _valid_utf8 as valid_utf8

__all__ = ["FIRST_PIECE_BYTES", "PIECE_BYTES", "STREAM_MIN_BYTES", "csv_pieces", "streamable"]

# The write starts once the first piece is parsed: keep it small.
FIRST_PIECE_BYTES = 1 << 20
PIECE_BYTES = 8 << 20
# Blocks of pyarrow's parse within a piece.
PARSE_BLOCK_BYTES = 1 << 20
# Smaller files are read whole: there is too little to overlap.
STREAM_MIN_BYTES = 16 << 20

_LF, _CR = 0x0A, 0x0D
_Bytes = npt.NDArray[np.uint8]


def streamable(options: CsvOptions, size: int) -> bool:
    """Whether a CSV file of `size` bytes (uncompressed) is worth reading piece by piece."""
    return size >= STREAM_MIN_BYTES and _is_utf8(options.encoding)


def csv_pieces(data: pa.Buffer, options: CsvOptions) -> Iterator[Piece]:
    """The rows of the file `data` piece by piece, each with its 1-based line numbers;
    raises `StreamAbandonedError` where the whole file must be read instead (see the module
    docstring)."""
    view: _Bytes = np.frombuffer(data, dtype=np.uint8)
    header_lines = 1 if options.header else 0
    line = header_lines + 1  # of the next row
    names: list[str] | None = None
    types: dict[str, pa.DataType] = {}
    schema: pa.Schema | None = None
    # The first piece holds a record besides the header: the later pieces take its types.
    start, size = 0, max(FIRST_PIECE_BYTES, _after_lines(view, header_lines + 1))
    while start < len(view):
        end = len(view)
        if start + size < len(view):
            found = _find_lf(view, start + size - 1)
            end = len(view) if found == -1 else found + 1
        last = end == len(view)
        piece = data.slice(start, end - start)
        if not valid_utf8(piece):
            raise StreamAbandonedError("invalid UTF-8")
        lines = _piece_lines(view[start:end], last)
        if lines is None:
            raise StreamAbandonedError("a line ends in a bare CR")
        table = _parse(piece, options, names, types)
        expected = lines - (header_lines if names is None else 0)
        if table.num_rows != expected:
            raise StreamAbandonedError("lines that are not one record each")
        if names is None:
            names = table.column_names
            if len(set(names)) != len(names):
                raise StreamAbandonedError("repeated column names")
            schema = table.schema
            types = {f.name: f.type for f in schema if not pa.types.is_null(f.type)}
        elif table.schema != schema:
            raise StreamAbandonedError("a column's type changes after the first piece")
        positions = pa.array(np.arange(line, line + table.num_rows, dtype=np.int64))
        line += table.num_rows
        yield Piece(table, positions)
        start, size = end, PIECE_BYTES


def _find_lf(view: _Bytes, start: int) -> int:
    """The offset of the first LF at or after `start`, or -1."""
    step = 1 << 16
    for at in range(start, len(view), step):
        hits = np.flatnonzero(view[at : at + step] == _LF)
        if hits.size:
            return at + int(hits[0])
    return -1


def _after_lines(view: _Bytes, count: int) -> int:
    """The offset just past the first `count` LFs of `view`, or its length."""
    end = 0
    for _ in range(count):
        found = _find_lf(view, end)
        if found == -1:
            return len(view)
        end = found + 1
    return end


def _count(view: _Bytes, byte: int) -> int:
    """How often `byte` occurs in `view`, a cache-sized slice at a time: one comparison of
    the whole piece would first allocate (and fault in) a piece-sized mask."""
    step = 1 << 20
    counts = (np.count_nonzero(view[at : at + step] == byte) for at in range(0, len(view), step))
    return sum(int(count) for count in counts)


def _piece_lines(view: _Bytes, last: bool) -> int | None:
    """Lines in a piece, counted as `file_formats._line_count` counts the whole file (line
    breaks at the end of the file are not lines); None where a line ends in a bare CR."""
    end = len(view)
    if last:
        while end and view[end - 1] in (_LF, _CR):
            end -= 1
        if end == 0:
            return 0
    view = view[:end]
    newlines = _count(view, _LF)
    carriage_returns = _count(view, _CR)
    if carriage_returns and carriage_returns != newlines:
        return None
    return newlines + 1 if last else newlines


def _parse(
    piece: pa.Buffer, options: CsvOptions, names: list[str] | None, types: dict[str, Any]
) -> pa.Table:
    """One piece, as the fast path parses the whole file; later pieces take the first
    piece's column names and types, and one thread (the writer has the other core)."""
    invalid: list[Any] = []
    read, parse, convert = _csv_arrow_options(
        options, careful=False, size=piece.size, invalid=invalid
    )
    read.block_size = PARSE_BLOCK_BYTES
    if names is not None:
        read.use_threads = False
        read.column_names = names
        read.skip_rows = 0
        read.autogenerate_column_names = False
        convert.column_types = types
    try:
        table = pa_csv.read_csv(piece, read, parse, convert)
    except pa.ArrowInvalid as exc:
        raise StreamAbandonedError(f"the piece does not parse: {exc}") from exc
    if invalid:
        raise StreamAbandonedError("rows with the wrong number of columns")
    return table
