"""The lakehouse facade: project folders, the catalog and writes by name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import lakebed
from helpers import new_lakehouse, write_model
from lakebed import Lakehouse
from lakebed.config import CONFIG_FILE
from lakebed.errors import (
    ConfigError,
    InvalidTableNameError,
    SchemaMismatchError,
    StorageError,
    TableNotFoundError,
)
from lakebed.lakehouse import PROJECT_ENV
from lakebed.storage import TableName


@pytest.fixture
def lh(tmp_path: Path) -> Iterator[Lakehouse]:
    with new_lakehouse(tmp_path / "project") as lakehouse:
        yield lakehouse


# -- projects --------------------------------------------------------------------------------


def test_init_project_writes_a_project_folder(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "shop")
    assert root == (tmp_path / "shop").resolve()
    config = (root / CONFIG_FILE).read_text(encoding="utf-8")
    assert "name: shop" in config
    for folder in ("models/bronze", "models/silver", "models/gold"):
        assert (root / folder).is_dir()
    assert ".lakebed/" in (root / ".gitignore").read_text(encoding="utf-8")
    with lakebed.open(root) as lh:
        assert lh.config.name == "shop"
        assert lh.tables() == []


def test_init_project_takes_a_name(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "folder", name="analytics")
    with lakebed.open(root) as lh:
        assert lh.config.name == "analytics"


def test_init_project_refuses_an_existing_project(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "shop")
    (root / CONFIG_FILE).write_text("name: mine\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        lakebed.init_project(root)
    assert "a project already exists here" in info.value.message
    assert info.value.file == str(root / CONFIG_FILE)
    assert info.value.hint == "open it instead"
    assert (root / CONFIG_FILE).read_text(encoding="utf-8") == "name: mine\n"


def test_open_by_path(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "p")
    with lakebed.open(str(root)) as lh:
        assert lh.root == root
        assert lh.storage_root == str(root / "lakehouse")


def test_open_uses_the_project_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = lakebed.init_project(tmp_path / "from-env")
    monkeypatch.setenv(PROJECT_ENV, str(root))
    monkeypatch.chdir(tmp_path)
    with lakebed.open() as lh:
        assert lh.root == root


def test_open_defaults_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = lakebed.init_project(tmp_path / "here")
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    monkeypatch.chdir(root)
    with lakebed.open() as lh:
        assert lh.root == root


def test_explicit_path_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = lakebed.init_project(tmp_path / "chosen")
    monkeypatch.setenv(PROJECT_ENV, str(lakebed.init_project(tmp_path / "other")))
    with lakebed.open(chosen) as lh:
        assert lh.root == chosen


def test_open_honours_the_storage_setting(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "p")
    (root / CONFIG_FILE).write_text("name: p\nstorage: tables\n", encoding="utf-8")
    with lakebed.open(root) as lh:
        lh.write("bronze.t", [{"id": 1}])
    assert (root / "tables" / "bronze" / "t" / "_delta_log").is_dir()


def test_open_reports_a_broken_config(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "p")
    (root / CONFIG_FILE).write_text("name: p\nstorag: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key"):
        lakebed.open(root)


def test_data_survives_reopening(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "p")
    with lakebed.open(root) as lh:
        lh.write("silver.t", [{"id": 1}, {"id": 2}], description="two rows")
    with lakebed.open(root) as lh:
        assert lh.sql("select count(*) from silver.t").scalar() == 2
        assert lh.describe("silver.t").description == "two rows"


# -- catalog ---------------------------------------------------------------------------------


def test_tables_lists_the_catalog_and_follows_every_write(lh: Lakehouse) -> None:
    lh.write("silver.orders", [{"id": 1, "p": "a"}, {"id": 2, "p": "b"}], partition_by=["p"])
    lh.write("bronze.raw", [{"line": "x"}])
    records = lh.tables()
    assert [r.name for r in records] == ["bronze.raw", "silver.orders"]
    orders = records[1]
    assert (orders.layer, orders.version, orders.row_count) == ("silver", 1, 2)
    assert orders.partition_by == ["p"]
    assert orders.properties == {"delta.enableChangeDataFeed": "true"}
    assert orders.last_operation == "APPEND"
    assert orders.size_bytes is not None
    assert orders.size_bytes > 0
    first_size = orders.size_bytes

    lh.write("silver.orders", [{"id": 3, "p": "a"}])
    orders = lh.describe("silver.orders")
    assert (orders.version, orders.row_count) == (2, 3)
    assert orders.size_bytes is not None
    assert orders.size_bytes > first_size

    lh.table("silver.orders").delete("id = 1")
    orders = lh.describe("silver.orders")
    assert (orders.version, orders.row_count, orders.last_operation) == (3, 2, "DELETE")

    lh.table("silver.orders").merge([{"id": 9, "p": "c"}], keys=["id"])
    orders = lh.describe("silver.orders")
    assert (orders.version, orders.row_count, orders.last_operation) == (4, 3, "MERGE")
    assert [r.name for r in lh.tables("silver")] == ["silver.orders"]
    assert lh.tables("gold") == []


def test_tables_rejects_an_unknown_layer(lh: Lakehouse) -> None:
    with pytest.raises(StorageError) as info:
        lh.tables("platinum")
    assert info.value.hint == "layers are bronze, silver, gold, quarantine"


def test_describe_shows_catalog_fields(lh: Lakehouse) -> None:
    lh.create_table(
        "gold.revenue",
        pa.schema([("day", pa.date32()), ("total", pa.float64())]),
        description="daily revenue",
        owner="ana@example.com",
        domain="sales",
        tags=["finance", "daily"],
    )
    record = lh.describe("gold.revenue")
    assert record.name == "gold.revenue"
    assert record.description == "daily revenue"
    assert record.owner == "ana@example.com"
    assert record.domain == "sales"
    assert record.tags == ["finance", "daily"]
    assert record.row_count == 0
    assert record.version == 0
    assert record.path == str(Path(lh.storage_root) / "gold" / "revenue")


def test_domain_owner_comes_from_the_config(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "p")
    (root / CONFIG_FILE).write_text(
        "name: p\ndomains:\n  sales:\n    owner: team-sales@example.com\n", encoding="utf-8"
    )
    with lakebed.open(root) as lh:
        lh.write("gold.kpis", [{"k": 1}], domain="sales")
        assert lh.describe("gold.kpis").owner == "team-sales@example.com"


def test_describe_registers_a_table_found_on_disk(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "p")
    with lakebed.open(root) as lh:
        lh.write("silver.t", [{"id": 1}])
    # Another tool (or a lost metastore) left the table on disk without a catalog entry.
    (root / ".lakebed" / "metastore.db").unlink()
    with lakebed.open(root) as lh:
        assert lh.tables() == []
        record = lh.describe("silver.t")
        assert record.name == "silver.t"
        assert [r.name for r in lh.tables()] == ["silver.t"]


def test_schema_history_follows_evolution(lh: Lakehouse) -> None:
    lh.write("silver.t", [{"id": 1}])
    lh.write("silver.t", [{"id": 2, "note": "x"}])
    history = lh.schema_history("silver.t")
    assert [[c["name"] for c in h.columns] for h in history] == [["id"], ["id", "note"]]
    assert history[-1].table_version == 2


# -- writes by name --------------------------------------------------------------------------


def test_write_creates_appends_overwrites_and_merges(lh: Lakehouse) -> None:
    created = lh.write("silver.users", [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}])
    assert (created.version, created.operation) == (1, "APPEND")
    lh.write("silver.users", [{"id": 3, "name": "cy"}])
    assert lh.sql("select count(*) from silver.users").scalar() == 3
    merged = lh.write(
        "silver.users",
        [{"id": 2, "name": "BOB"}, {"id": 4, "name": "dee"}],
        mode="merge",
        keys=["id"],
    )
    assert merged.operation == "MERGE"
    assert lh.sql("select name from silver.users order by id").rows() == [
        ("ann",),
        ("BOB",),
        ("cy",),
        ("dee",),
    ]
    lh.write("silver.users", [{"id": 9, "name": "zed"}], mode="overwrite")
    assert lh.sql("select * from silver.users").dicts() == [{"id": 9, "name": "zed"}]


def test_write_creates_with_partitioning_and_catalog_fields(lh: Lakehouse) -> None:
    lh.write(
        "gold.sales",
        pa.table({"day": ["d1", "d2"], "total": [1.0, 2.0]}),
        partition_by=["day"],
        description="sales per day",
        owner="bo",
        tags=["x"],
    )
    assert lh.table("gold.sales").partition_by == ["day"]
    record = lh.describe("gold.sales")
    assert (record.description, record.owner, record.tags) == ("sales per day", "bo", ["x"])


def test_write_in_merge_mode_needs_keys(lh: Lakehouse) -> None:
    lh.write("silver.t", [{"id": 1}])
    with pytest.raises(StorageError, match="needs keys"):
        lh.write("silver.t", [{"id": 1}], mode="merge")
    assert lh.table("silver.t").version() == 1


def test_write_in_merge_mode_without_keys_does_not_create_the_table(lh: Lakehouse) -> None:
    with pytest.raises(StorageError, match="needs keys"):
        lh.write("silver.fresh", [{"id": 1}], mode="merge")
    with pytest.raises(TableNotFoundError):
        lh.table("silver.fresh")
    assert lh.tables() == []


def test_write_of_a_sorted_pandas_frame_does_not_add_its_index(lh: Lakehouse) -> None:
    frame = pd.DataFrame({"id": [3, 1, 2], "v": [0.3, 0.1, 0.2]}).sort_values("id")
    lh.write("bronze.frame", frame)
    assert lh.table("bronze.frame").schema().names == ["id", "v"]


def test_write_refuses_to_create_a_column_of_unknown_type(lh: Lakehouse) -> None:
    # An all-null column has no type; a table created with it cannot take real values later.
    with pytest.raises(SchemaMismatchError, match="note"):
        lh.write("bronze.events", [{"id": 1, "note": None}])
    lh.write("bronze.events", [{"id": 2, "note": "hello"}])
    assert lh.sql("select note from bronze.events").rows() == [("hello",)]


def test_write_rejects_data_it_cannot_read(lh: Lakehouse) -> None:
    with pytest.raises(StorageError, match="cannot write data of type int"):
        lh.write("silver.t", 42)
    assert lh.tables() == []


def test_drop_table_removes_files_and_catalog_entry(lh: Lakehouse) -> None:
    lh.write("silver.t", [{"id": 1}])
    path = Path(lh.table("silver.t").path)
    lh.drop_table("silver.t")
    assert not path.exists()
    assert lh.tables() == []
    with pytest.raises(TableNotFoundError):
        lh.table("silver.t")
    lh.write("silver.t", [{"name": "again"}])
    assert lh.sql("select * from silver.t").dicts() == [{"name": "again"}]


# -- names -----------------------------------------------------------------------------------


def test_unknown_table_names_the_closest_matches(lh: Lakehouse) -> None:
    lh.write("silver.orders", [{"id": 1}])
    lh.write("silver.customers", [{"id": 1}])
    for call in (lh.table, lh.describe, lh.drop_table):
        with pytest.raises(TableNotFoundError) as info:
            call("silver.ordrs")
        assert info.value.table == "silver.ordrs"
        assert "silver.orders" in str(info.value)


def test_unknown_table_without_matches_points_at_the_table_list(lh: Lakehouse) -> None:
    with pytest.raises(TableNotFoundError) as info:
        lh.table("gold.nothing")
    assert info.value.hint == "run `lakebed tables` to list the tables"


def test_invalid_names_are_rejected_before_touching_storage(lh: Lakehouse) -> None:
    for bad in ("orders", "platinum.orders", "silver.bad-name"):
        with pytest.raises(InvalidTableNameError):
            lh.write(bad, [{"id": 1}])
    assert lh.tables() == []


def test_table_handles_are_reused_and_accept_table_names(lh: Lakehouse) -> None:
    lh.write("silver.t", [{"id": 1}])
    assert lh.table("silver.t") is lh.table(TableName("silver", "t"))
    assert lh.table(" Silver.T ") is lh.table("silver.t")
    assert repr(lh) == f"Lakehouse({str(lh.root)!r})"


def test_track_run_records_success_with_rows(tmp_path: Path) -> None:
    lh = lakebed.open(lakebed.init_project(tmp_path / "p"))
    with lh.track_run("load", "bronze.x", source="file.csv") as run:
        run.rows = 42
    (record,) = lh.runs()
    assert (record.kind, record.target, record.status, record.rows) == (
        "load",
        "bronze.x",
        "success",
        42,
    )
    assert record.params == {"source": "file.csv"}
    assert record.finished_at is not None
    lh.close()


def test_track_run_records_failure_and_reraises(tmp_path: Path) -> None:
    lh = lakebed.open(lakebed.init_project(tmp_path / "p"))
    with pytest.raises(ValueError, match="boom"), lh.track_run("load"):
        raise ValueError("boom")
    (record,) = lh.runs(kind="load")
    assert record.status == "failed"
    assert record.error is not None
    assert "boom" in record.error
    lh.close()


def test_ingestion_records_the_sources_that_feed_a_table(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "p")
    (root / "lakebed.yml").write_text(
        "sources:\n"
        "  shop: {kind: files, path: shop/*.csv, target: bronze.orders}\n"
        "  partner: {kind: files, path: partner/*.csv, target: bronze.orders}\n"
    )
    for folder in ("shop", "partner"):
        (root / folder).mkdir()
        (root / folder / "a.csv").write_text("id,amount\n1,2.5\n")
    with lakebed.open(root) as lh:
        lh.ingest("shop")
        edges = lh.metastore.lineage_edges(downstream="bronze.orders")
        assert [(e.upstream_table, e.transform) for e in edges] == [
            ("source:partner", "table"),
            ("source:shop", "table"),
        ]


def test_a_broken_pipeline_declaration_stops_streams_not_model_runs(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "p")
    (root / "lakebed.yml").write_text("pipelines:\n  clicks: {topic: clicks, sql: 'selec'}\n")
    write_model(root, "silver.one", "select 1 as n")
    with lakebed.open(root) as lh:
        assert lh.run().ok
        with pytest.raises(ConfigError, match="clicks"):
            lh.stream(["clicks"], until_caught_up=True)


def test_check_results_are_those_of_the_checks_declared_now(tmp_path: Path) -> None:
    """A check taken out of a model's settings leaves no stale verdict in `lakebed checks`;
    the checks of lakebed.yml stay while they are declared."""
    root = lakebed.init_project(tmp_path / "p")
    (root / CONFIG_FILE).write_text("checks:\n  bronze.orders:\n    - row_count: {min: 1}\n")
    with lakebed.open(root) as lh:
        lh.write("bronze.orders", {"id": [1, 2], "customer": [10, None]})
        checks = "checks:\n  - not_null: customer\n  - unique: id\n"
        write_model(root, "silver.orders", "select * from bronze.orders", checks)
        lh.run()
        assert {(r.table, r.check) for r in lh.check_results()} == {
            ("bronze.orders", "row_count"),
            ("silver.orders", "not_null(customer)"),
            ("silver.orders", "unique(id)"),
        }
        write_model(
            root, "silver.orders", "select * from bronze.orders", "checks:\n  - unique: id\n"
        )
        assert {(r.table, r.check) for r in lh.check_results("silver.orders")} == {
            ("silver.orders", "unique(id)")
        }
        assert ("bronze.orders", "row_count") in {(r.table, r.check) for r in lh.check_results()}


def test_drop_table_takes_its_lineage_with_it(lh: Lakehouse) -> None:
    lh.write("bronze.orders", {"id": [1], "amount": [2.0]})
    write_model(lh.root, "gold.total", "select sum(amount) as total from bronze.orders")
    assert lh.run().ok
    assert lh.metastore.lineage_edges(downstream="gold.total")
    lh.drop_table("gold.total")
    assert lh.metastore.lineage_edges(downstream="gold.total") == []
    assert "gold.total" not in [t.name for t in lh.tables()]
