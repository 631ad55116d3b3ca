"""Reading what an incremental model's inputs changed: the net changed rows per key (from
the change data feed, or the files appended), the keys a change touched, and every row of
given keys."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from lakebed.storage import KeyLookup, Table, TableName, distinct_rows, last_per_key

if TYPE_CHECKING:
    from lakebed.transform.materialize import Workspace

_UPSERT = ("insert", "update_postimage")
# Order of change kinds within one commit: the last one per key is its net effect.
_RANK = {"update_preimage": 0, "delete": 1, "insert": 2, "update_postimage": 3}


@dataclass
class Delta:
    upserts: pa.Table
    removed: pa.Table | None  # rows whose key may have to go (deletes, update pre-images)


def input_delta(table: Table, since: int, until: int, keys: list[str]) -> Delta | None:
    """What changed in an input between two versions, or None when it cannot be known."""
    changes = table.changes(since + 1, until)
    if changes is not None:
        data_columns = _own_columns(changes)
        kinds = changes.column("_change_type")
        only_inserts = pc.all(pc.equal(kinds, "insert")).as_py() in (True, None)
        if only_inserts:
            return Delta(changes.select(data_columns), None)
        if not keys or not all(k in data_columns for k in keys):
            return None  # updates or deletes without the key: only a rebuild is exact
        order = pa.array(sorted(_RANK, key=_RANK.__getitem__))
        rank = pc.index_in(kinds, value_set=order).fill_null(_RANK["insert"]).cast(pa.int8())
        ranked = changes.append_column("__rank", rank)
        ranked = ranked.sort_by([("_commit_version", "ascending"), ("__rank", "ascending")])
        net = last_per_key(ranked, keys)
        is_upsert = pc.is_in(net.column("_change_type"), pa.array(_UPSERT))
        inserted = pc.is_in(ranked.column("_change_type"), pa.array(["insert"]))
        touched = ranked.filter(pc.invert(inserted)).select(keys)
        return Delta(net.filter(is_upsert).select(data_columns), touched)
    appended = table.appended_rows(since + 1, until)
    if appended is None:
        return None
    return Delta(appended, None)


def changed_rows(table: Table, since: int, until: int) -> pa.Table | None:
    """Every row an input changed between two versions, as it was and as it became
    (inserted, updated either way, deleted), with its own columns only; None when the
    change data feed does not cover them."""
    changes = table.changes(since + 1, until)
    return None if changes is None else changes.select(_own_columns(changes))


def _own_columns(changes: pa.Table) -> list[str]:
    """The input's columns among the change feed's (not `_change_type`, `_commit_*`)."""
    return [c for c in changes.column_names if c != "_change_type" and not c.startswith("_commit")]


def touched_keys(
    ws: Workspace,
    table: Table,
    versions: tuple[int, int],
    by: list[str],
    computed: Sequence[tuple[str, str]] = (),
) -> pa.Table | None:
    """The distinct values of the columns `by` in the rows an input changed between two
    versions, old and new (inserted, updated either way, deleted), those `computed` (column,
    expression) from the rows' columns; None when they cannot be known."""
    since, until = versions
    changes = table.changes(since + 1, until)
    if changes is None:
        changes = table.appended_rows(since + 1, until)
    if changes is None:
        return None
    if not computed:
        return changes.select(by).group_by(by).aggregate([]).select(by)
    expressions = dict(computed)
    chosen = ", ".join(f"{expressions.get(k, _quoted(k))} AS {_quoted(k)}" for k in by)
    query = f"SELECT DISTINCT {chosen} FROM __lakebed_changed"
    return ws.sql(query, relations={"__lakebed_changed": changes}).arrow()


