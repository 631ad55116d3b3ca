"""Full builds of latest-per-key models with the window run over the keys that repeat.

A silver model that keeps the latest version of each key, `QUALIFY row_number() OVER
(PARTITION BY key ORDER BY updated_at DESC) = 1` over one bronze table, makes DuckDB group
every row of the input by key, though most keys of such a table occur once. Here the
keys that occur more than once are found first (one grouping of the key columns alone,
about a third of the window's work); the rows of every other key are kept as they are
(the QUALIFY keeps a partition of one row), and the window numbers only the repeated keys'
rows. Both queries read the same version of the input. When no key repeats, the SELECT
runs without its QUALIFY; when the repeated keys hold most of the rows, as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from lakebed.process.pruning import table_name_of
from lakebed.storage import TableName
from lakebed.transform.increments import first_per_key, without_qualify

# The keys that occur more than once, as the split query reads them, with their row count.
REPEATED = "__lakebed_repeated"
ROWS_COLUMN = "__lakebed_rows"
# Below this many input rows the second query costs more than the window it saves.
MIN_ROWS = 100_000


@dataclass(frozen=True)
class LatestPlan:
    """How to compute a latest-per-key SELECT (`sql`) over `table`: `repeated_sql` returns
    the keys occurring more than once, as `key_columns`, with their row count
    (`ROWS_COLUMN`); then `query` says what computes the rows."""

    sql: str
    table: TableName
    key_columns: tuple[str, ...]
    repeated_sql: str
    split_sql: str  # the rows, given the repeated keys as `REPEATED`
    unqualified_sql: str  # the rows when no key repeats

    def query(self, repeated: pa.Table, total: int) -> tuple[str, dict[str, pa.Table]]:
        """The query for the rows, with the relations it reads, given what `repeated_sql`
        returned and about how many rows the input holds."""
        if repeated.num_rows == 0:  # every partition holds one row: the QUALIFY keeps them
            return self.unqualified_sql, {}
        if 2 * int(pc.sum(repeated.column(ROWS_COLUMN)).as_py()) > total:
            return self.sql, {}  # most rows are to be numbered anyway
        return self.split_sql, {REPEATED: repeated.select(list(self.key_columns))}


@lru_cache(maxsize=256)
def latest_plan(sql: str) -> LatestPlan | None:
    """The plan for a model's SELECT that keeps one row per key of the one table it reads
    (`increments.first_per_key`, with no ORDER BY or LIMIT of its own); None for any other."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return None
    if not isinstance(tree, exp.Select) or any(
        tree.args.get(part) for part in ("order", "limit", "offset", "joins")
    ):
        return None
    tables = list(tree.find_all(exp.Table))
    windows = list(tree.find_all(exp.Window))
    if len(tables) != 1 or len(windows) != 1:
        return None
    read = tables[0]
    name = table_name_of(read)
    alias = read.alias or read.name
    partition = windows[0].args.get("partition_by") or []
    keys = tuple(c.name for c in partition if isinstance(c, exp.Column))
    if name is None or not keys or len({k.lower() for k in keys}) != len(partition):
        return None
    if not first_per_key(tree, {k.lower() for k in keys}, alias.lower()):
        return None
    if _shadowed(tree, {k.lower() for k in keys}):
        return None
    key_columns = tuple(f"__lakebed_key_{i}" for i in range(len(keys)))
    source = read.copy()
    source.set("alias", None)
    pairs = list(zip(keys, key_columns, strict=True))
    repeated = (
        exp.select(*[exp.column(k, quoted=True).as_(c) for k, c in pairs])
        .select(exp.Count(this=exp.Star()).as_(ROWS_COLUMN))
        .from_(source)
        .group_by(*[exp.column(k, quoted=True) for k in keys])
        .having(exp.Count(this=exp.Star()) > 1)
    )
    matches = exp.and_(
        *[
            exp.NullSafeEQ(
                this=exp.column(k, table=alias, quoted=True),
                expression=exp.column(c, table=REPEATED),
            )
            for k, c in pairs
        ]
    )
    single = tree.copy()
    single.set("qualify", None)
    single = single.join(exp.to_table(REPEATED), on=matches, join_type="anti")
    several = tree.copy().join(exp.to_table(REPEATED), on=matches, join_type="semi")
    split = exp.union(single, several, distinct=False)
    return LatestPlan(
        sql=sql,
        table=name,
        key_columns=key_columns,
        repeated_sql=repeated.sql(dialect="duckdb"),
        split_sql=split.sql(dialect="duckdb"),
        unqualified_sql=without_qualify(sql),
    )


def _shadowed(tree: exp.Select, keys: set[str]) -> bool:
    """Whether the select list names another expression after a key column (the window
    might then partition by that expression, not by the table's column)."""
    for selected in tree.expressions:
        if isinstance(selected, exp.Alias) and selected.alias.lower() in keys:
            inner = selected.this
            if not (isinstance(inner, exp.Column) and inner.name.lower() == selected.alias.lower()):
                return True
    return False
