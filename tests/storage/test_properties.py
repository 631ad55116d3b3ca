"""Delta table properties: known keys with valid values, checked before anything is written."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from lakebed import Lakehouse
from lakebed.errors import StorageError
from lakebed.storage import TableName, property_problems

SCHEMA = pa.schema([("id", pa.int64())])


@pytest.mark.parametrize(
    "properties",
    [
        {"delta.enableChangeDataFeed": "false"},
        {"delta.logRetentionDuration": "interval 7 days"},
        {"delta.deletedFileRetentionDuration": "INTERVAL 1 week"},
        {"delta.checkpointInterval": "25", "delta.dataSkippingNumIndexedCols": "-1"},
        {"delta.isolationLevel": "WriteSerializable", "delta.appendOnly": "true"},
    ],
)
def test_valid_properties_have_no_problems(properties: dict[str, str]) -> None:
    assert property_problems(properties) == []


@pytest.mark.parametrize(
    ("properties", "problem"),
    [
        ({"delta.enableChangeDatafeed": "true"}, "did you mean delta.enableChangeDataFeed?"),
        ({"owner": "me"}, "owner is not a table property lakebed sets"),
        ({"delta.enableChangeDataFeed": "yes"}, "takes true or false, not 'yes'"),
        ({"delta.checkpointInterval": "ten"}, "takes a whole number above 0, not 'ten'"),
        ({"delta.checkpointInterval": "0"}, "a whole number above 0"),
        ({"delta.logRetentionDuration": "7 days"}, "an interval, e.g. `interval 7 days`"),
        ({"delta.isolationLevel": "serializable"}, "Serializable or WriteSerializable"),
    ],
)
def test_bad_properties_say_what_is_wrong(properties: dict[str, str], problem: str) -> None:
    problems = property_problems(properties)
    assert len(problems) == 1
    assert problem in problems[0]


def test_a_bad_property_on_a_new_table_creates_nothing(lh: Lakehouse) -> None:
    with pytest.raises(StorageError, match=r"delta\.checkpointInterval takes") as caught:
        lh.create_table("gold.t", SCHEMA, properties={"delta.checkpointInterval": "ten"})
    assert "delta.logRetentionDuration" in (caught.value.hint or "")
    assert not Path(lh.storage.path(TableName.parse("gold.t"))).exists()


def test_set_properties_checks_them_before_committing(lh: Lakehouse) -> None:
    table = lh.create_table("gold.t", SCHEMA)
    version = table.version()
    with pytest.raises(StorageError, match="not 'soon'"):
        table.set_properties({"delta.logRetentionDuration": "soon"})
    assert table.version() == version
    table.set_properties({"delta.logRetentionDuration": "interval 30 days"})
    assert table.properties()["delta.logRetentionDuration"] == "interval 30 days"
