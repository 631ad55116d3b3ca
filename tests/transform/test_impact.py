"""Golden files of model changes and their classification (`classify`), and the columns a
downstream model uses (`column_uses`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest

from lakebed.storage import TableName
from lakebed.transform.impact import Affected, Classification, classify, column_uses, type_name

FIXTURES = Path(__file__).parent.parent / "fixtures" / "plan"
CHANGED = "silver.x"

_SCHEMA_LINE = re.compile(r"^-- schema:\s*([a-z_]+)\.([a-z_0-9]+)\s*\((.*)\)\s*$")
_SECTION = re.compile(r"^-- (old|new|downstream [a-z_]+\.[a-z_0-9]+):$")


# -- golden files ----------------------------------------------------------------------------


@dataclass
class Case:
    title: str
    schemas: dict[str, str]  # table -> its column definitions (DuckDB DDL)
    old: str = ""
    new: str = ""
    downstream: dict[str, str] = field(default_factory=dict)
    expect: list[str] = field(default_factory=list)


def load_cases(path: Path) -> list[Case]:
    """The cases of one golden file (its header describes the format)."""
    defaults: dict[str, str] = {}
    cases: list[Case] = []
    section: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        schema = _SCHEMA_LINE.match(line)
        case = cases[-1] if cases else None
        if schema:
            (case.schemas if case is not None else defaults)[f"{schema[1]}.{schema[2]}"] = schema[3]
        elif line.startswith("-- case:"):
            cases.append(Case(line.removeprefix("-- case:").strip(), dict(defaults)))
            section = None
        elif case is None:
            continue  # the header
        elif found := _SECTION.match(line):
            section = found[1]
            if section.startswith("downstream "):
                case.downstream[section.split()[1]] = ""
        elif line.startswith("-- expect:") or (line.startswith("-- ") and case.expect):
            case.expect.append(line.removeprefix("-- "))
            section = None
        elif section is not None and line.strip():
            if section in ("old", "new"):
                setattr(case, section, f"{getattr(case, section)}\n{line}".strip())
            else:
                name = section.split()[1]
                case.downstream[name] = f"{case.downstream[name]}\n{line}".strip()
    return cases


def rendered(result: Classification) -> list[str]:
    """A classification as the golden files spell it."""
    lines = [f"expect: {result.kind}"]
    if result.added:
        lines.append(f"added: {', '.join(result.added)}")
    if result.removed:
        lines.append(f"removed: {', '.join(result.removed)}")
    if result.retyped:
        lines.append(f"retyped: {', '.join(f'{c} {a} -> {b}' for c, a, b in result.retyped)}")
    for use in result.affected:
        outputs = ", ".join(use.outputs) or "(no output)"
        lines.append(f"affected: {use.model}: {use.column} {use.change} -> {outputs}")
    return lines


def _columns(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, str]:
    schema = con.sql(f"SELECT * FROM (\n{sql}\n) LIMIT 0").to_arrow_table().schema
    return {f.name: type_name(f.type) for f in schema}


def classified(case: Case) -> Classification:
    """Classify the case's change without Delta tables: the SQL runs with LIMIT 0 on empty
    DuckDB tables, and what each downstream model uses comes from its SQL."""
    con = duckdb.connect()
    try:
        for table, columns in case.schemas.items():
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
            con.execute(f"CREATE TABLE {table} ({columns})")
        old = _columns(con, case.old)
        new = _columns(con, case.new)
        con.execute("CREATE SCHEMA IF NOT EXISTS silver")
        con.execute(f"CREATE TABLE {CHANGED} AS SELECT * FROM ({case.old}) LIMIT 0")
        schemas = {
            TableName.parse(table): list(_columns(con, f"SELECT * FROM {table}"))
            for table in [*case.schemas, CHANGED]
        }
        uses = {}
        for model, sql in case.downstream.items():
            _columns(con, sql)  # the downstream model must work against the old columns
            uses[model] = column_uses(sql, CHANGED, schemas, output=model)
    finally:
        con.close()
    return classify(old, new, uses)


GOLDEN = [
    pytest.param(case, id=f"{path.stem}: {case.title}")
    for path in sorted(FIXTURES.glob("*.sql"))
    for case in load_cases(path)
]


def test_golden_files_hold_cases() -> None:
    assert len(GOLDEN) >= 40
    for param in GOLDEN:
        case = param.values[0]
        assert isinstance(case, Case)
        assert case.old, case.title
        assert case.new, case.title
        assert case.expect, case.title


@pytest.mark.parametrize("case", GOLDEN)
def test_classification(case: Case) -> None:
    assert rendered(classified(case)) == case.expect


# -- classify and column_uses directly ---------------------------------------------------------


def test_classify_takes_plain_sets_of_used_columns() -> None:
    result = classify(
        {"id": "int64", "amount": "double", "note": "string"},
        {"id": "string", "amount": "double", "extra": "bool"},
        {"gold.a": {"ID"}, "gold.b": {"amount"}, "gold.c": set()},
    )
    assert result.kind == "breaking"
    assert result.added == ("extra",)
    assert result.removed == ("note",)
    assert result.retyped == (("id", "int64", "string"),)
    # Without lineage to outputs, how a column is used is not known.
    assert result.affected == (Affected("gold.a", "id", "retyped", traced=False),)
    assert "breaks gold.a may use id (retyped; its uses are not traced)" in result.describe()


def test_classify_with_no_change_is_non_breaking() -> None:
    same = {"id": "int64"}
    result = classify(same, same, {"gold.a": {"id"}})
    assert result == Classification("non-breaking")
    assert result.describe() == ["same columns (logic only)"]


def test_column_uses_maps_columns_to_the_outputs_they_feed() -> None:
    schemas = {TableName.parse("silver.x"): ["id", "amount", "status", "at"]}
    uses = column_uses(
        "SELECT id, amount * 2 AS doubled FROM silver.x WHERE status = 'paid'",
        "silver.x",
        schemas,
    )
    assert uses == {"id": {"id"}, "amount": {"doubled"}, "status": set()}
