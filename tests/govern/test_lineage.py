"""Column lineage: golden files of model SQL and the edges traced from it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lakebed.errors import LakebedError, QueryError, SqlSyntaxError
from lakebed.govern import ColumnEdge, column_lineage
from lakebed.metastore.lineage_store import LineageEdge
from lakebed.storage import TableName

FIXTURES = Path(__file__).parent.parent / "fixtures" / "lineage"
OUTPUT = "gold.x"

_SCHEMA_LINE = re.compile(r"^# schema:\s*([a-z_]+\.[a-z_0-9]+)\s*\((.*)\)\s*$")


# -- golden files ----------------------------------------------------------------------------


@dataclass
class Case:
    title: str
    schemas: dict[TableName, list[str]]
    sql: str
    expected: list[str] = field(default_factory=list)


def _schema_line(line: str, into: dict[TableName, list[str]]) -> None:
    found = _SCHEMA_LINE.match(line)
    assert found, f"bad schema line: {line!r}"
    columns = [c.strip().strip('"') for c in found[2].split(",") if c.strip()]
    into[TableName.parse(found[1])] = columns


def load_cases(path: Path) -> list[Case]:
    """The cases of one golden file.

    Blank lines separate blocks. A block without a `# title:` that holds `# schema:` lines
    sets the file's schemas; a case is a `# title:` line, its own `# schema:` lines (added to
    the file's), one SQL statement ending in `;`, then the expected edges, one per line,
    or `(no edges)`.
    """
    defaults: dict[TableName, list[str]] = {}
    cases = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        title, schemas, sql_lines, expected = "", dict(defaults), [], []
        for line in block.strip().splitlines():
            if line.startswith("# title:"):
                title = line.removeprefix("# title:").strip()
            elif line.startswith("# schema:"):
                _schema_line(line, schemas)
            elif line.startswith("#"):
                continue
            elif not sql_lines or not sql_lines[-1].endswith(";"):
                sql_lines.append(line)
            elif line != "(no edges)":
                expected.append(line)
        if not title:
            defaults = schemas
        elif sql_lines:
            sql = "\n".join(sql_lines).removesuffix(";")
            cases.append(Case(title, schemas, sql, expected))
    return cases


def traced(case: Case) -> list[str]:
    return [str(edge) for edge in column_lineage(case.sql, OUTPUT, case.schemas)]


GOLDEN = [
    pytest.param(case, id=f"{path.stem}: {case.title}")
    for path in sorted(FIXTURES.glob("*.sql"))
    for case in load_cases(path)
]


def test_golden_files_hold_cases() -> None:
    assert len(GOLDEN) >= 40
    stems = {path.stem for path in FIXTURES.glob("*.sql")}
    assert {"basics", "aggregates", "scopes", "stars", "unresolved"} <= stems


@pytest.mark.parametrize("case", GOLDEN)
def test_column_lineage_matches_golden_file(case: Case) -> None:
    assert traced(case) == case.expected


# -- behaviour -------------------------------------------------------------------------------

ORDERS = TableName("silver", "orders")
SCHEMAS = {ORDERS: ["order_id", "customer_id", "amount"]}


def test_column_edge_is_the_metastore_row_type() -> None:
    assert ColumnEdge is LineageEdge
    (edge,) = column_lineage("SELECT amount AS total FROM silver.orders", "gold.x", SCHEMAS)
    assert edge == LineageEdge("gold.x", "total", "silver.orders", "amount", "copy")
    assert edge.recorded_at is None


def test_output_table_may_be_given_as_a_table_name() -> None:
    edges = column_lineage("SELECT amount FROM silver.orders", TableName("gold", "x"), SCHEMAS)
    assert [e.downstream_table for e in edges] == ["gold.x"]


def test_invalid_output_table_name_is_a_lakebed_error() -> None:
    with pytest.raises(LakebedError, match="layer"):
        column_lineage("SELECT 1 AS one", "nowhere", SCHEMAS)


def test_sql_that_does_not_parse_raises_query_error_with_position() -> None:
    with pytest.raises(SqlSyntaxError, match="does not parse at line 1") as caught:
        column_lineage("SELECT amount FROM WHERE", "gold.x", SCHEMAS)
    assert isinstance(caught.value, QueryError)
    assert caught.value.query == "SELECT amount FROM WHERE"
    assert "gold.x" in str(caught.value)


@pytest.mark.parametrize(
    "sql",
    ["", "SELECT 1 AS a; SELECT 2 AS b", "CREATE TABLE silver.y (a INT)", "DELETE FROM silver.y"],
)
def test_sql_that_is_not_one_query_raises_query_error(sql: str) -> None:
    with pytest.raises(QueryError, match="exactly one SELECT"):
        column_lineage(sql, "gold.x", SCHEMAS)


def test_output_columns_name_the_outputs_as_the_built_table_does() -> None:
    edges = column_lineage(
        "SELECT amount + 1, upper(customer_id) FROM silver.orders",
        "gold.x",
        SCHEMAS,
        output_columns=["(amount + 1)", "upper(customer_id)"],
    )
    assert [(e.downstream_column, e.upstream_column) for e in edges] == [
        ("(amount + 1)", "amount"),
        ("upper(customer_id)", "customer_id"),
    ]


def test_output_columns_of_another_length_are_ignored() -> None:
    edges = column_lineage(
        "SELECT amount AS a FROM silver.orders", "gold.x", SCHEMAS, output_columns=["a", "b"]
    )
    assert [e.downstream_column for e in edges] == ["a"]


def test_schemas_are_read_case_insensitively_and_keep_their_spelling() -> None:
    schemas = {ORDERS: ["Order_Id", "Amount"]}
    edges = column_lineage("SELECT amount, ORDER_ID AS id FROM silver.orders", "gold.x", schemas)
    assert [str(e) for e in edges] == [
        "gold.x.Amount <- silver.orders.Amount (copy)",
        "gold.x.id <- silver.orders.Order_Id (copy)",
    ]


def test_a_wide_cte_chain_is_traced_without_blowing_up() -> None:
    # Each step reads every column of the one before twice: without sharing the work
    # per lineage node this is exponential in the depth.
    columns = [f"c{i}" for i in range(6)]
    sql = "WITH s0 AS (SELECT * FROM silver.wide)"
    for depth in range(1, 16):
        exprs = ", ".join(f"{c} + {columns[(i + 1) % 6]} AS {c}" for i, c in enumerate(columns))
        sql += f", s{depth} AS (SELECT {exprs} FROM s{depth - 1})"
    sql += " SELECT * FROM s15"
    edges = column_lineage(sql, "gold.x", {TableName("silver", "wide"): columns})
    assert len(edges) == 36
    assert {e.transform for e in edges} == {"expression"}
