"""Type 2 slowly changing dimensions: the history changes a keyed snapshot makes.

Each build compares the model's rows (one per key) with the current versions in its table:
a new key, or a changed one, gets a new current version; the version it replaces, and the
version of a key the rows no longer hold, is closed. What counts as a change follows dbt's
snapshot strategies: with `updated_at`, a later value of that column (the new version is
valid from it, and closes the old one then); else a different value of any of
`check_cols` (every column by default), valid from the time of the build.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lakebed.errors import TransformError
from lakebed.transform.definition import Model

if TYPE_CHECKING:
    from lakebed.transform.materialize import Workspace

SCD2_COLUMNS = ("valid_from", "valid_to", "is_current")
_STAMP = pa.timestamp("us", tz="UTC")


def with_history_columns(schema: pa.Schema) -> pa.Schema:
    """The schema of an scd2 model's table, from the schema of the rows its SQL returns."""
    kinds = (_STAMP, _STAMP, pa.bool_())
    return pa.schema([*schema, *map(pa.field, SCD2_COLUMNS, kinds)])


def _quoted(names: list[str], alias: str = "") -> str:
    return ", ".join(f'{alias}"{n}"' for n in names)


def history_changes(ws: Workspace, model: Model, data: pa.Table, now: datetime) -> pa.Table:
    """The rows `apply_history` takes (with `__action` `insert` or `close`) that bring the
    model's table to `data`, the model's rows now."""
    config = model.config
    keys = list(config.unique_key)
    clash = [c for c in SCD2_COLUMNS if c in data.column_names]
    if clash:
        raise TransformError(
            f"scd2 model {model.name} returns {', '.join(clash)}, which lakebed adds itself"
        )
    watched = list(config.check_cols) or [c for c in data.column_names if c not in keys]
    _require_columns(model, data, watched, config.updated_at)
    _require_unique(ws, model, data, keys)
    exists = ws.storage.exists(model.name)
    built = set(ws.table(model.name).schema().names) if exists else set()
    # A watched column the table does not have yet reads as null there (it was added).
    old = [f'"{c}"' if c in built else "null" for c in watched]
    new_digest = f"md5(cast(row({_quoted(watched) or 'null'}) as varchar))"
    old_digest = f"md5(cast(row({', '.join(old) or 'null'}) as varchar))"
    if exists:
        current = ws.sql(
            f"select {_quoted(keys)}, {old_digest} as __h, valid_from as __from "
            f"from {model.name} where is_current"
        ).arrow()
    else:
        empty = {k: data.column(k).slice(0, 0) for k in keys}
        current = pa.table(
            {**empty, "__h": pa.array([], pa.string()), "__from": pa.array([], _STAMP)}
        )
    stamp = f"cast('{now.isoformat()}' as timestamptz)"
    at = f'cast(n."{config.updated_at}" as timestamptz)' if config.updated_at else stamp
    fresh = f"(select *, {new_digest} as __h, {at} as __at from __lakebed_new n)"
    changed = "n.__at > c.__from" if config.updated_at else "n.__h <> c.__h"
    on = " and ".join(f'n."{k}" is not distinct from c."{k}"' for k in keys)
    relations = {"__lakebed_new": data, "__lakebed_current": current}
    inserts = ws.sql(
        f"select n.* exclude (__h, __at), n.__at as valid_from from {fresh} n "
        f"left join __lakebed_current c on {on} where c.__h is null or {changed}",
        relations=relations,
    ).arrow()
    # A key the rows no longer hold closes at the build; a changed one when it changed.
    closes = ws.sql(
        f"select {_quoted(keys, 'c.')}, coalesce(n.__at, {stamp}) as valid_from "
        f"from __lakebed_current c left join {fresh} n on {on} "
        f"where n.__h is null or {changed}",
        relations=relations,
    ).arrow()
    return _actions(inserts, closes, keys)


