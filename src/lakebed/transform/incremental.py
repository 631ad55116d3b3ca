"""Reading an incremental model's increment: what its inputs changed between the versions
it last processed and now, read as `increments` says each changed input must be (changed
rows, every row of the keys they touch, new rows compared with the model's own), and the
model's code run over them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from lakebed.storage import KeyLookup, TableName, distinct_keys
from lakebed.transform.changes import (
    Delta,
    changed_rows,
    input_delta,
    lookup_soon,
    newer_rows,
    rows_of_keys,
    touched_keys,
)
from lakebed.transform.definition import Model
from lakebed.transform.execute import rewrite, run_python
from lakebed.transform.increments import Increment, increment_shape, key_source, without_qualify

if TYPE_CHECKING:
    from lakebed.transform.materialize import Workspace


@dataclass
class Increase:
    """An increment's rows (repeated keys kept, so checks see every row; publishing keeps
    the last), the keys whose rows may have to go, and the key values it computed again
    from all their rows (per input)."""

    data: pa.Table
    deleted_keys: pa.Table | None
    recomputed: list[pa.Table] = field(default_factory=list)
    looked_up: KeyLookup | None = None  # the model's rows a merge of `data` replaces


@dataclass
class Rebuild:
    """Only a full rebuild is exact (`reason`: why, for people)."""

    reason: str | None = None


def read_increment(
    ws: Workspace,
    model: Model,
    changed: list[TableName],
    last: dict[str, int],
    now: dict[str, int],
    *,
    ahead: bool = False,
) -> Increase | Rebuild:
    """The model's rows for what its `changed` inputs changed since the versions `last`.
    `ahead`: the changed inputs' versions `now` are not committed yet (`compute_ahead`):
    they may be read as changed rows only, not as tables (a Rebuild says it cannot be)."""
    keys = list(model.config.unique_key)
    merge = model.config.incremental_strategy == "merge"
    # A merged model's increment must equal a full rebuild (an appending one's SQL runs
    # over each batch of new rows on its own).
    schemas = {name: ws.table(name).schema().names for name in model.inputs}
    shapes = _shapes(model, changed, keys, schemas) if merge else {}
    full = ", ".join(str(name) for name, shape in shapes.items() if shape.shape == "full")
    if full and model.sql is None:
        return Rebuild(f"its function reads {full}, which does not hold its key: rebuilt in full")
    if full:
        return Rebuild(f"its SQL reads {full} neither row by row nor by key: rebuilt in full")
    deltas: dict[TableName, Delta] = {}
    touched: dict[TableName, pa.Table] = {}
    for name in changed:
        # A key's row that a check dropped is not in the table: nothing to compare with.
        if name in shapes and shapes[name].shape == "latest" and not model.drops_rows:
            delta = input_delta(ws.table(name), last[str(name)], now[str(name)], keys)
            if delta is not None and delta.removed is None:  # the input only gained rows
                deltas[name] = delta
                continue
            if delta is not None and delta.removed is not None:  # read the keys' rows
                changed_keys = [delta.upserts.select(keys), delta.removed.select(keys)]
                both = pa.concat_tables(changed_keys, promote_options="permissive")
                touched[name] = both.group_by(keys).aggregate([]).select(keys)
                continue
        by = list(shapes[name].by) if name in shapes else []
        if by:
            versions = (last[str(name)], now[str(name)])
            computed = shapes[name].computed
            found = touched_keys(ws, ws.table(name), versions, by, computed)
            if found is None:
                return Rebuild(_unread(name, last))
            touched[name] = found
            continue
        delta = input_delta(ws.table(name), last[str(name)], now[str(name)], keys)
        # A removed row takes its output row with it only when the output's key comes
        # from it (a customer's order gone leaves them a buyer if they have another).
        by_row = model.sql is not None and shapes.get(name) == Increment("rows")
        removes = delta is not None and delta.removed is not None
        if by_row and (delta is None or (removes and not _source(model, name, schemas))):
            # Recompute the output rows the input's old and new rows take part in, from
            # the input that holds the key (for a dimension, or a filter).
            found = _keys_given(ws, model, name, (last[str(name)], now[str(name)]), schemas)
            if found is None:
                return Rebuild(_unread(name, last))
            source, affected = found
            earlier = touched.get(source)
            touched[source] = (
                affected
                if earlier is None
                else pa.concat_tables([earlier, affected.cast(earlier.schema)])
            )
            continue
        if not merge and (delta is None or delta.removed is not None):
            return Rebuild(f"{name} updated or deleted rows, which appending cannot take back")
        if delta is None:
            return Rebuild(_unread(name, last))
        deltas[name] = delta
    if ahead and touched:
        return Rebuild("the rows of the keys a change touches are read from its table")
    outputs: list[pa.Table] = []
    removed: list[pa.Table] = []
    looked_up = None
    for name, values in touched.items():
        # Every row of the keys the changes touch: the model aggregates within them.
        computed = shapes[name].computed if name in shapes else ()
        rows = rows_of_keys(ws, name, now[str(name)], values, computed=computed)
        if model.sql is not None:
            relation = f"__lakebed_changes_{name.layer}_{name.name}"
            sql = rewrite(model.sql, name, relation)
            outputs.append(ws.sql(sql, relations={relation: rows}).arrow())
        else:
            frames = {i: ws.sql(f"select * from {i}").arrow() for i in model.inputs if i != name}
            outputs.append(run_python(model, {**frames, name: rows}))
        # What those keys held and is no longer computed goes.
        whole = values.column_names == keys
        removed.append(values if whole else rows_of_keys(ws, model.name, None, values, keys))
    for name, delta in deltas.items():
        relation = f"__lakebed_changes_{name.layer}_{name.name}"
        if model.kind == "sql":
            assert model.sql is not None
            latest = name in shapes and shapes[name].shape == "latest"
            early = None
            alone = len(deltas) == 1 and not touched  # the merge's keys are this input's
            if merge and (latest or alone) and set(keys) <= set(delta.upserts.column_names):
                # The input's key columns are the model's (most often): the model's rows of
                # those keys, which the merge replaces, are looked up while its SQL runs.
                compared = [c for c, _ in shapes[name].order] if latest else []
                early = lookup_soon(ws, model.name, _keys_of(delta, keys), keys, compared)
            query = model.sql
            if latest and distinct_keys(delta.upserts, list(shapes[name].by)):
                # Each key once among the new rows: every row is its key's first, and the
                # QUALIFY that picks it keeps them all (a window costs DuckDB half the query).
                query = without_qualify(query)
            sql = rewrite(query, name, relation)
            found = ws.sql(sql, relations={relation: delta.upserts}).arrow()
            if latest:
                # A key's first row is its current row or the new rows' first.
                order = shapes[name].order
                found, looked_up = newer_rows(ws, model.name, found, keys, order, early)
            elif early is not None:
                looked_up = early.result()  # the merge takes it if it holds every key
            outputs.append(found)
        else:
            frames = {i: ws.sql(f"select * from {i}").arrow() for i in model.inputs if i != name}
            frames[name] = delta.upserts
            outputs.append(run_python(model, frames))
        if delta.removed is not None:
            removed.append(delta.removed)
    data = pa.concat_tables(outputs, promote_options="default") if outputs else pa.table({})
    deleted = pa.concat_tables(removed, promote_options="permissive") if removed else None
    return Increase(data, deleted, list(touched.values()), looked_up)


def _unread(name: TableName, last: dict[str, int]) -> str:
    return (
        f"{name}'s changes since version {last[str(name)]} cannot be read row by row "
        "(no change data feed for them, or no key in the rows it changed)"
    )


def _keys_of(delta: Delta, keys: list[str]) -> pa.Table:
    """The key columns of the rows a change upserts and of those it may remove."""
    if delta.removed is None or not set(keys) <= set(delta.removed.column_names):
        return delta.upserts.select(keys)
    both = [delta.upserts.select(keys), delta.removed.select(keys)]
    return pa.concat_tables(both, promote_options="permissive")


def _source(model: Model, name: TableName, schemas: dict[TableName, list[str]]) -> bool:
    """Whether the model copies its whole key from `name`, read row by row."""
    assert model.sql is not None
    keys = list(model.config.unique_key)
    return key_source(model.sql, model.name, keys, schemas) == name


def _keys_given(
    ws: Workspace,
    model: Model,
    name: TableName,
    versions: tuple[int, int],
    schemas: dict[TableName, list[str]],
) -> tuple[TableName, pa.Table] | None:
    """The input holding the model's key (read row by row), and the keys of the output rows
    that `name`'s changed rows (between two versions), old and new, take part in; None when
    there is no such input or the changes are not known."""
    assert model.sql is not None
    keys = list(model.config.unique_key)
    source = key_source(model.sql, model.name, keys, schemas)
    rows = changed_rows(ws.table(name), *versions) if source not in (None, name) else None
    if source is None or rows is None:
        return None
    relation = f"__lakebed_changes_{name.layer}_{name.name}"
    given = ws.sql(rewrite(model.sql, name, relation), relations={relation: rows}).arrow()
    return source, given.select(keys).group_by(keys).aggregate([]).select(keys)


def _shapes(
    model: Model,
    changed: list[TableName],
    keys: list[str],
    schemas: dict[TableName, list[str]],
) -> dict[TableName, Increment]:
    """How the model must read each changed input (`increments.increment_shape`). A Python
    function cannot be read: it gets every row of the keys a change touches when the input
    holds the model's key (exact whether it works row by row or per key); a change to an
    input without the key (which the function may combine in any way) rebuilds it."""
    if model.sql is None:
        return {
            name: Increment("keys", tuple(keys))
            if keys and set(keys) <= set(schemas[name])
            else Increment("full")
            for name in changed
        }
    return {name: increment_shape(model.sql, model.name, name, keys, schemas) for name in changed}
