"""Small helpers shared by the storage, process and lakehouse tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

import lakebed
from lakebed import Lakehouse


def new_lakehouse(root: Path) -> Lakehouse:
    """A fresh project folder at `root`, opened."""
    lakebed.init_project(root)
    return lakebed.open(root)


def sorted_rows(table: pa.Table, key: str | list[str] = "id") -> list[dict[str, Any]]:
    """Rows of an Arrow table as dicts, ordered by `key` (None sorts first)."""
    keys = [key] if isinstance(key, str) else key
    return sorted(
        table.to_pylist(), key=lambda row: tuple((row[k] is not None, row[k]) for k in keys)
    )


def live_and_folder_files(table_path: str, snapshot_paths: list[str]) -> tuple[set[str], set[str]]:
    """Data files a snapshot references and data files sitting in the table folder (change
    data feed files under `_change_data/` are not data files)."""
    root = Path(table_path)
    folder = {
        str(p.resolve())
        for p in root.rglob("*.parquet")
        if p.relative_to(root).parts[0] != "_change_data"
    }
    live = {str(Path(p).resolve()) for p in snapshot_paths}
    return live, folder


def write_model(root: Path, name: str, sql: str, settings: str | None = None) -> None:
    """Write the SQL model `name` (layer.name) into the project at `root`, with its
    settings file when `settings` (YAML) is given."""
    layer, table = name.split(".")
    folder = root / "models" / layer
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{table}.sql").write_text(sql)
    if settings is not None:
        (folder / f"{table}.yml").write_text(settings)


def orders_and_customers(root: Path) -> Lakehouse:
    """A project at `root` holding four orders (one without a customer) and two customers,
    the tables most model tests build on."""
    lake = new_lakehouse(root)
    lake.write(
        "silver.orders",
        {"id": [1, 2, 3, 4], "customer": [10, 10, 20, None], "amount": [5.0, 7.5, 1.0, 3.0]},
    )
    lake.write("silver.customers", {"customer": [10, 20], "country": ["DE", "FR"]})
    return lake


def all_rows(lh: Lakehouse, table: str) -> list[tuple[Any, ...]]:
    """Every row of a table, sorted by all its columns."""
    return lh.sql(f"select * from {table} order by all").rows()


def column_edges(lh: Lakehouse, table: str) -> set[tuple[str, str, str, str]]:
    """The column lineage recorded for `table`: (column, upstream table, upstream column,
    transform) per edge."""
    edges = lh.metastore.lineage_edges(downstream=table)
    return {(e.downstream_column, e.upstream_table, e.upstream_column, e.transform) for e in edges}


def golden_cases(path: Path) -> list[tuple[str, str, list[str]]]:
    """(title, query, expected lines) for each blank-line separated case of a golden file:
    a `# title:` line, a query ending in `;` (over one line or more), the lines expected."""
    cases = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        title, query_lines, expected = "", [], []
        for line in block.strip().splitlines():
            if line.startswith("# title:"):
                title = line.removeprefix("# title:").strip()
            elif line.startswith("#"):
                continue
            elif not query_lines or not query_lines[-1].endswith(";"):
                query_lines.append(line)
            else:
                expected.append(line)
        if query_lines:
            cases.append((title, " ".join(query_lines).removesuffix(";"), expected))
    return cases
