"""The files connector on local files: formats, options, compression, encodings, globs and
the manifest that makes loads incremental (new, unchanged, touched and changed files)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from pydantic import ValidationError

from lakebed.errors import IngestError
from lakebed.ingest.base import IngestProgress, SourceContext, connector_for
from lakebed.ingest.connectors.files import FilesConnector, FilesOptions, origin_predicate


def _write(path: Path, data: bytes, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _zstd(data: bytes) -> bytes:
    return bytes(pa.Codec("zstd").compress(data, asbytes=True))


RunFiles = Callable[..., Any]  # the `run_files` fixture (tests/ingest/conftest.py)
ORDERS_CSV = b"id,customer,amount\n1,ann,9.5\n2,bob,12\n3,cy,0.25\n"


def test_kind_files_is_registered_with_its_options_model() -> None:
    assert connector_for("files") is FilesConnector
    assert FilesConnector.options_model is FilesOptions


def test_csv_batch_has_rows_line_origins_and_manifest_entry(
    tmp_path: Path, run_files: RunFiles
) -> None:
    path = _write(tmp_path / "data" / "orders.csv", ORDERS_CSV)
    run = run_files({"path": "data/*.csv"})
    (batch,) = run.batches
    assert batch.data.to_pylist() == [
        {"id": 1, "customer": "ann", "amount": 9.5},
        {"id": 2, "customer": "bob", "amount": 12.0},
        {"id": 3, "customer": "cy", "amount": 0.25},
    ]
    assert run.origins == [("data/orders.csv", 2), ("data/orders.csv", 3), ("data/orders.csv", 4)]
    assert batch.label == "data/orders.csv"
    assert batch.bytes_read == len(ORDERS_CSV)
    assert batch.replace_predicate is None
    assert batch.rejects == []
    info = path.stat()
    assert batch.state_delta == {
        "files": {
            "data/orders.csv": {
                "size": len(ORDERS_CSV),
                "mtime": info.st_mtime,
                "sha256": hashlib.sha256(ORDERS_CSV).hexdigest(),
            }
        }
    }
    assert run.progress.counts == {"files": 1, "rows": 3, "bytes": len(ORDERS_CSV)}
    assert run.progress.totals == {"files": 1}


@pytest.mark.parametrize(
    ("csv_options", "data", "rows", "first_line"),
    [
        (
            {"delimiter": ";", "null_values": ["NA"]},
            b"a;b\n1;NA\nNA;x\n",
            [{"a": 1, "b": None}, {"a": None, "b": "x"}],
            2,
        ),
        (
            {"header": False},
            b"1,x\n2,y\n",
            [{"f0": 1, "f1": "x"}, {"f0": 2, "f1": "y"}],
            1,
        ),
        (
            {"header": False, "column_names": ["id", "name"]},
            b"1,x\n2,y\n",
            [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}],
            1,
        ),
        (
            {"column_names": ["id", "name"]},
            b"a,b\n1,x\n2,y\n",
            [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}],
            2,
        ),
        (
            {"quote_char": "'"},
            b"a,b\n1,'x,y'\n2,'z'\n",
            [{"a": 1, "b": "x,y"}, {"a": 2, "b": "z"}],
            2,
        ),
        (
            {"quote_char": None},
            b'a,b\n1,"x"\n',
            [{"a": 1, "b": '"x"'}],
            2,
        ),
    ],
    ids=["delimiter-nulls", "no-header", "no-header-names", "header-renamed", "quote", "no-quote"],
)
def test_csv_options_shape_the_rows(
    tmp_path: Path,
    run_files: RunFiles,
    csv_options: dict[str, object],
    data: bytes,
    rows: list[dict[str, object]],
    first_line: int,
) -> None:
    _write(tmp_path / "in.csv", data)
    run = run_files({"path": "in.csv", "csv": csv_options})
    assert run.rows == rows
    assert [line for _, line in run.origins] == list(range(first_line, first_line + len(rows)))


def test_default_null_markers_are_empty_and_null(tmp_path: Path, run_files: RunFiles) -> None:
    _write(tmp_path / "in.csv", b"a,b\n1,\n2,NULL\n3,x\n")
    assert run_files({"path": "in.csv"}).rows == [
        {"a": 1, "b": None},
        {"a": 2, "b": None},
        {"a": 3, "b": "x"},
    ]


def test_format_comes_from_the_extension_with_its_origin_convention(
    tmp_path: Path, run_files: RunFiles
) -> None:
    records = [{"id": 1, "tag": "a"}, {"id": 2, "tag": "b"}]
    _write(tmp_path / "in" / "a.json", json.dumps(records).encode())
    _write(tmp_path / "in" / "b.ndjson", b"".join(json.dumps(r).encode() + b"\n" for r in records))
    _write(tmp_path / "in" / "c.jsonl", b"\n" + json.dumps(records[0]).encode() + b"\n")
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "in" / "d.parquet")
    _write(tmp_path / "in" / "e.csv", b"id,tag\n1,a\n2,b\n")
    run = run_files({"path": "in/*"})
    by_file: dict[str, list[int]] = {}
    for location, position in run.origins:
        by_file.setdefault(location, []).append(position)
    assert by_file == {
        "in/a.json": [0, 1],  # record index
        "in/b.ndjson": [1, 2],  # line
        "in/c.jsonl": [2],  # line, after a blank one
        "in/d.parquet": [0, 1],  # record index
        "in/e.csv": [2, 3],  # line; the header is line 1
    }
    tables = [b.data.to_pylist() for b in run.batches]
    assert tables == [records, records, records[:1], records, records]


def test_json_records_path_picks_the_array(tmp_path: Path, run_files: RunFiles) -> None:
    document = {"meta": {"page": 1}, "data": {"items": [{"id": 1}, {"id": 2}]}}
    _write(tmp_path / "page.json", json.dumps(document).encode())
    run = run_files({"path": "page.json", "json": {"records_path": "data.items"}})
    assert run.rows == [{"id": 1}, {"id": 2}]
    assert run.rejects == []


def test_json_object_document_is_one_record(tmp_path: Path, run_files: RunFiles) -> None:
    _write(tmp_path / "one.json", b'{"id": 7, "tags": ["x"]}')
    run = run_files({"path": "one.json"})
    assert run.rows == [{"id": 7, "tags": ["x"]}]
    assert run.origins == [("one.json", 0)]


def test_gzip_and_zstd_files_load_and_report_compressed_bytes(
    tmp_path: Path, run_files: RunFiles
) -> None:
    ndjson = b'{"id": 1}\n{"id": 2}\n'
    gz = _write(tmp_path / "in" / "a.csv.gz", gzip.compress(ORDERS_CSV))
    zst = _write(tmp_path / "in" / "b.ndjson.zst", _zstd(ndjson))
    zstd = _write(tmp_path / "in" / "c.json.zstd", _zstd(b'[{"id": 3}]'))
    run = run_files({"path": "in/*"})
    assert [len(b.data) for b in run.batches] == [3, 2, 1]
    assert run.rows[3:] == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert [b.bytes_read for b in run.batches] == [
        gz.stat().st_size,
        zst.stat().st_size,
        zstd.stat().st_size,
    ]
    # The checksum is of the file as stored, not of its decompressed content.
    assert (
        run.state["files"]["in/a.csv.gz"]["sha256"] == hashlib.sha256(gz.read_bytes()).hexdigest()
    )


def test_format_and_compression_options_override_the_name(
    tmp_path: Path, run_files: RunFiles
) -> None:
    _write(tmp_path / "export.dat", gzip.compress(b"a|b\n1|2\n"))
    run = run_files(
        {"path": "export.dat", "format": "csv", "compression": "gzip", "csv": {"delimiter": "|"}}
    )
    assert run.rows == [{"a": 1, "b": 2}]


def test_compression_none_reads_a_gz_name_as_is(tmp_path: Path, run_files: RunFiles) -> None:
    _write(tmp_path / "plain.csv.gz", b"a\n1\n")
    assert run_files({"path": "plain.csv.gz", "compression": "none"}).rows == [{"a": 1}]


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("latin-1", "id,name\n1,Zoë\n2,Ærø\n".encode("latin-1")),
        ("cp1252", "id,name\n1,Zoë\n2,Ærø\n".encode("cp1252")),
        ("utf-16", "id,name\n1,Zoë\n2,Ærø\n".encode("utf-16")),
        ("utf-8-sig", "id,name\n1,Zoë\n2,Ærø\n".encode("utf-8-sig")),
        ("utf-8", "\ufeffid,name\n1,Zoë\n2,Ærø\n".encode()),
    ],
)
def test_csv_encodings_are_transcoded(
    tmp_path: Path, run_files: RunFiles, encoding: str, data: bytes
) -> None:
    _write(tmp_path / "names.csv", data)
    run = run_files({"path": "names.csv", "csv": {"encoding": encoding}})
    assert run.rows == [{"id": 1, "name": "Zoë"}, {"id": 2, "name": "Ærø"}]
    assert [line for _, line in run.origins] == [2, 3]


def test_ndjson_encoding_is_transcoded(tmp_path: Path, run_files: RunFiles) -> None:
    _write(tmp_path / "a.ndjson", '{"name": "Zoë"}\n'.encode("latin-1"))
    run = run_files({"path": "a.ndjson", "json": {"encoding": "latin-1"}})
    assert run.rows == [{"name": "Zoë"}]


def test_glob_matches_sorted_nested_files_and_skips_hidden_ones(
    tmp_path: Path, run_files: RunFiles
) -> None:
    for name in ("b.csv", "a.csv", "sub/c.csv", "sub/deep/d.csv", ".partial.csv", "notes.txt"):
        _write(tmp_path / "land" / name, b"x\n1\n")
    assert [b.label for b in run_files({"path": "land/*.csv"}).batches] == [
        "land/a.csv",
        "land/b.csv",
    ]
    assert [b.label for b in run_files({"path": "land/**/*.csv"}).batches] == [
        "land/a.csv",
        "land/b.csv",
        "land/sub/c.csv",
        "land/sub/deep/d.csv",
    ]


def test_a_folder_path_loads_the_files_in_it(tmp_path: Path, run_files: RunFiles) -> None:
    _write(tmp_path / "land" / "a.csv", b"x\n1\n")
    _write(tmp_path / "land" / "b.csv", b"x\n2\n")
    run = run_files({"path": "land", "format": "csv"})
    assert run.rows == [{"x": 1}, {"x": 2}]


def test_absolute_path_keys_the_manifest_by_absolute_path(
    tmp_path: Path, run_files: RunFiles
) -> None:
    outside = _write(tmp_path / "elsewhere" / "a.csv", b"x\n1\n")
    project = tmp_path / "project"
    project.mkdir()
    run = run_files({"path": str(tmp_path / "elsewhere" / "*.csv")}, project_dir=project)
    assert list(run.state["files"]) == [outside.as_posix()]
    assert run.origins == [(outside.as_posix(), 2)]


def test_missing_folder_or_file_is_an_ingest_error_naming_it(run_files: RunFiles) -> None:
    with pytest.raises(IngestError, match=r"no such folder .*nowhere") as error:
        run_files({"path": "nowhere/*.csv"})
    assert error.value.source == "orders"
    assert error.value.hint is not None
    with pytest.raises(IngestError, match=r"no such file missing\.csv"):
        run_files({"path": "missing.csv"})


def test_glob_matching_nothing_yields_no_batch(tmp_path: Path, run_files: RunFiles) -> None:
    (tmp_path / "empty").mkdir()
    run = run_files({"path": "empty/*.csv"})
    assert run.batches == []
    assert run.progress.totals == {"files": 0}


# -- the manifest ----------------------------------------------------------------------------


def test_second_run_skips_loaded_files_by_size_and_mtime_without_reading(
    tmp_path: Path, run_files: RunFiles
) -> None:
    path = _write(tmp_path / "a.csv", b"x\n1\n", mtime=1_700_000_000)
    first = run_files({"path": "*.csv"})
    # Same size and time but other bytes: only a read would notice, and none happens.
    _write(path, b"x\n9\n", mtime=1_700_000_000)
    second = run_files({"path": "*.csv"}, first.state)
    assert second.batches == []
    assert second.state == first.state


def test_new_file_is_the_only_one_read_on_the_next_run(tmp_path: Path, run_files: RunFiles) -> None:
    _write(tmp_path / "a.csv", b"x\n1\n")
    first = run_files({"path": "*.csv"})
    _write(tmp_path / "b.csv", b"x\n2\n")
    second = run_files({"path": "*.csv"}, first.state)
    assert [b.label for b in second.batches] == ["b.csv"]
    assert second.rows == [{"x": 2}]
    assert sorted(second.state["files"]) == ["a.csv", "b.csv"]


def test_touched_file_with_same_bytes_only_moves_its_manifest_entry(
    tmp_path: Path, run_files: RunFiles
) -> None:
    path = _write(tmp_path / "a.csv", b"x\n1\n", mtime=1_700_000_000)
    first = run_files({"path": "*.csv"})
    os.utime(path, (1_700_000_500, 1_700_000_500))
    second = run_files({"path": "*.csv"}, first.state)
    (batch,) = second.batches
    assert batch.data.num_rows == 0
    assert batch.replace_predicate is None
    entry = second.state["files"]["a.csv"]
    assert entry["mtime"] == 1_700_000_500
    assert entry["sha256"] == first.state["files"]["a.csv"]["sha256"]
    assert run_files({"path": "*.csv"}, second.state).batches == []


def test_changed_file_is_reloaded_replacing_its_rows(tmp_path: Path, run_files: RunFiles) -> None:
    path = _write(tmp_path / "a.csv", b"x\n1\n2\n")
    _write(tmp_path / "b.csv", b"x\n5\n")
    first = run_files({"path": "*.csv"})
    _write(path, b"x\n1\n2\n3\n")
    second = run_files({"path": "*.csv"}, first.state)
    (batch,) = second.batches
    assert batch.label == "a.csv"
    assert batch.data.to_pylist() == [{"x": 1}, {"x": 2}, {"x": 3}]
    assert batch.replace_predicate == origin_predicate("a.csv")
    assert second.state["files"]["a.csv"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert second.state["files"]["b.csv"] == first.state["files"]["b.csv"]


def test_changed_file_that_became_empty_still_replaces_its_rows(
    tmp_path: Path, run_files: RunFiles
) -> None:
    path = _write(tmp_path / "a.csv", b"x\n1\n")
    first = run_files({"path": "*.csv"})
    _write(path, b"")
    (batch,) = run_files({"path": "*.csv"}, first.state).batches
    assert batch.data.num_rows == 0
    assert batch.replace_predicate == origin_predicate("a.csv")


def test_changed_file_with_on_change_ignore_keeps_its_rows_unread(
    tmp_path: Path, run_files: RunFiles
) -> None:
    path = _write(tmp_path / "a.csv", b"x\n1\n")
    first = run_files({"path": "*.csv", "on_change": "ignore"})
    _write(path, b"x\n1\n2\n", mtime=1_800_000_000)
    second = run_files({"path": "*.csv", "on_change": "ignore"}, first.state)
    (batch,) = second.batches
    assert batch.data.num_rows == 0
    assert batch.replace_predicate is None
    assert batch.bytes_read == 0
    entry = second.state["files"]["a.csv"]
    assert entry["size"] == len(b"x\n1\n2\n")
    assert entry["mtime"] == 1_800_000_000
    assert entry["sha256"] == first.state["files"]["a.csv"]["sha256"]  # of the loaded bytes
    assert run_files({"path": "*.csv", "on_change": "ignore"}, second.state).batches == []


def test_deleted_file_keeps_its_manifest_entry(tmp_path: Path, run_files: RunFiles) -> None:
    path = _write(tmp_path / "a.csv", b"x\n1\n")
    _write(tmp_path / "b.csv", b"x\n2\n")
    first = run_files({"path": "*.csv"})
    path.unlink()
    second = run_files({"path": "*.csv"}, first.state)
    assert second.batches == []
    assert second.state == first.state


def test_replace_predicate_deletes_exactly_the_files_rows_in_delta(tmp_path: Path) -> None:
    keys = ["data/it's_50%.csv", "data/itXs_50%.csv", "data/it's_50%.csv.bak", r"c:\in\a.csv"]
    table = pa.table(
        {
            "x": list(range(len(keys) * 2)),
            "_origin": [key for key in keys for _ in range(2)],
            "_origin_row": [2, 3] * len(keys),
        }
    )
    write_deltalake(str(tmp_path / "bronze"), table)
    for key in (keys[0], keys[3]):
        reload = pa.table({"x": [100], "_origin": [key], "_origin_row": [2]})
        write_deltalake(
            str(tmp_path / "bronze"), reload, mode="overwrite", predicate=origin_predicate(key)
        )
    files = DeltaTable(str(tmp_path / "bronze")).file_uris()
    rows = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()
    assert sorted((r["_origin"], r["x"]) for r in rows) == sorted(
        [(keys[0], 100), (keys[1], 2), (keys[1], 3), (keys[2], 4), (keys[2], 5), (keys[3], 100)]
    )


# -- options and state -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": "a.csv", "colour": "red"}, "colour"),
        ({"path": "a.csv", "csv": {"delimeter": ";"}}, "delimeter"),
        ({"path": "data/*.txt"}, "cannot tell the format"),
        ({"path": "a.csv", "format": "xml"}, "format"),
        ({"path": "a.csv", "compression": "lz4"}, "compression"),
        ({"path": "a.csv", "on_change": "merge"}, "on_change"),
        ({"path": "a.csv", "csv": {"delimiter": ";;"}}, "delimiter"),
        ({"path": "a.csv", "csv": {"encoding": "klingon"}}, "unknown encoding"),
        ({"path": "a.csv", "sftp": {"password": "x"}}, "not an sftp:// URL"),
        ({"path": "sftp://h/a.csv", "s3": {"region": "x"}}, "not an s3:// URL"),
        ({"path": "sftp://me:pw@h/a.csv"}, "sftp.password"),
        ({"path": "ftp://h/a.csv"}, "use a local path"),
        ({"path": "s3:///a.csv"}, "write s3://bucket/path"),
        ({"path": "sftp://me@/a.csv"}, "write sftp://host/path"),
    ],
)
def test_options_model_rejects_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FilesOptions.model_validate(options)


def test_options_model_defaults_and_secret_fields() -> None:
    options = FilesOptions.model_validate(
        {
            "path": "sftp://me@host:2222/in/*.csv",
            "sftp": {"password": "hunter2", "known_hosts": "kh"},
        }
    )
    assert options.compression == "auto"
    assert options.on_change == "reload"
    assert options.csv.null_values == ["", "NULL"]
    assert options.csv.header is True
    assert options.json_options.records_path is None
    assert options.sftp is not None
    assert "hunter2" not in repr(options)
    s3 = FilesOptions.model_validate(
        {"path": "s3://b/k/*.parquet", "s3": {"access_key_id": "AK", "secret_access_key": "SK"}}
    )
    assert s3.s3 is not None
    assert "SK" not in repr(s3)


def test_describe_state_counts_files_and_names_the_newest(tmp_path: Path) -> None:
    connector = FilesConnector(FilesOptions(path="*.csv"), SourceContext("orders", tmp_path))
    assert connector.describe_state({}) == "nothing loaded yet"
    state = {
        "files": {
            "a.csv": {"size": 1, "mtime": 1_700_000_000.5, "sha256": "x"},
            "b.csv": {"size": 1, "mtime": 1_795_687_200.0, "sha256": "y"},
        }
    }
    assert connector.describe_state(state) == "2 files loaded, last 2026-11-26T10:00:00Z"


def test_progress_reports_files_rows_and_bytes(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", b"x\n1\n2\n")
    _write(tmp_path / "b.csv", b"x\n3\n")
    reports: list[tuple[str, int, int | None]] = []
    connector = FilesConnector(FilesOptions(path="*.csv"), SourceContext("orders", tmp_path))
    list(connector.batches({}, IngestProgress(lambda *report: reports.append(report))))
    assert ("files", 0, 2) in reports
    assert ("files", 2, 2) in reports
    assert ("rows", 3, None) in reports
    assert ("bytes", 10, None) in reports
