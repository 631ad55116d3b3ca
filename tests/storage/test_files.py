"""Reading a table's files into its schema: a few files each on its own, more through a
dataset; both read files written before a column was added."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakebed.storage import files

SCHEMA = pa.schema([("id", pa.int64()), ("s", pa.string()), ("added", pa.float64())])


@pytest.fixture
def written(tmp_path: Path) -> list[str]:
    """Two files of a table: the first written before column `added` existed."""
    old = tmp_path / "old.parquet"
    new = tmp_path / "new.parquet"
    pq.write_table(pa.table({"id": [1, 2], "s": ["a", "b"]}), old)
    pq.write_table(pa.table({"id": [3], "s": ["c"], "added": [0.5]}), new)
    return [str(old), str(new)]


@pytest.mark.parametrize("few", [4, 0])  # each file on its own; a dataset
def test_files_read_into_the_tables_schema_with_missing_columns_null(
    written: list[str], few: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "_FEW_FILES", few)
    table = files.read_files(str(Path(written[0]).parent), written, SCHEMA, [])
    assert table is not None
    assert table.schema == SCHEMA
    assert table.to_pylist() == [
        {"id": 1, "s": "a", "added": None},
        {"id": 2, "s": "b", "added": None},
        {"id": 3, "s": "c", "added": 0.5},
    ]
    only = files.read_files(str(Path(written[0]).parent), written[1:], SCHEMA, [], ["id"])
    assert only is not None
    assert only.to_pylist() == [{"id": 3}]
