"""Quality checks: reading their configuration (kinds, options, severities, errors)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest

from lakebed.errors import CheckConfigError, QualityError, Terminal
from lakebed.govern import CHECK_KINDS, Check, audit, parse_checks
from lakebed.govern.check_kinds import (
    AcceptedValues,
    Expression,
    NotNull,
    Range,
    Regex,
    Relationships,
)
from lakebed.govern.check_table_kinds import Freshness, Query, RowCount, Unique

TABLE = "silver.orders"


def _check(entry: dict[str, Any]) -> Check:
    (check,) = parse_checks([entry], table=TABLE)
    return check


# -- configuration ------------------------------------------------------------------------


def test_every_kind_is_registered() -> None:
    assert set(CHECK_KINDS) == {
        "not_null",
        "unique",
        "accepted_values",
        "range",
        "regex",
        "relationships",
        "row_count",
        "freshness",
        "expression",
        "query",
    }


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"not_null": "customer_id"},
            NotNull(name="not_null(customer_id)", columns=("customer_id",)),
        ),
        (
            {"not_null": ["customer_id", "product_id"]},
            NotNull(
                name="not_null(customer_id, product_id)", columns=("customer_id", "product_id")
            ),
        ),
        ({"unique": "order_id"}, Unique(name="unique(order_id)", columns=("order_id",))),
        (
            {"unique": ["order_id", "line"]},
            Unique(name="unique(order_id, line)", columns=("order_id", "line")),
        ),
        (
            {
                "accepted_values": {
                    "column": "status",
                    "values": ["placed", "paid"],
                    "severity": "drop",
                }
            },
            AcceptedValues(
                name="accepted_values(status)",
                severity="drop",
                column="status",
                values=("placed", "paid"),
            ),
        ),
        (
            {"range": {"column": "amount", "min": 0, "max": 10000, "severity": "drop"}},
            Range(name="range(amount)", severity="drop", column="amount", min=0, max=10000),
        ),
        (
            {"regex": {"column": "email", "pattern": "^[^@]+@[^@]+$", "severity": "warn"}},
            Regex(name="regex(email)", severity="warn", column="email", pattern="^[^@]+@[^@]+$"),
        ),
        (
            {
                "relationships": {
                    "column": "customer_id",
                    "to": "silver.customers",
                    "field": "customer_id",
                }
            },
            Relationships(
                name="relationships(customer_id)",
                column="customer_id",
                to="silver.customers",
                field="customer_id",
            ),
        ),
        (
            {"row_count": {"min": 1, "max": 10000000}},
            RowCount(name="row_count", min=1, max=10000000),
        ),
        (
            {"freshness": {"column": "ordered_at", "max_age": "2 days"}},
            Freshness(name="freshness(ordered_at)", column="ordered_at", max_age=timedelta(days=2)),
        ),
        (
            {
                "expression": {
                    "sql": "quantity > 0",
                    "name": "positive_quantity",
                    "severity": "drop",
                }
            },
            Expression(name="positive_quantity", severity="drop", sql="quantity > 0"),
        ),
        (
            {"query": {"sql": "select * from this where amount < 0", "name": "no_negative"}},
            Query(name="no_negative", sql="select * from this where amount < 0"),
        ),
    ],
)
def test_documented_forms_parse_to_checks(entry: dict[str, Any], expected: Check) -> None:
    assert _check(entry) == expected


def test_compact_and_full_forms_agree_and_severity_defaults_to_fail() -> None:
    compact = _check({"not_null": "customer_id"})
    full = _check({"not_null": {"column": "customer_id"}})
    assert compact == full
    assert compact.severity == "fail"
    assert compact.kind == "not_null"


def test_options_may_sit_beside_the_compact_value() -> None:
    check = _check({"not_null": "customer_id", "severity": "warn", "name": "has_customer"})
    assert check == NotNull(name="has_customer", severity="warn", columns=("customer_id",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 days", timedelta(days=2)),
        ("36 hours", timedelta(hours=36)),
        ("90 minutes", timedelta(minutes=90)),
        ("1 week", timedelta(weeks=1)),
        ("1.5h", timedelta(hours=1.5)),
        ("45 s", timedelta(seconds=45)),
    ],
)
def test_freshness_durations(text: str, expected: timedelta) -> None:
    check = _check({"freshness": {"column": "at", "max_age": text}})
    assert isinstance(check, Freshness)
    assert check.max_age == expected


def test_compact_sql_kinds_name_themselves_after_the_sql() -> None:
    assert _check({"expression": "quantity  >\n 0"}).name == "expression(quantity > 0)"
    query = _check({"query": "select * from this where amount < 0;"})
    assert isinstance(query, Query)
    assert query.sql == "select * from this where amount < 0"


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"not_nul": "customer_id"}, ["unknown check kind not_nul", "did you mean not_null"]),
        ("not_null", ["expected a mapping"]),
        ({"not_null": None}, ["not_null needs `column`", "- not_null: customer_id"]),
        ({"not_null": "a", "unique": "b"}, ["names 2 kinds"]),
        ({"not_null": {"colum": "a"}}, ["does not take `colum`", "did you mean column"]),
        ({"not_null": "a", "severity": "error"}, ["`severity` must be warn, drop or fail"]),
        ({"not_null": {"column": "a"}, "column": "b"}, ["sets column twice"]),
        ({"unique": "order_id", "severity": "drop"}, ["unique cannot drop rows", "QUALIFY"]),
        ({"row_count": {"min": 1}, "severity": "drop"}, ["no failing rows to drop"]),
        ({"not_null": "a", "max_failing": "lots"}, ["`max_failing` must be", "0.5%"]),
        ({"not_null": "a", "max_failing": -1}, ["`max_failing` must be a whole number"]),
        ({"not_null": "a", "max_failing": 1.5}, ["`max_failing` must be a whole number"]),
        ({"not_null": "a", "max_failing": "120%"}, ["or a percentage, got '120%'"]),
        ({"row_count": {"min": 1}, "max_failing": 3}, ["`max_failing` applies to row checks"]),
        ({"freshness": {"column": "a", "max_age": "1d"}, "severity": "drop"}, ["drop"]),
        ({"query": "select 1", "severity": "drop"}, ["drop is not allowed"]),
        ({"row_count": 5}, ["row_count takes options", "{min: 1"]),
        ({"row_count": {"min": -1}}, ["`min` must be a whole number"]),
        ({"row_count": {"min": 5, "max": 1}}, ["`min` 5 is greater than `max` 1"]),
        ({"range": {"column": "amount"}}, ["range needs `min`, `max` or both"]),
        ({"range": {"column": "amount", "min": "a", "max": 3}}, ["not comparable"]),
        ({"range": {"column": "amount", "min": True}}, ["must be a number, date or time"]),
        ({"accepted_values": {"column": "s", "values": []}}, ["non-empty list"]),
        ({"accepted_values": {"column": "s", "values": ["a", None]}}, ["cannot hold null"]),
        ({"accepted_values": {"column": "s"}}, ["accepted_values needs `values`"]),
        ({"regex": {"column": "e", "pattern": "(unclosed"}}, ["not a valid regular expression"]),
        ({"regex": {"column": "e", "pattern": "(?=look)"}}, ["RE2 syntax"]),
        (
            {"relationships": {"column": "c", "to": "customers"}},
            ["`to`", "must be layer.name"],
        ),
        ({"relationships": {"column": "c"}}, ["relationships needs `to`"]),
        ({"freshness": {"column": "at", "max_age": "soon"}}, ["`max_age` must be a duration"]),
        ({"freshness": {"column": "at", "max_age": 3600}}, ["`max_age` must be a duration"]),
        ({"freshness": {"column": "at"}}, ["freshness needs `max_age`"]),
        ({"expression": "quantity >"}, ["`sql` does not parse"]),
        ({"expression": "1; drop table this"}, ["does not parse"]),
        (
            {"expression": "1) FROM this; DROP TABLE this; SELECT (1"},
            ["must be one SQL expression", "got 3 statement(s)"],
        ),
        ({"query": "delete from this"}, ["must be one SELECT statement"]),
        ({"query": "select 1; select 2"}, ["got 2 statement(s)"]),
        (
            {"query": "select count(*) from this where amount < 0"},
            ["always returns one row", "having count(*) > 0"],
        ),
        ({"unique": {"column": "a", "columns": ["b"]}}, ["`column` or `columns` (one of them)"]),
        ({"unique": {"columns": ["a", "A"]}}, ["names a column twice"]),
        ({"not_null": "a", "name": ""}, ["`name` must be a non-empty string"]),
    ],
)
def test_invalid_configs_say_what_is_expected(entry: Any, says: list[str]) -> None:
    with pytest.raises(CheckConfigError) as caught:
        parse_checks([entry], table=TABLE, file="models/silver/orders.yml")
    error = caught.value
    text = str(error)
    assert text.startswith("models/silver/orders.yml: check ")
    assert f" on {TABLE}: " in text
    for part in says:
        assert part in text
    assert error.table == TABLE
    assert error.file == "models/silver/orders.yml"
    assert isinstance(error, QualityError)
    assert isinstance(error, Terminal)


def test_config_errors_name_the_check() -> None:
    with pytest.raises(CheckConfigError) as caught:
        parse_checks(
            [{"not_null": "a"}, {"range": {"column": "amount", "min": "x", "max": 1}}], table=TABLE
        )
    assert caught.value.check == "range(amount)"
    with pytest.raises(CheckConfigError) as caught:
        parse_checks([{"expression": {"sql": "x >", "name": "positive"}}], table=TABLE)
    assert caught.value.check == "positive"


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(CheckConfigError, match="two checks have this name") as caught:
        parse_checks(
            [{"not_null": "a"}, {"not_null": {"column": "a", "severity": "warn"}}], table=TABLE
        )
    assert caught.value.check == "not_null(a)"
    assert caught.value.hint is not None
    assert "name:" in caught.value.hint


def test_audit_refuses_checks_with_the_same_name() -> None:
    twice = [NotNull(name="x", columns=("a",)), Unique(name="x", columns=("a",))]
    with pytest.raises(CheckConfigError, match="two checks have this name"):
        audit(pa.table({"a": [1]}), twice, table=TABLE)


def test_checks_must_be_a_list() -> None:
    with pytest.raises(CheckConfigError, match="must be a list"):
        parse_checks({"not_null": "a"}, table=TABLE)  # type: ignore[arg-type]