def _require_columns(
    model: Model, data: pa.Table, watched: list[str], updated_at: str | None
) -> None:
    """`check_cols` and `updated_at` name columns of the model's rows, `updated_at` a
    timestamp or date one without nulls."""
    hint = f"name columns of its SELECT in {model.path.with_suffix('.yml')}"
    missing = [c for c in watched if c not in data.column_names]
    if missing:
        raise TransformError(
            f"scd2 model {model.name}: check_cols {', '.join(missing)} not among its "
            f"columns ({', '.join(data.column_names)})",
            hint=hint,
        )
    if updated_at is None:
        return
    if updated_at not in data.column_names:
        raise TransformError(
            f"scd2 model {model.name}: updated_at column {updated_at!r} is not among its "
            f"columns ({', '.join(data.column_names)})",
            hint=hint,
        )
    column = data.column(updated_at)
    if not (pa.types.is_timestamp(column.type) or pa.types.is_date(column.type)):
        raise TransformError(
            f"scd2 model {model.name}: updated_at column {updated_at!r} is {column.type}, "
            "not a timestamp or date",
            hint=f"cast it in the SQL, e.g. `cast({updated_at} as timestamp)`",
        )
    if column.null_count:
        raise TransformError(
            f"scd2 model {model.name}: updated_at column {updated_at!r} is null in "
            f"{column.null_count} rows: their versions would have no start",
            hint=f"coalesce it in the SQL, or drop those rows with a not_null check on "
            f"{updated_at} of severity drop",
        )


def _require_unique(ws: Workspace, model: Model, data: pa.Table, keys: list[str]) -> None:
    """One row per key: two current versions of a key would make its history ambiguous."""
    listed = _quoted(keys)
    repeated = ws.sql(
        f"select {listed}, count(*) as __n from __lakebed_new group by all having count(*) > 1 "
        f"order by __n desc, {listed} limit 6",
        relations={"__lakebed_new": data.select(keys)},
    ).arrow()
    if repeated.num_rows == 0:
        return
    shown = [
        ", ".join(f"{k}={row[k]!r}" for k in keys) + f" ({row['__n']} rows)"
        for row in repeated.to_pylist()[:5]
    ]
    more = ", ..." if repeated.num_rows > 5 else ""
    raise TransformError(
        f"scd2 model {model.name} returns several rows for one {', '.join(keys)}: "
        f"{'; '.join(shown)}{more}",
        hint=f"return one row per key, e.g. QUALIFY row_number() OVER (PARTITION BY {listed} "
        "ORDER BY <last modified> DESC) = 1",
    )


def _actions(inserts: pa.Table, closes: pa.Table, keys: list[str]) -> pa.Table:
    """New versions and closing rows in one table with `__action`; a closing row carries
    the key and, as `valid_from`, when the version it closes ends."""
    insert_rows = inserts.set_column(
        inserts.schema.get_field_index("valid_from"),
        "valid_from",
        inserts.column("valid_from").cast(_STAMP),
    )
    insert_rows = insert_rows.append_column("valid_to", pa.nulls(inserts.num_rows, _STAMP))
    insert_rows = insert_rows.append_column(
        "is_current", pa.repeat(pa.scalar(True), inserts.num_rows)
    )
    columns: dict[str, Any] = {}
    for field_ in insert_rows.schema:
        if field_.name in keys:
            columns[field_.name] = closes.column(field_.name).cast(field_.type)
        elif field_.name == "valid_from":
            columns[field_.name] = closes.column("valid_from").cast(_STAMP)
        else:
            columns[field_.name] = pa.nulls(closes.num_rows, field_.type)
    close_rows = pa.table(columns, schema=insert_rows.schema)
    return pa.concat_tables(
        [
            insert_rows.append_column("__action", pa.repeat(pa.scalar("insert"), inserts.num_rows)),
            close_rows.append_column("__action", pa.repeat(pa.scalar("close"), closes.num_rows)),
        ]
    )
