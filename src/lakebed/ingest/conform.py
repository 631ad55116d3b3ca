"""Fit parsed records to the bronze table under the source's schema policy.

`evolve` adds new columns; `discard_row` sends records with new fields to quarantine;
`freeze` fails the run on them. A value that cannot be stored as its column's type is
quarantined under every policy but `freeze`, which fails: nothing is silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakebed.errors import SchemaContractError
from lakebed.ingest.base import Reject, SchemaPolicy

METADATA_COLUMNS = ("_ingested_at", "_source", "_load_id", "_origin")


@dataclass
class Conformed:
    data: pa.Table
    location: pa.Array
    position: pa.Array
    rejects: list[Reject] = field(default_factory=list)


def origin_text(location: pa.Array, position: pa.Array, index: int) -> str:
    where = location[index].as_py()
    at = position[index].as_py()
    return str(where) if at is None else f"{where}:{at}"


_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def _casts(values: pa.Array, target: pa.DataType) -> bool:
    try:
        values.cast(target)
    except _CAST_ERRORS:
        return False
    return True


def _failing(values: pa.Array, target: pa.DataType, offset: int = 0) -> list[int]:
    """Indices of the values that cannot be cast: halve the failing range until it is small,
    so one bad value among millions costs a few whole-column casts, not millions of tiny
    ones."""
    if _casts(values, target):
        return []
    if len(values) <= 64:
        return [offset + i for i in range(len(values)) if not _casts(values.slice(i, 1), target)]
    half = len(values) // 2
    return _failing(values.slice(0, half), target, offset) + _failing(
        values.slice(half), target, offset + half
    )


def _record_text(data: pa.Table, index: int) -> str:
    import json

    return json.dumps(data.slice(index, 1).to_pylist()[0], default=str)


def conform(
    source: str,
    data: pa.Table,
    location: pa.Array,
    position: pa.Array,
    table_schema: pa.Schema | None,
    policy: SchemaPolicy,
) -> Conformed:
    """Records cast to the table's types, new columns handled by `policy`, bad rows out."""
    # A column of only nulls has no type yet: leave it out until a value gives it one.
    untyped = [f.name for f in data.schema if pa.types.is_null(f.type)]
    if table_schema is not None:
        untyped = [n for n in untyped if n not in table_schema.names]
    if untyped:
        data = data.drop_columns(untyped)
    if table_schema is None:
        return Conformed(data, location, position)
    original = data
    bad = np.zeros(data.num_rows, dtype=bool)
    reasons: dict[int, str] = {}
    columns: dict[str, pa.ChunkedArray] = {}
    for name in data.column_names:
        column = data.column(name)
        if name not in table_schema.names:
            continue
        target = table_schema.field(name).type
        if column.type == target or pa.types.is_null(column.type):
            continue
        try:
            columns[name] = column.cast(target)
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
        failing = _failing(column.combine_chunks(), target)
        for index in failing:
            bad[index] = True
            value = column[index].as_py()
            reasons.setdefault(index, f"column {name}: {value!r} is not a {target}")
        mask = np.zeros(len(column), dtype=bool)
        mask[failing] = True
        cleaned = pc.if_else(pa.array(mask), pa.scalar(None, column.type), column)
        columns[name] = cleaned.cast(target)
    new = [n for n in data.column_names if n not in table_schema.names]
    if new and policy != "evolve":
        for name in new:
            present = pc.is_valid(data.column(name)).to_numpy(zero_copy_only=False)
            for found in np.flatnonzero(present):
                bad[found] = True
                reasons.setdefault(int(found), f"new field {name} (schema: {policy})")
        data = data.drop_columns(new)
    for name, column in columns.items():
        data = data.set_column(data.column_names.index(name), name, column)
    if not bad.any():
        return Conformed(data, location, position)
    if policy == "freeze":
        first = int(np.flatnonzero(bad)[0])
        raise SchemaContractError(
            f"{int(bad.sum())} records break the frozen schema; first: {reasons[first]}",
            source=source,
            origin=origin_text(location, position, first),
            hint="change `schema:` to evolve or discard_row, or fix the source",
        )
    rejects = [
        Reject(
            raw=_record_text(original, int(i)),
            error=reasons[int(i)],
            origin=origin_text(location, position, int(i)),
        )
        for i in np.flatnonzero(bad)
    ]
    keep = pa.array(np.flatnonzero(~bad))
    return Conformed(data.take(keep), location.take(keep), position.take(keep), rejects)
