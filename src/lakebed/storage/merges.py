"""Merges beyond a plain upsert: deletions in the same commit, and type-2 history."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from lakebed.errors import SchemaMismatchError
from lakebed.storage.key_rows import KeyLookup
from lakebed.storage.merge_on_read import merge_on_read
from lakebed.storage.schema import reconcile
from lakebed.storage.table_support import WRITER_PROPERTIES, key_strings

if TYPE_CHECKING:
    from lakebed.storage.table import Table, WriteResult


def merge_with_deletes(
    table: Table,
    source: pa.Table,
    keys: list[str],
    delete_keys: pa.Table,
    predicate: str,
    app_transaction: tuple[str, int] | None,
    metadata: dict[str, Any] | None,
) -> WriteResult:
    # One commit for both: deletions ride in the merge source behind a marker column.
    marker = "__lakebed_delete"
    upserts = source.append_column(marker, pa.repeat(pa.scalar(False), source.num_rows))
    doomed = delete_keys.select(keys).cast(source.select(keys).schema)
    doomed = doomed.group_by(keys).aggregate([]).select(keys)
    doomed = doomed.filter(
        pc.invert(pc.is_in(key_strings(doomed, keys), key_strings(source, keys)))
    )
    columns = {
        name: doomed.column(name)
        if name in keys
        else pa.nulls(doomed.num_rows, source.schema.field(name).type)
        for name in source.column_names
    }
    columns[marker] = pa.repeat(pa.scalar(True), doomed.num_rows)
    merged = pa.concat_tables([upserts, pa.table(columns, schema=upserts.schema)])
    assign = {f'"{c}"': f's."{c}"' for c in source.column_names}
    with table._errors("merge"):
        metrics = (
            table.delta()
            .merge(
                merged,
                predicate=predicate,
                source_alias="s",
                target_alias="t",
                writer_properties=WRITER_PROPERTIES,
                commit_properties=table._commit_properties(app_transaction, metadata),
            )
            .when_matched_delete(predicate=f's."{marker}"')
            .when_matched_update(updates=assign, predicate=f'NOT s."{marker}"')
            .when_not_matched_insert(updates=assign, predicate=f'NOT s."{marker}"')
            .execute()
        )
    return table._latest("MERGE", metrics)


def apply_history(
    table: Table,
    changes: pa.Table,
    keys: list[str],
    app_transaction: tuple[str, int] | None,
    metadata: dict[str, Any] | None,
) -> WriteResult:
    """Apply slowly-changing-dimension (type 2) changes in one commit.

    `changes` holds rows with an `__action` column: `close` ends the current version of
    a key (sets `valid_to`, clears `is_current`), `insert` adds a new current version.
    """
    action = "__action"
    # The SQL may have gained columns (the table gets them: older versions read null) or
    # lost some (new versions hold null there), as dbt snapshots evolve.
    fitted = reconcile(
        str(table.name),
        pa.schema(table.delta().schema().to_arrow()),
        changes.drop_columns([action]),
        allow_missing_columns=True,
        partition_by=table.partition_by,
    )
    merge_schema = table._evolve(fitted.data, fitted.new_columns)
    if changes.num_rows == 0 and not merge_schema:
        # delta-rs commits no merge of nothing, and the build (its new definition, the
        # input versions it saw) must still be recorded: an empty append records it.
        properties = table._commit_properties(app_transaction, metadata)
        dt = table.delta()
        with table._errors("merge"):
            dt.create_write_transaction([], "append", dt.schema(), commit_properties=properties)
        return table._latest("WRITE")
    changes = fitted.data.append_column(action, changes.column(action))
    closing = pc.equal(changes.column(action), "close")
    merge_key = [
        pc.if_else(closing, changes.column(k), pa.nulls(changes.num_rows, changes.column(k).type))
        for k in keys
    ]
    source = changes
    for key, column in zip(keys, merge_key, strict=True):
        source = source.append_column(f"__key_{key}", column)
    # Only closes match (a NULL key is a key: it closes too); inserts never do.
    matched = " AND ".join(f'(t."{k}" IS NOT DISTINCT FROM s."__key_{k}")' for k in keys)
    predicate = f"{matched} AND s.\"{action}\" = 'close' AND t.is_current"
    columns = [c for c in changes.column_names if c != action]
    insert = {f'"{c}"': f's."{c}"' for c in columns}
    with table._errors("merge"):
        metrics = (
            table.delta()
            .merge(
                source,
                predicate=predicate,
                source_alias="s",
                target_alias="t",
                merge_schema=merge_schema,
                writer_properties=WRITER_PROPERTIES,
                commit_properties=table._commit_properties(app_transaction, metadata),
            )
            .when_matched_update(
                updates={"valid_to": "s.valid_from", "is_current": "false"},
                predicate=f"s.\"{action}\" = 'close'",
            )
            .when_not_matched_insert(updates=insert, predicate=f"s.\"{action}\" = 'insert'")
            .execute()
        )
    return table._latest("MERGE", metrics)


def upsert(
    table: Table,
    data: pa.Table,
    key_list: list[str],
    *,
    when_matched: Literal["update", "ignore", "delete"],
    when_not_matched: Literal["insert", "ignore"],
    delete_unmatched_target: bool,
    allow_missing_columns: bool,
    delete_keys: pa.Table | None,
    app_transaction: tuple[str, int] | None,
    metadata: dict[str, Any] | None,
    looked_up: KeyLookup | None = None,
    on_planned: Callable[[int], None] | None = None,
) -> WriteResult:
    """See `Table.merge`: with deletion vectors where the table allows (`merge_on_read`),
    else with delta-rs."""
    dt = table.delta()
    schema = pa.schema(dt.schema().to_arrow())
    missing = [k for k in key_list if k not in schema.names]
    if missing:
        raise SchemaMismatchError(
            str(table.name), [f"merge key {k} is not a column of the table" for k in missing]
        )
    fitted = reconcile(
        str(table.name),
        schema,
        data,
        allow_missing_columns=allow_missing_columns,
        partition_by=table.partition_by,
    )
    source = fitted.data
    keys_text = ", ".join(key_list)
    if source.num_rows:
        if len(key_list) == 1:  # hashing one column is about twice as fast
            distinct = len(pc.unique(source.column(key_list[0])))
        else:
            distinct = source.group_by(key_list).aggregate([]).num_rows
        if distinct != source.num_rows:
            raise SchemaMismatchError(
                str(table.name),
                [f"{source.num_rows - distinct} rows repeat a merge key ({keys_text})"],
                hint="deduplicate the data by its key before merging",
            )
    if (
        not fitted.new_columns
        and when_matched == "update"
        and when_not_matched == "insert"
        and not delete_unmatched_target
    ):
        with table._errors("merge"):
            done = merge_on_read(
                table,
                source,
                key_list,
                delete_keys,
                app_transaction,
                metadata,
                looked_up,
                on_planned,
            )
        if done is not None:
            return done
    merge_schema = table._evolve(source, fitted.new_columns)
    dt = table.delta()
    # A NULL key is a key like any other value (as GROUP BY and PARTITION BY see it).
    predicate = " AND ".join(f'(t."{k}" IS NOT DISTINCT FROM s."{k}")' for k in key_list)
    if delete_keys is not None and delete_keys.num_rows:
        return merge_with_deletes(
            table, source, key_list, delete_keys, predicate, app_transaction, metadata
        )
    with table._errors("merge"):
        merger = dt.merge(
            source,
            predicate=predicate,
            source_alias="s",
            target_alias="t",
            merge_schema=merge_schema,
            writer_properties=WRITER_PROPERTIES,
            commit_properties=table._commit_properties(app_transaction, metadata),
        )
        if when_matched == "update":
            merger = merger.when_matched_update_all()
        elif when_matched == "delete":
            merger = merger.when_matched_delete()
        if when_not_matched == "insert":
            merger = merger.when_not_matched_insert_all()
        if delete_unmatched_target:
            merger = merger.when_not_matched_by_source_delete()
        metrics = merger.execute()
    return table._latest("MERGE", metrics)
