"""Two writers of one table: refused before either writes."""

from __future__ import annotations

from pathlib import Path

import pytest

import lakebed
from helpers import write_model
from lakebed.errors import ConfigError, ModelError
from lakebed.storage import TableName

SOURCE = "sources:\n  raw: {kind: files, path: data/*.csv, target: silver.orders}\n"
PIPELINE = "pipelines:\n  clicks: {topic: clicks, target: silver.orders}\n"


def _project(tmp_path: Path, config: str) -> lakebed.Lakehouse:
    root = lakebed.init_project(tmp_path / "p")
    (root / "lakebed.yml").write_text(config)
    (root / "data").mkdir()
    (root / "data" / "a.csv").write_text("id,amount\n1,2.5\n")
    write_model(root, "silver.orders", "select 1 as id")
    return lakebed.open(root)


def test_ingestion_into_a_models_table_is_refused_before_it_writes(tmp_path: Path) -> None:
    lh = _project(tmp_path, SOURCE)
    with pytest.raises(ConfigError, match=r"source 'raw' writes silver\.orders") as info:
        lh.ingest("raw")
    assert "models/silver/orders.sql" in str(info.value)
    assert not lh.storage.exists(TableName.parse("silver.orders"))
    with pytest.raises(ModelError, match="ingestion source 'raw'"):
        lh.graph()


def test_a_stream_into_a_models_table_is_refused_before_it_reads(tmp_path: Path) -> None:
    lh = _project(tmp_path, PIPELINE)
    with pytest.raises(ConfigError, match=r"pipeline 'clicks' writes silver\.orders"):
        lh.stream(["clicks"], until_caught_up=True)
    assert not lh.storage.exists(TableName.parse("silver.orders"))
    with pytest.raises(ModelError, match="stream pipeline 'clicks'") as info:
        lh.run()
    assert "point the pipeline at another table" in (info.value.hint or "")


def test_a_model_file_in_no_layer_is_left_to_the_model_loader(tmp_path: Path) -> None:
    lh = _project(tmp_path, SOURCE.replace("silver.orders", "bronze.orders"))
    (lh.root / "models" / "stray.sql").write_text("select 1")
    assert lh.ingest("raw").rows == 1  # the stray file is no model of bronze.orders
    with pytest.raises(ModelError, match="layer folder"):
        lh.run()


def test_a_model_in_an_undeclared_domain_is_refused_once_domains_are_declared(
    tmp_path: Path,
) -> None:
    lh = _project(tmp_path, "")
    write_model(lh.root, "silver.orders", "select 1 as id", "domain: salez\n")
    assert lh.graph()  # no domains declared: a domain is a free label
    (lh.root / "lakebed.yml").write_text("domains:\n  sales: {owner: sales@example.com}\n")
    lh = lakebed.open(lh.root)
    with pytest.raises(ConfigError, match=r"domain 'salez', which lakebed\.yml does not") as info:
        lh.graph()
    assert info.value.hint == "did you mean sales?"
    write_model(lh.root, "silver.orders", "select 1 as id", "domain: sales\n")
    assert lh.run().ok
    assert lh.describe("silver.orders").owner == "sales@example.com"  # the domain's owner
