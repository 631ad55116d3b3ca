"""Streamed batches: a large CSV file is written to bronze while it is parsed, with the same
result as the whole read: rows, types, lines, quarantine, state and one commit per file."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

import lakebed
from lakebed import Lakehouse
from lakebed.ingest.connectors import csv_pieces
from lakebed.storage import DeltaStore, Table, TableName


@dataclass
class Loaded:
    """What a run left behind, without what differs between runs (load id, time)."""

    schema: pa.Schema
    rows: list[tuple[Any, ...]]
    quarantine: list[tuple[Any, ...]]
    state: dict[str, Any]
    summary: tuple[int, int, int]
    streams: int  # streamed commits, over all runs


def _project(root: Path, **source: Any) -> Path:
    root = lakebed.init_project(root)
    config = yaml.safe_load((root / "lakebed.yml").read_text())
    config["sources"] = {"orders": {"kind": "files", "path": "in/*.csv*", **source}}
    (root / "lakebed.yml").write_text(yaml.safe_dump(config))
    return root


def _csv(root: Path, name: str, text: str) -> None:
    (root / "in").mkdir(exist_ok=True)
    data = text.encode()
    (root / "in" / name).write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)


def _loaded(lh: Lakehouse, summary: Any, streams: int) -> Loaded:
    rows = lh.sql(
        "select * exclude (_ingested_at, _load_id) from bronze.orders order by _origin, _origin_row"
    ).rows()
    quarantine: list[tuple[Any, ...]] = []
    if "quarantine.orders" in [t.name for t in lh.tables()]:
        quarantine = lh.sql(
            "select _origin, error, raw from quarantine.orders order by _origin"
        ).rows()
    return Loaded(
        lh.table("bronze.orders").schema(),
        rows,
        quarantine,
        {  # the files were written separately for each project: their times differ
            key: {k: v for k, v in entry.items() if k != "mtime"}
            for key, entry in lh.source_state("orders")["files"].items()
        },
        (summary.rows, summary.quarantined, summary.bytes),
        streams,
    )


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`load(files, streamed, **source)`: ingest each group of files (one run per group) into
    a fresh project, streamed (pieces of a few lines) or read whole; what the last run left."""
    calls: list[int] = []

    def counting(method: Any) -> Any:
        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = method(self, *args, **kwargs)
            calls.append(result.version)
            return result

        return counted

    monkeypatch.setattr(Table, "append_stream", counting(Table.append_stream))
    monkeypatch.setattr(DeltaStore, "create_from_stream", counting(DeltaStore.create_from_stream))
    monkeypatch.setattr(csv_pieces, "FIRST_PIECE_BYTES", 40)
    monkeypatch.setattr(csv_pieces, "PIECE_BYTES", 120)
    monkeypatch.setattr(csv_pieces, "PARSE_BLOCK_BYTES", 64)

    def run(runs: list[dict[str, str]], streamed: bool, **source: Any) -> Loaded:
        calls.clear()
        monkeypatch.setattr(csv_pieces, "STREAM_MIN_BYTES", 1 if streamed else 1 << 40)
        root = _project(tmp_path / ("streamed" if streamed else "whole"), **source)
        with lakebed.open(root) as lh:
            for files in runs:
                for name, text in files.items():
                    _csv(root, name, text)
                summary = lh.ingest("orders")
            return _loaded(lh, summary, len(calls))

    return run


def _lines(first: int, count: int, row: str = "{i},name {i},{i}.5") -> str:
    return "".join(row.format(i=i) + "\n" for i in range(first, first + count))


HEADER = "id,name,amount\n"


def _same(load: Any, runs: list[dict[str, str]], **source: Any) -> Loaded:
    whole = load(runs, streamed=False, **source)
    streamed = load(runs, streamed=True, **source)
    assert whole.streams == 0
    assert streamed.schema == whole.schema
    assert streamed.rows == whole.rows
    assert streamed.quarantine == whole.quarantine
    assert streamed.state == whole.state
    assert streamed.summary == whole.summary
    return streamed


def test_a_clean_file_is_streamed_in_one_commit_like_the_whole_read(load: Any) -> None:
    streamed = _same(load, [{"a.csv": HEADER + _lines(0, 60)}])
    assert streamed.streams == 1
    assert streamed.rows[0] == (0, "name 0", 0.5, "orders", "in/a.csv", 2)
    assert streamed.rows[-1][-1] == 61
    assert streamed.summary[:2] == (60, 0)


def test_each_new_file_is_its_own_streamed_commit(load: Any, tmp_path: Path) -> None:
    runs = [{"a.csv": HEADER + _lines(0, 30), "b.csv": HEADER + _lines(30, 30)}]
    runs.append({"c.csv": HEADER + _lines(60, 30)})
    streamed = _same(load, runs)
    assert streamed.streams == 3
    with lakebed.open(tmp_path / "streamed") as lh:
        table = lh.table("bronze.orders")
        assert table.transaction_version("lakebed-ingest:orders") == 3
        # The first file's commit creates the table.
        assert [h["operation"] for h in table.history()] == ["WRITE"] * 3
        assert table.version() == 2
        (record,) = lh.tables("bronze")
        assert (record.name, record.row_count) == ("bronze.orders", 90)


def test_a_type_only_the_whole_file_settles_falls_back_to_the_whole_read(load: Any) -> None:
    text = HEADER + _lines(0, 40) + "40,name 40,not a number\n" + _lines(41, 5)
    streamed = _same(load, [{"a.csv": text}])
    assert streamed.streams == 0
    assert streamed.schema.field("amount").type == pa.string()


