"""Query engines over the lakehouse: DuckDB snapshot SQL (embedded default)."""

from lakebed.process.engine import DuckDBEngine, SnapshotResolver
from lakebed.process.pruning import Predicate, prune, references
from lakebed.process.result import QueryResult, render_table
from lakebed.process.scan import scan_sql

__all__ = [
    "DuckDBEngine",
    "Predicate",
    "QueryResult",
    "SnapshotResolver",
    "prune",
    "references",
    "render_table",
    "scan_sql",
]
