"""Delta Lake tables in bronze/silver/gold/quarantine layers (delta-rs)."""

from lakebed.storage.key_rows import KeyLookup
from lakebed.storage.naming import CDF_LAYERS, LAYERS, TableName
from lakebed.storage.properties import CHANGE_FEED, TABLE_PROPERTIES, property_problems
from lakebed.storage.schema import columns_of, normalise, reconcile, to_arrow
from lakebed.storage.snapshot import Snapshot, absolute_file_path
from lakebed.storage.store import DeltaStore
from lakebed.storage.table import AsOf, Table, WriteResult
from lakebed.storage.table_support import distinct_keys, distinct_rows, last_per_key

__all__ = [
    "CDF_LAYERS",
    "CHANGE_FEED",
    "LAYERS",
    "TABLE_PROPERTIES",
    "AsOf",
    "DeltaStore",
    "KeyLookup",
    "Snapshot",
    "Table",
    "TableName",
    "WriteResult",
    "absolute_file_path",
    "columns_of",
    "distinct_keys",
    "distinct_rows",
    "last_per_key",
    "normalise",
    "property_problems",
    "reconcile",
    "to_arrow",
]
