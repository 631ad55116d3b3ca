"""The malformed corpus: every file loads without crashing, good records become rows with
their true line, and every bad record becomes a Reject with its raw text, the error and its
origin (nothing is dropped silently)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

RunFiles = Callable[..., Any]  # the `run_files` fixture (tests/ingest/conftest.py)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _run_one(tmp_path: Path, run_files: RunFiles, name: str, data: bytes, **options: Any) -> Any:
    _write(tmp_path / name, data)
    run = run_files({"path": name, **options})
    (batch,) = run.batches  # one batch per file, even when it is empty or all bad
    assert batch.state_delta["files"][name]["size"] == len(data)
    return run


# -- CSV -------------------------------------------------------------------------------------


def test_csv_rows_with_wrong_column_counts_are_rejected_with_pyarrows_message(
    tmp_path: Path, run_files: RunFiles
) -> None:
    data = b"id,name,qty\n1,a,10\n2,b\n3,c,30,extra\n4,d,40\n"
    run = _run_one(tmp_path, run_files, "in.csv", data)
    assert run.rows == [{"id": 1, "name": "a", "qty": 10}, {"id": 4, "name": "d", "qty": 40}]
    assert run.origins == [("in.csv", 2), ("in.csv", 5)]
    assert [(r.raw, r.error, r.origin) for r in run.rejects] == [
        ("2,b", "CSV parse error: Expected 3 columns, got 2", "in.csv:3"),
        ("3,c,30,extra", "CSV parse error: Expected 3 columns, got 4", "in.csv:4"),
    ]


def test_csv_quote_never_closed_rejects_its_line_and_keeps_the_rest(
    tmp_path: Path, run_files: RunFiles
) -> None:
    data = b'id,note\n1,"fine"\n2,"runs on\n3,after\n4,"multi\nline"\n'
    run = _run_one(tmp_path, run_files, "in.csv", data)
    # Without the check, pyarrow would swallow lines 3-7 into the note of record 2.
    assert [r.origin for r in run.rejects] == ["in.csv:3"]
    assert run.rejects[0].raw == '2,"runs on\n'
    assert "not closed properly; it would run over lines 3-5" in run.rejects[0].error
    assert run.rows == [
        {"id": 1, "note": "fine"},
        {"id": 3, "note": "after"},
        {"id": 4, "note": "multi\nline"},
    ]
    assert run.origins == [("in.csv", 2), ("in.csv", 4), ("in.csv", 5)]


def test_csv_stray_quotes_inside_fields_load_as_text(tmp_path: Path, run_files: RunFiles) -> None:
    data = b'id,size\n1,5" screen\n2,"12"" ruler"\n3,"a"b\n'
    run = _run_one(tmp_path, run_files, "in.csv", data)
    assert run.rejects == []
    assert run.rows == [
        {"id": 1, "size": '5" screen'},
        {"id": 2, "size": '12" ruler'},
        {"id": 3, "size": "ab"},  # text after a closing quote is kept, as pyarrow reads it
    ]


def test_csv_wrong_types_in_a_column_load_as_text(tmp_path: Path, run_files: RunFiles) -> None:
    data = b"id,amount,when\n1,9.5,2024-01-01\n2,lots,yesterday\n3,,2024-01-03\n"
    run = _run_one(tmp_path, run_files, "in.csv", data)
    assert run.rejects == []
    assert [row["amount"] for row in run.rows] == ["9.5", "lots", None]
    assert [row["when"] for row in run.rows] == ["2024-01-01", "yesterday", "2024-01-03"]


def test_csv_invalid_utf8_rejects_only_its_records_keeping_raw_bytes(
    tmp_path: Path, run_files: RunFiles
) -> None:
    data = b"id,name\n1,ok\n2,bad\xff\xfe\n3,caf\xc3\xa9\n4,\xc3(\n5,fine\n"
    run = _run_one(tmp_path, run_files, "in.csv", data)
    assert run.rows == [
        {"id": 1, "name": "ok"},
        {"id": 3, "name": "café"},
        {"id": 5, "name": "fine"},
    ]
    assert run.origins == [("in.csv", 2), ("in.csv", 4), ("in.csv", 6)]
    assert [(r.raw, r.origin) for r in run.rejects] == [
        (b"2,bad\xff\xfe\n", "in.csv:3"),
        (b"4,\xc3(\n", "in.csv:5"),
    ]
    assert all("invalid utf-8" in r.error for r in run.rejects)


def test_csv_invalid_bytes_in_declared_encoding_are_rejected(
    tmp_path: Path, run_files: RunFiles
) -> None:
    data = b"id,name\n1,caf\xe9\n2,x\x81y\n"  # 0x81 is undefined in cp1252
    run = _run_one(tmp_path, run_files, "in.csv", data, csv={"encoding": "cp1252"})
    assert run.rows == [{"id": 1, "name": "café"}]
    assert [(r.raw, r.origin) for r in run.rejects] == [(b"2,x\x81y\n", "in.csv:3")]


def test_csv_blank_lines_crlf_and_quoted_newlines_keep_true_line_numbers(
    tmp_path: Path, run_files: RunFiles
) -> None:
    data = b'id,note\r\n1,a\r\n\r\n2,"two\r\nlines"\r\n3\r\n\r\n4,d\r\n'
    run = _run_one(tmp_path, run_files, "in.csv", data)
    assert [row["id"] for row in run.rows] == [1, 2, 4]
    assert run.origins == [("in.csv", 2), ("in.csv", 4), ("in.csv", 8)]
    assert [(r.raw, r.origin) for r in run.rejects] == [("3", "in.csv:6")]


def test_csv_nul_bytes_load_as_text(tmp_path: Path, run_files: RunFiles) -> None:
    run = _run_one(tmp_path, run_files, "in.csv", b"id,v\n1,a\x00b\n2,\n\n3,c\n")
    assert run.rejects == []
    assert [row["v"] for row in run.rows] == ["a\x00b", None, "c"]
    assert [line for _, line in run.origins] == [2, 3, 5]


@pytest.mark.slow
def test_csv_a_50mb_single_field_loads(tmp_path: Path, run_files: RunFiles) -> None:
    big = b"x" * (50 << 20)
    data = b"id,blob,tail\n1," + big + b",end\n2,small,end\n"
    run = _run_one(tmp_path, run_files, "big.csv", data)
    assert run.rejects == []
    (batch,) = run.batches
    assert batch.data.column("id").to_pylist() == [1, 2]
    assert [len(v) for v in batch.data.column("blob").to_pylist()] == [len(big), 5]
    assert run.origins == [("big.csv", 2), ("big.csv", 3)]


@pytest.mark.slow
def test_csv_a_50mb_quoted_field_with_newlines_loads(tmp_path: Path, run_files: RunFiles) -> None:
    big = (b"y" * 1023 + b"\n") * (50 << 10)
    data = b'id,blob\n1,"' + big + b'"\n2,z\n'
    run = _run_one(tmp_path, run_files, "big.csv", data)
    assert run.rejects == []
    assert [len(row["blob"]) for row in run.rows] == [len(big), 1]
    assert run.origins == [("big.csv", 2), ("big.csv", 2 + (50 << 10) + 1)]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty.csv", b""),
        ("blank.csv", b"\n\n"),
        ("empty.ndjson", b""),
        ("blank.ndjson", b"\n  \n"),
        ("empty.json", b""),
        ("empty.parquet", b""),
        ("empty.csv.gz", b""),
        ("empty-content.csv.gz", gzip.compress(b"")),
    ],
)
def test_empty_files_give_a_batch_with_no_rows_and_a_manifest_entry(
    tmp_path: Path, run_files: RunFiles, name: str, data: bytes
) -> None:
    run = _run_one(tmp_path, run_files, name, data)
    assert run.rows == []
    assert run.rejects == []
    assert name in run.state["files"]


@pytest.mark.parametrize("data", [b"id,name\n", b"id,name", b"id,name\r\n\r\n"])
def test_header_only_csv_gives_no_rows_and_no_rejects(
    tmp_path: Path, run_files: RunFiles, data: bytes
) -> None:
    run = _run_one(tmp_path, run_files, "in.csv", data)
    assert run.rows == []
    assert run.rejects == []


# -- NDJSON and JSON ------------------------------------------------------------------------


def test_ndjson_truncated_last_line_is_rejected_and_the_rest_load(
    tmp_path: Path, run_files: RunFiles
) -> None:
    data = b'{"id": 1}\n{"id": 2}\n{"id": 3, "na'
    run = _run_one(tmp_path, run_files, "in.ndjson", data)
    assert run.rows == [{"id": 1}, {"id": 2}]
    assert run.origins == [("in.ndjson", 1), ("in.ndjson", 2)]
    (reject,) = run.rejects
    assert (reject.raw, reject.origin) == ('{"id": 3, "na', "in.ndjson:3")
    assert reject.error.startswith("invalid JSON")


def test_ndjson_lines_that_are_not_objects_are_rejected(
    tmp_path: Path, run_files: RunFiles
) -> None:
    data = b'{"id": 1}\n[1, 2]\n"text"\n\n{"id": 2} {"id": 3}\n{"id": 4}\n'
    run = _run_one(tmp_path, run_files, "in.ndjson", data)
    assert run.rows == [{"id": 1}, {"id": 4}]
    assert run.origins == [("in.ndjson", 1), ("in.ndjson", 6)]
    assert [(r.origin, r.error.split(":")[0]) for r in run.rejects] == [
        ("in.ndjson:2", "not a JSON object but an array"),
        ("in.ndjson:3", "not a JSON object but a string"),
        ("in.ndjson:5", "invalid JSON"),
    ]


def test_ndjson_invalid_utf8_rejects_only_its_lines(tmp_path: Path, run_files: RunFiles) -> None:
    data = b'{"id": 1}\n{"id": 2, "name": "\xff"}\n{"id": 3, "name": "\xc3\xa9"}\n'
    run = _run_one(tmp_path, run_files, "in.ndjson", data)
    assert run.rows == [{"id": 1, "name": None}, {"id": 3, "name": "é"}]
    assert [(r.raw, r.origin) for r in run.rejects] == [
        (b'{"id": 2, "name": "\xff"}', "in.ndjson:2")
    ]


def test_ndjson_mixed_types_in_a_field_load_as_text(tmp_path: Path, run_files: RunFiles) -> None:
    data = b'{"id": 1, "v": 5}\n{"id": 2, "v": "five"}\n{"id": 3, "v": {"n": 5}}\n{"id": 4}\n'
    run = _run_one(tmp_path, run_files, "in.ndjson", data)
    assert run.rejects == []
    assert [row["v"] for row in run.rows] == ["5", "five", '{"n": 5}', None]
    assert [row["id"] for row in run.rows] == [1, 2, 3, 4]


@pytest.mark.slow
def test_ndjson_a_50mb_single_field_loads(tmp_path: Path, run_files: RunFiles) -> None:
    big = "x" * (50 << 20)
    data = json.dumps({"id": 1, "blob": big}).encode() + b'\n{"id": 2, "blob": "s"}\n'
    run = _run_one(tmp_path, run_files, "big.ndjson", data)
    assert run.rejects == []
    assert [len(row["blob"]) for row in run.rows] == [len(big), 1]


def test_json_truncated_document_is_one_reject_for_the_file(
    tmp_path: Path, run_files: RunFiles
) -> None:
    data = b'[{"id": 1}, {"id": 2}, {"id"'
    run = _run_one(tmp_path, run_files, "in.json", data)
    assert run.rows == []
    (reject,) = run.rejects
    assert (reject.raw, reject.origin) == (data.decode(), "in.json")
    assert reject.error.startswith("invalid JSON document")


def test_json_items_that_are_not_objects_are_rejected_by_index(
    tmp_path: Path, run_files: RunFiles
) -> None:
    run = _run_one(tmp_path, run_files, "in.json", b'[{"id": 1}, 2, null, {"id": 4}]')
    assert run.rows == [{"id": 1}, {"id": 4}]
    assert run.origins == [("in.json", 0), ("in.json", 3)]
    assert [(r.raw, r.origin) for r in run.rejects] == [("2", "in.json:1"), ("null", "in.json:2")]


def test_json_records_path_that_is_missing_rejects_the_file(
    tmp_path: Path, run_files: RunFiles
) -> None:
    run = _run_one(
        tmp_path,
        run_files,
        "in.json",
        b'{"data": {"rows": []}}',
        json={"records_path": "data.items"},
    )
    (reject,) = run.rejects
    assert "no key 'items' in data" in reject.error


def test_json_invalid_utf8_document_is_rejected_with_its_bytes(
    tmp_path: Path, run_files: RunFiles
) -> None:
    data = b'[{"name": "\xff"}]'
    run = _run_one(tmp_path, run_files, "in.json", data)
    (reject,) = run.rejects
    assert reject.raw == data
    assert "invalid utf-8" in reject.error


# -- compression and binary formats ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "compress"),
    [
        ("cut.csv.gz", gzip.compress),
        ("cut.ndjson.zst", lambda data: pa.Codec("zstd").compress(data, asbytes=True)),
    ],
)
def test_truncated_compressed_file_is_one_reject(
    tmp_path: Path, run_files: RunFiles, name: str, compress: Callable[[bytes], bytes]
) -> None:
    whole = compress(b"".join(b'{"id": %d}\n' % i for i in range(20_000)))
    run = _run_one(tmp_path, run_files, name, whole[: len(whole) // 2])
    assert run.rows == []
    (reject,) = run.rejects
    assert reject.origin == name
    assert reject.raw == whole[: len(whole) // 2]
    assert "decompress" in reject.error


def test_not_actually_gzip_is_one_reject(tmp_path: Path, run_files: RunFiles) -> None:
    run = _run_one(tmp_path, run_files, "fake.csv.gz", b"id\n1\n")
    (reject,) = run.rejects
    assert "gzip" in reject.error


def test_corrupt_parquet_file_is_one_reject(tmp_path: Path, run_files: RunFiles) -> None:
    run = _run_one(tmp_path, run_files, "bad.parquet", b"PAR1 this is not parquet PAR1")
    (reject,) = run.rejects
    assert reject.origin == "bad.parquet"
    assert reject.error.startswith("invalid Parquet file")


def test_file_of_unknown_format_in_a_wide_glob_is_one_reject(
    tmp_path: Path, run_files: RunFiles
) -> None:
    _write(tmp_path / "in" / "a.csv", b"x\n1\n")
    _write(tmp_path / "in" / "notes.txt", b"hello")
    run = run_files({"path": "in/*"})
    assert run.rows == [{"x": 1}]
    (reject,) = run.rejects
    assert (reject.raw, reject.origin) == (b"hello", "in/notes.txt")
    assert "cannot tell the format" in reject.error
    assert sorted(run.state["files"]) == ["in/a.csv", "in/notes.txt"]


def test_every_record_of_the_corpus_is_a_row_or_a_reject(
    tmp_path: Path, run_files: RunFiles
) -> None:
    corpus = {
        "a.csv": (b'id,v\n1,a\n2\n4,d\n5,\xff\n\n6,"p\nq"\n7,"x\n8,e\n', 7),
        "b.ndjson": (b'{"id": 1}\n{"id": 2\n\n[3]\n{"id": 4}\n{"id": "\xfe"}\n', 5),
        "c.json": (b'[{"id": 1}, 2, {"id": 3}]', 3),
    }
    for name, (data, _) in corpus.items():
        _write(tmp_path / "mix" / name, data)
    run = run_files({"path": "mix/*"})
    for batch in run.batches:
        records = corpus[batch.label.removeprefix("mix/")][1]
        assert batch.data.num_rows + len(batch.rejects) == records, batch.label
