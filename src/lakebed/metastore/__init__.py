"""The metastore: catalog of tables, schema history and run log (SQLite or PostgreSQL).

Example::

    store = Metastore.for_project(Path(".lakebed"))  # SQLite file, upgraded on open
    store.upsert_table("silver.orders", layer="silver", path="/lake/silver/orders")
"""

from lakebed.metastore.migrations import MIGRATIONS, Migration
from lakebed.metastore.schema import RunRecord, SchemaVersion, TableRecord
from lakebed.metastore.store import RUN_STATUSES, Metastore

__all__ = [
    "MIGRATIONS",
    "RUN_STATUSES",
    "Metastore",
    "Migration",
    "RunRecord",
    "SchemaVersion",
    "TableRecord",
]
