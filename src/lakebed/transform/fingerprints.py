"""What a model computes, as hashes: a changed hash tells `lakebed run` to rebuild and
`lakebed plan` what changed (its logic, its settings, or how its rows are kept)."""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import pydantic_core
import sqlglot

from lakebed.transform.definition import Model, ModelConfig

# Settings added after tables recorded fingerprints count only when set: an upgrade of
# lakebed does not make every model look changed.
_LATER_SETTINGS = ("updated_at", "check_cols")


@lru_cache(maxsize=1024)
def _normalised_sql(sql: str) -> str:
    """The SQL as sqlglot normalises it (a run asks for each model's several times)."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    return tree.sql(dialect="duckdb", normalize=True, comments=False)


def _code(model: Model) -> str:
    if model.kind == "sql" and model.sql is not None:
        return _normalised_sql(model.sql)
    if model.function is not None:
        return _python_code(model.path, inspect.getsource(model.function))
    return ""


def _python_code(path: Path, function: str) -> str:
    """A Python model's module as its syntax tree: the helpers and constants its function
    uses count, comments and layout do not."""
    try:
        return ast.dump(ast.parse(path.read_text(encoding="utf-8")))
    except (OSError, SyntaxError, ValueError):
        return function  # defined elsewhere than in its file: the function alone


@lru_cache(maxsize=1)
def _later_defaults() -> dict[str, Any]:
    """The defaults of `_LATER_SETTINGS` (pydantic inspects a default factory each time)."""
    fields = ModelConfig.model_fields
    return {n: fields[n].get_default(call_default_factory=True) for n in _LATER_SETTINGS}


def fingerprint(model: Model) -> str:
    """A hash of what the model computes: its SQL normalised by sqlglot (so whitespace,
    comments and keyword case do not count), or a Python model's source, plus its settings."""
    settings = model.config.model_dump(
        exclude={"description", "columns", "owner", "tags", "enabled", "full_refresh"}
    )
    for name, default in _later_defaults().items():
        if settings.get(name) == default:
            del settings[name]
    text = pydantic_core.to_json(settings).decode()  # as model_dump_json writes it
    return hashlib.sha256(f"{_code(model)}\n{text}".encode()).hexdigest()[:16]


def definition_fingerprint(model: Model) -> str:
    """A hash of what decides the rows an incremental model's table keeps: its code, and
    how rows are kept (materialization, strategy, key, partitioning). Not its checks,
    schedule or table properties: those apply from the next build on, to new rows."""
    config = model.config
    kept = [config.materialized, config.incremental_strategy, config.unique_key]
    kept.append(config.partition_by)
    return hashlib.sha256(f"{_code(model)}\n{json.dumps(kept)}".encode()).hexdigest()[:16]


def redefined(model: Model, previous: Mapping[str, Any]) -> bool:
    """Whether the model now defines its rows otherwise than at the build `previous`
    recorded (a build of an earlier lakebed records no definition: its whole fingerprint
    stands in)."""
    recorded = previous.get("definition")
    if recorded is None:
        return bool(previous.get("fingerprint") != fingerprint(model))
    return bool(recorded != definition_fingerprint(model))


def code_fingerprint(model: Model) -> str:
    """A hash of the model's SQL (normalised) or Python source alone, without its settings:
    it tells a change of settings from a change of logic."""
    return hashlib.sha256(_code(model).encode()).hexdigest()[:16]