def test_malformed_rows_fall_back_and_go_to_quarantine(load: Any) -> None:
    text = HEADER + _lines(0, 40) + "40,too few\n" + _lines(41, 5)
    streamed = _same(load, [{"a.csv": text}])
    assert streamed.streams == 0
    assert [q[0] for q in streamed.quarantine] == ["in/a.csv:42"]
    assert streamed.summary[:2] == (45, 1)


def test_a_new_column_in_a_later_file_evolves_the_table(load: Any) -> None:
    later = "id,name,amount,extra\n" + _lines(40, 40, "{i},name {i},{i}.5,{i}")
    streamed = _same(load, [{"a.csv": HEADER + _lines(0, 40)}, {"b.csv": later}])
    assert streamed.streams == 2
    assert streamed.schema.names[-1] == "extra"


def test_new_fields_under_discard_row_are_quarantined_as_whole(load: Any) -> None:
    later = "id,name,amount,extra\n" + _lines(40, 40, "{i},name {i},{i}.5,")
    later += _lines(80, 1, "{i},name {i},{i}.5,surprise")
    runs = [{"a.csv": HEADER + _lines(0, 40)}, {"b.csv": later}]
    streamed = _same(load, runs, schema="discard_row")
    assert streamed.streams == 1  # the first file
    assert [q[0] for q in streamed.quarantine] == ["in/b.csv:42"]


def test_values_that_do_not_fit_the_table_are_quarantined_as_whole(load: Any) -> None:
    later = HEADER + _lines(40, 40, "{i},name {i},{i}.5") + "x80,name,1.5\n"
    streamed = _same(load, [{"a.csv": HEADER + _lines(0, 40)}, {"b.csv": later}])
    assert streamed.streams == 1  # the first file
    assert [q[0] for q in streamed.quarantine] == ["in/b.csv:42"]


def test_a_crash_while_streaming_commits_nothing_and_a_rerun_loads_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_pieces, "STREAM_MIN_BYTES", 1)
    monkeypatch.setattr(csv_pieces, "FIRST_PIECE_BYTES", 40)
    monkeypatch.setattr(csv_pieces, "PIECE_BYTES", 120)
    root = _project(tmp_path / "p")
    _csv(root, "a.csv", HEADER + _lines(0, 60))
    original = csv_pieces.csv_pieces

    def dying(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for number, piece in enumerate(original(*args, **kwargs)):
            if number == 2:
                raise KeyboardInterrupt("killed mid-file")
            yield piece

    from lakebed.ingest.connectors import files

    with lakebed.open(root) as lh:
        monkeypatch.setattr(files, "csv_pieces", dying)
        with pytest.raises(KeyboardInterrupt):
            lh.ingest("orders")
        assert not lh.storage.exists(TableName.parse("bronze.orders"))
        assert lh.source_state("orders") == {}
        monkeypatch.setattr(files, "csv_pieces", original)
        summary = lh.ingest("orders")
        assert summary.rows == 60
        ids = lh.sql("select id from bronze.orders order by id").rows()
        assert ids == [(i,) for i in range(60)]


def test_progress_counts_the_rows_of_a_streamed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_pieces, "STREAM_MIN_BYTES", 1)
    monkeypatch.setattr(csv_pieces, "FIRST_PIECE_BYTES", 40)
    root = _project(tmp_path / "p")
    _csv(root, "a.csv", HEADER + _lines(0, 25))
    reports: list[tuple[str, int, int | None]] = []
    with lakebed.open(root) as lh:
        lh.ingest("orders", report=lambda *report: reports.append(report))
    assert ("rows", 25, None) in reports
    assert ("files", 1, 1) in reports


def test_a_source_with_catalog_entries_creates_its_table_before_streaming(load: Any) -> None:
    runs = [{"a.csv": HEADER + _lines(0, 30)}, {"b.csv": HEADER + _lines(30, 30)}]
    streamed = _same(load, runs, owner="sales-team", description="orders as sent")
    assert streamed.streams == 1  # the second file; the first created the table


def test_catalog_entries_of_a_streamed_source_are_kept(tmp_path: Path, load: Any) -> None:
    load([{"a.csv": HEADER + _lines(0, 30)}], streamed=True, owner="sales-team")
    with lakebed.open(tmp_path / "streamed") as lh:
        record = lh.describe("bronze.orders")
        assert record.owner == "sales-team"


def test_a_crash_after_a_streamed_commit_is_recovered_from_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_pieces, "STREAM_MIN_BYTES", 1)
    monkeypatch.setattr(csv_pieces, "FIRST_PIECE_BYTES", 40)
    root = _project(tmp_path / "p")
    _csv(root, "a.csv", HEADER + _lines(0, 30))
    with lakebed.open(root) as lh:

        def crash(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt("killed after the commit")

        monkeypatch.setattr(lh.metastore, "set_source_state", crash)
        with pytest.raises(KeyboardInterrupt):
            lh.ingest("orders")  # the table is created by the file's commit, then the crash
        monkeypatch.undo()
        monkeypatch.setattr(csv_pieces, "STREAM_MIN_BYTES", 1)
        _csv(root, "b.csv", HEADER + _lines(30, 30))
        summary = lh.ingest("orders")
        assert summary.rows == 30  # a.csv was not loaded again
        ids = lh.sql("select id from bronze.orders order by id").rows()
        assert ids == [(i,) for i in range(60)]
        assert set(lh.source_state("orders")["files"]) == {"in/a.csv", "in/b.csv"}


def test_a_compressed_file_is_streamed_once_uncompressed(load: Any) -> None:
    streamed = _same(load, [{"a.csv.gz": HEADER + _lines(0, 60)}])
    assert streamed.streams == 1
    assert streamed.rows[-1][-2:] == ("in/a.csv.gz", 61)
