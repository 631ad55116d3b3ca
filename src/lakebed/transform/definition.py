"""What a model is: a SQL SELECT or a Python function that builds one lakehouse table.

Models live in `models/<layer>/<name>.sql` or `.py`; optional settings sit beside them in
`<name>.yml`. The output table is `layer.name`; inputs are read from the SQL (sqlglot) or
declared in the Python decorator, never twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lakebed.config import parse_cron
from lakebed.storage import TABLE_PROPERTIES, TableName, property_problems

Materialization = Literal["view", "table", "incremental", "scd2"]
# Settings that take a list and accept one value written alone (`unique_key: id`).
_LIST_SETTINGS = ("unique_key", "partition_by", "tags", "check_cols")
FrameKind = Literal["arrow", "polars", "pandas"]


class ModelConfig(BaseModel):
    """The settings of one model (its `<name>.yml`, or the Python decorator's arguments)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # False leaves the model out of the project (its table, if built, stays as it is).
    enabled: bool = True
    materialized: Materialization = "table"
    unique_key: list[str] = Field(default_factory=list)
    # Unset: merge for an incremental model with a unique_key (as dbt does), else append.
    incremental_strategy: Literal["append", "merge"] = "append"
    partition_by: list[str] = Field(default_factory=list)
    schedule: str | None = Field(default=None, description="cron expression")
    # Each check is validated by lakebed.govern.check_config (kinds register there).
    checks: list[dict[str, Any]] = Field(default_factory=list)
    owner: str | None = None
    domain: str | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    columns: dict[str, str] = Field(default_factory=dict, description="column descriptions")
    # Delta table properties of the model's table (delta.enableChangeDataFeed,
    # delta.logRetentionDuration...): set when it is created, and again when they change.
    properties: dict[str, str] = Field(default_factory=dict)
    # False protects an incremental or scd2 table whose rows cannot be computed again (its
    # inputs no longer hold them): `--full-refresh` and a changed definition leave its rows,
    # and the new definition applies to new rows only (dbt's `full_refresh: false`).
    full_refresh: bool | None = None
    # scd2: how a key's change is told (dbt snapshot strategies). `updated_at` names the
    # source's last-modified column: a later value makes a new version, valid from then;
    # else any change of `check_cols` (all columns when empty) does, valid from the run.
    updated_at: str | None = None
    check_cols: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """`unique_key: id` for `[id]` (and so for partition_by and tags), a list or mapping
        left empty for none, and the merge strategy implied by an incremental model's
        unique_key."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in (*_LIST_SETTINGS, "checks", "columns", "properties"):
            if key in data and data[key] is None:
                del data[key]  # `checks:` with every entry commented out: none
        for key in _LIST_SETTINGS:
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
        properties = data.get("properties")
        if isinstance(properties, dict):
            # YAML reads `true` and `10` as a bool and a number; Delta stores text.
            data["properties"] = {k: _property_text(v) for k, v in properties.items()}
        if (
            data.get("materialized") == "incremental"
            and data.get("unique_key")
            and data.get("incremental_strategy") is None
        ):
            data["incremental_strategy"] = "merge"
        return data

    @model_validator(mode="after")
    def _keys_for_merge(self) -> ModelConfig:
        needs_key = self.materialized == "scd2" or (
            self.materialized == "incremental" and self.incremental_strategy == "merge"
        )
        if needs_key and not self.unique_key:
            raise ValueError(f"materialized {self.materialized} needs a unique_key")
        if self.materialized == "view" and self.properties:
            raise ValueError("a view has no table to set properties on")
        if (self.updated_at or self.check_cols) and self.materialized != "scd2":
            raise ValueError(
                "updated_at and check_cols tell the changes of an scd2 model's keys; "
                f"this model is {self.materialized}"
            )
        if self.updated_at and self.check_cols:
            raise ValueError(
                "updated_at (a later value is a change) and check_cols (a changed value is "
                "a change) are two ways to tell a change of an scd2 model: set one"
            )
        if self.full_refresh is False and self.materialized not in ("incremental", "scd2"):
            raise ValueError(
                f"full_refresh: false keeps the rows of incremental and scd2 models; a "
                f"{self.materialized} model is computed in full at every build"
            )
        return self

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        if schedule is not None:
            parse_cron(schedule)  # kept as written: it counts in the model's fingerprint
        return schedule

    @field_validator("properties")
    @classmethod
    def _delta_properties(cls, properties: dict[str, str]) -> dict[str, str]:
        problems = property_problems(properties)
        if problems:
            raise ValueError(
                "; ".join(problems) + f" (table properties: {', '.join(sorted(TABLE_PROPERTIES))})"
            )
        return properties


def _property_text(value: Any) -> Any:
    """A property value as Delta writes it (`true`, not `True`); other types are left for
    validation to reject."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


@dataclass(frozen=True)
class Model:
    """One model of the project, ready to build."""

    name: TableName
    path: Path
    kind: Literal["sql", "python"]
    inputs: tuple[TableName, ...]
    config: ModelConfig
    sql: str | None = None  # the SELECT of a SQL model, as written
    function: Callable[..., Any] | None = None  # the function of a Python model
    frame: FrameKind = "arrow"  # how a Python model receives its inputs
    # 1-based line of each input reference in the file (for error messages).
    input_lines: dict[TableName, int] = field(default_factory=dict)
    # Whether an incremental model of the project reads its table (set by the graph): the
    # table then records a change data feed, which costs each of its merges a read of the
    # whole rows it replaces (the feed's pre-images).
    read_incrementally: bool = False
    # An incremental model's input tables whose feed it turns on (those that no model
    # builds, and models that do not set delta.enableChangeDataFeed; set by the graph).
    feed_inputs: tuple[TableName, ...] = ()

    def __str__(self) -> str:
        return str(self.name)

    @property
    def quarantine(self) -> TableName:
        """Where its `drop` checks keep the rows they take out: `quarantine.<layer>_<name>`,
        so `silver.orders` and `gold.orders` (and a source named `orders`, whose bad
        records go to `quarantine.orders`) never share one."""
        return TableName("quarantine", f"{self.name.layer}_{self.name.name}")

    @property
    def drops_rows(self) -> bool:
        """Whether a check of the model has severity `drop` (takes rows out to quarantine)."""
        for entry in self.config.checks:
            options = [entry, *(v for v in entry.values() if isinstance(v, dict))]
            if any(o.get("severity") == "drop" for o in options):
                return True
        return False
