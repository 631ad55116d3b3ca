"""CSV read piece by piece: the same rows, types and lines as the whole read, or abandoned."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from lakebed.ingest.base import StreamAbandonedError
from lakebed.ingest.connectors import csv_pieces as pieces_module
from lakebed.ingest.connectors.csv_pieces import csv_pieces, streamable
from lakebed.ingest.connectors.file_formats import CsvOptions, JsonOptions, parse_file


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of a few lines, so that small inputs have many."""
    monkeypatch.setattr(pieces_module, "FIRST_PIECE_BYTES", 12)
    monkeypatch.setattr(pieces_module, "PIECE_BYTES", 20)
    monkeypatch.setattr(pieces_module, "PARSE_BLOCK_BYTES", 64)


def whole(data: bytes, options: CsvOptions) -> Any:
    return parse_file(
        data,
        file_format="csv",
        compression="none",
        origin="f.csv",
        csv_options=options,
        json_options=JsonOptions(),
    )


def streamed(data: bytes, options: CsvOptions) -> tuple[pa.Table, list[int], int]:
    pieces = list(csv_pieces(pa.py_buffer(data), options))
    table = pa.concat_tables([p.data for p in pieces])
    positions = [n for p in pieces for n in p.positions.to_pylist()]
    return table, positions, len(pieces)


ROWS = b"".join(b"%d,name %d,%d.5,2025-01-%02d\n" % (i, i, i, 1 + i % 28) for i in range(40))
CLEAN = {
    "header": (b"id,name,amount,day\n" + ROWS, {}),
    "crlf": ((b"id,name,amount,day\n" + ROWS).replace(b"\n", b"\r\n"), {}),
    "no final newline": (b"id,name,amount,day\n" + ROWS.rstrip(b"\n"), {}),
    "trailing blank lines": (b"id,name,amount,day\n" + ROWS + b"\n\n\r\n", {}),
    "bom": (b"\xef\xbb\xbfid,name,amount,day\n" + ROWS, {}),
    "no header": (ROWS, {"header": False}),
    "names given, header skipped": (
        b"a,b,c,d\n" + ROWS,
        {"column_names": ["id", "name", "amount", "day"]},
    ),
    "names given, no header": (ROWS, {"header": False, "column_names": ["i", "n", "a", "d"]}),
    "semicolons and nulls": (
        b"id;note\n" + b"".join(b"%d;%s\n" % (i, b"NULL" if i % 3 else b"x") for i in range(30)),
        {"delimiter": ";"},
    ),
    "a column null throughout": (
        b"id,empty\n" + b"".join(b"%d,\n" % i for i in range(30)),
        {},
    ),
}


@pytest.mark.parametrize("name", list(CLEAN))
def test_clean_files_give_the_whole_reads_rows_types_and_lines(name: str) -> None:
    data, options = CLEAN[name]
    csv = CsvOptions(**options)
    expected = whole(data, csv)
    assert not expected.rejects
    table, positions, count = streamed(data, csv)
    assert count > 3
    assert table.schema == expected.table.schema
    assert table.to_pylist() == expected.table.to_pylist()
    assert positions == expected.positions.tolist()


LATER = 30  # a line well past the first piece
TRICKY = {
    "int column gets text": b"id,v\n"
    + b"".join(b"%d,%d\n" % (i, i) for i in range(LATER))
    + b"99,x\n",
    "int column gets a real": b"id,v\n"
    + b"".join(b"%d,%d\n" % (i, i) for i in range(LATER))
    + b"99,1.5\n",
    "null column gets a value": b"id,v\n"
    + b"".join(b"%d,\n" % i for i in range(LATER))
    + b"99,7\n",
    "a row with too few columns": b"id,v\n"
    + b"".join(b"%d,a\n" % i for i in range(LATER))
    + b"99\n100,b\n",
    "a row with too many columns": b"id,v\n"
    + b"".join(b"%d,a\n" % i for i in range(LATER))
    + b"99,b,c\n",
    "a blank line": b"id,v\n" + b"".join(b"%d,a\n" % i for i in range(LATER)) + b"\n99,b\n",
    "a quoted newline": b"id,v\n"
    + b"".join(b"%d,a\n" % i for i in range(LATER))
    + b'99,"b\nc"\n100,d\n',
    "invalid utf-8": b"id,v\n" + b"".join(b"%d,a\n" % i for i in range(LATER)) + b"99,\xff\n",
    "a bare CR": b"id,v\n" + b"".join(b"%d,a\n" % i for i in range(LATER)) + b"99,b\r100,c\n",
    "a bare CR in the last line": b"id,v\n"
    + b"".join(b"%d,a\n" % i for i in range(LATER))
    + b"99,b\r100,c",
    "repeated column names": b"id,id\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(LATER)),
    "timestamps lose their zone": b"id,t\n"
    + b"".join(b"%d,2025-01-01T00:00:00Z\n" % i for i in range(LATER))
    + b"99,2025-01-01T00:00:00\n",
}


@pytest.mark.parametrize("name", list(TRICKY))
def test_what_the_whole_read_settles_differently_abandons_the_stream(name: str) -> None:
    data = TRICKY[name]
    csv = CsvOptions()
    expected = whole(data, csv)
    try:
        table, positions, _ = streamed(data, csv)
    except StreamAbandonedError:
        return
    # Not abandoned: then it must be exactly what the whole read gives.
    assert not expected.rejects, f"{name}: the whole read rejects records the stream kept"
    assert table.schema == expected.table.schema
    assert table.to_pylist() == expected.table.to_pylist()
    assert positions == expected.positions.tolist()


@pytest.mark.parametrize(
    "name",
    ["int column gets text", "null column gets a value", "a row with too few columns"],
)
def test_a_later_surprise_abandons_rather_than_guessing(name: str) -> None:
    with pytest.raises(StreamAbandonedError):
        streamed(TRICKY[name], CsvOptions())


def test_only_large_utf8_files_are_streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pieces_module, "STREAM_MIN_BYTES", 100)
    assert streamable(CsvOptions(), 100)
    assert not streamable(CsvOptions(), 99)
    assert not streamable(CsvOptions(encoding="latin-1"), 1000)
