"""Running a model's code over given rows: its SQL with an input read from a relation
instead, and its Python function over frames of its inputs."""

from __future__ import annotations

import traceback
from functools import lru_cache
from typing import Any

import pyarrow as pa
import sqlglot
from sqlglot import exp

from lakebed.errors import StorageError, TransformError
from lakebed.process.pruning import table_name_of
from lakebed.storage import TableName, to_arrow
from lakebed.transform.definition import Model


def run_python(model: Model, frames: dict[TableName, pa.Table]) -> pa.Table:
    """The Python model's function over `frames` (one per input), as Arrow."""
    assert model.function is not None
    args: list[Any] = []
    for name in model.inputs:
        frame: Any = frames[name]
        if model.frame == "polars":
            import polars

            frame = polars.from_arrow(frame)
        elif model.frame == "pandas":
            frame = frame.to_pandas()
        args.append(frame)
    try:
        result = model.function(*args)
    except Exception as exc:
        # Where in the model's file: the deepest frame of the traceback that is in it.
        lines = [
            n
            for f, n in traceback.walk_tb(exc.__traceback__)
            if f.f_code.co_filename == str(model.path)
        ]
        where = f"{model.path}:{lines[-1]}" if lines else str(model.path)
        raise TransformError(f"model {model.name} ({where}) raised {exc!r}") from exc
    if result is None:
        raise TransformError(f"model {model.name} ({model.path}) returned nothing")
    try:
        return to_arrow(result)
    except (StorageError, pa.ArrowException) as exc:
        function = getattr(model.function, "__name__", "the function")
        raise TransformError(
            f"model {model.name} ({model.path}): {function}() returned "
            f"{type(result).__name__}, not a table"
            + ("" if isinstance(exc, StorageError) else f" ({exc})"),
            hint="return a pyarrow Table, a Polars DataFrame or a pandas DataFrame",
        ) from exc


@lru_cache(maxsize=1024)
def rewrite(sql: str, target: TableName, relation: str) -> str:
    """The model's SQL with every reference to `target` reading `relation` instead."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    for node in list(tree.find_all(exp.Table)):
        if table_name_of(node) == target:
            alias = node.alias or target.name
            node.replace(exp.to_table(relation).as_(alias))
    return tree.sql(dialect="duckdb")