def rows_of_keys(
    ws: Workspace,
    table: TableName,
    version: int | None,
    keys: pa.Table,
    columns: list[str] | None = None,
    computed: Sequence[tuple[str, str]] = (),
) -> pa.Table:
    """The rows (or `columns`) of `table` at `version` (None: the latest) whose values of
    `keys`' columns (or of the `computed` (column, expression) over its own) are among its
    rows."""
    expressions = {k: f"({_qualified(e, 't')})" for k, e in computed}
    on = " AND ".join(
        f"({expressions.get(k, f't.{_quoted(k)}')} IS NOT DISTINCT FROM k.{_quoted(k)})"
        for k in keys.column_names
    )
    wanted = ", ".join(f"t.{_quoted(c)}" for c in columns) if columns else "t.*"
    query = f"SELECT {wanted} FROM {table} AS t SEMI JOIN __lakebed_keys AS k ON {on}"
    return ws.sql(query, as_of=version, relations={"__lakebed_keys": keys}).arrow()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(expression: str, alias: str) -> str:
    """`expression` (DuckDB SQL over one table's columns) with its columns under `alias`."""
    tree = sqlglot.parse_one(expression, read="duckdb")
    for column in tree.find_all(exp.Column):
        column.set("table", exp.to_identifier(alias))
    return tree.sql(dialect="duckdb")


def lookup_soon(
    ws: Workspace,
    model: TableName,
    rows: pa.Table,
    keys: list[str],
    columns: Sequence[str] = (),
) -> Future[KeyLookup | None]:
    """The model's current rows of the keys of `rows`, looked up on a thread of its own
    while the caller computes what to compare them with (for a merge into a table with a
    change feed, the lookup decodes whole rows: it is the increment's longest read)."""
    table = ws.table(model)
    wanted = distinct_rows(rows, keys)
    future: Future[KeyLookup | None] = Future()

    def work() -> None:
        try:
            future.set_result(table.lookup(wanted, keys, columns))
        except BaseException as exc:  # handed to whoever waits for the lookup
            future.set_exception(exc)

    threading.Thread(target=work, name="lakebed-lookup", daemon=True).start()
    return future


def newer_rows(
    ws: Workspace,
    model: TableName,
    found: pa.Table,
    keys: list[str],
    order: Sequence[tuple[str, str]],
    early: Future[KeyLookup | None] | None = None,
) -> tuple[pa.Table, KeyLookup | None]:
    """Those of `found` (at most one row per key) that come before the model's current row
    of their key by `order` (its columns, and ORDER BY items over them), or whose key it
    does not hold yet: what a full rebuild would keep of them. A tie keeps the current
    row. With them, the lookup of the current rows, which the merge can use again.
    `early`: a lookup started before `found` was computed (`lookup_soon`), used when it
    looked for every key of `found`."""
    if found.num_rows == 0:
        return found, None
    index = "__lakebed_index"
    wanted = distinct_rows(found, keys)
    named = {c.lower() for c, _ in order}
    columns = list(dict.fromkeys(keys + [c for c in found.column_names if c.lower() in named]))
    looked_up = early.result() if early is not None else None
    if looked_up is None or not looked_up.holds(wanted, keys, columns):
        looked_up = ws.table(model).lookup(wanted, keys, columns)
    if looked_up is not None:
        current = looked_up.rows().select(columns)
    else:
        current = rows_of_keys(ws, model, None, wanted, columns)
    if current.num_rows == 0:
        return found, looked_up  # every key is new to the model (as appended keys are)
    numbered = found.select(columns).append_column(index, pa.array(range(found.num_rows)))
    partition = ", ".join(f'"{k}"' for k in keys)
    # The current row numbers NULL, and NULLS FIRST puts it first among equals.
    query = (
        f"SELECT {index} FROM (SELECT * FROM __lakebed_found UNION ALL BY NAME "
        f"SELECT * FROM __lakebed_current) QUALIFY row_number() OVER (PARTITION BY "
        f"{partition} ORDER BY {', '.join(o for _, o in order)}, {index} NULLS FIRST) = 1 "
        f"AND {index} IS NOT NULL"
    )
    relations = {"__lakebed_found": numbered, "__lakebed_current": current}
    kept = ws.sql(query, relations=relations).arrow().column(index)
    return found.take(pc.take(kept, pc.sort_indices(kept))), looked_up  # in `found`'s order
