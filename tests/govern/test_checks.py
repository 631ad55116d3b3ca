"""Quality checks: auditing new data before it is published (write-audit-publish)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from lakebed.errors import CheckConfigError, CheckFailedError, Terminal
from lakebed.govern import Audit, Check, CheckResult, audit, parse_checks

TABLE = "silver.orders"
NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


def _check(entry: dict[str, Any]) -> Check:
    (check,) = parse_checks([entry], table=TABLE)
    return check


def _run(
    data: pa.Table | dict[str, list[Any]],
    *entries: dict[str, Any],
    lookup: Callable[[str], pa.Table] | None = None,
    now: datetime = NOW,
) -> Audit:
    table = data if isinstance(data, pa.Table) else pa.table(data)
    return audit(
        table, parse_checks(list(entries), table=TABLE), table=TABLE, lookup=lookup, now=now
    )


def _only(result: Audit) -> CheckResult:
    (only,) = result.results
    return only


# -- auditing: each kind passes and fails with counts ----------------------------------------


def _customers(query: str) -> pa.Table:
    assert query == 'select distinct "customer_id" from silver.customers'
    return pa.table({"customer_id": [10, 11, None]})


ORDERS: dict[str, list[Any]] = {
    "order_id": [1, 2, 2, 3, 4, 5],
    "customer_id": [10, None, 11, 99, 10, None],
    "status": ["placed", "paid", "lost", "paid", None, "placed"],
    "amount": [5.0, -1.0, 20000.0, 0.0, 10000.0, None],
    "email": ["a@b", "bad", "c@d", "two@@x", "g@h", None],
    "quantity": [1, 0, 2, 3, None, 4],
}


@pytest.mark.parametrize(
    ("entry", "failing", "says"),
    [
        ({"not_null": "customer_id"}, 2, "2 of 6 rows fail: customer_id is null"),
        # Rows 2 and 6 lack a customer, rows 5 and 6 a status: three rows lack one or both.
        (
            {"not_null": ["customer_id", "status"]},
            3,
            "3 of 6 rows fail: customer_id or status is null",
        ),
        ({"unique": "order_id"}, 2, "2 rows share 1 duplicated value of order_id"),
        ({"unique": ["order_id", "status"]}, 0, "order_id, status is unique across 6 rows"),
        (
            {"accepted_values": {"column": "status", "values": ["placed", "paid"]}},
            1,
            "1 of 6 rows fail: status is not one of placed, paid",
        ),
        (
            {"range": {"column": "amount", "min": 0, "max": 10000}},
            2,
            "amount is outside [0, 10000]",
        ),
        ({"range": {"column": "amount", "min": 1}}, 2, "amount is below 1"),
        ({"range": {"column": "amount", "max": 5}}, 2, "amount is above 5"),
        (
            {"regex": {"column": "email", "pattern": "^[^@]+@[^@]+$"}},
            2,
            "email does not match ^[^@]+@[^@]+$",
        ),
        (
            {"relationships": {"column": "customer_id", "to": "silver.customers"}},
            1,
            "1 of 6 rows fail: customer_id has no match in silver.customers.customer_id",
        ),
        ({"row_count": {"min": 7}}, 0, "6 rows, fewer than the minimum 7"),
        ({"row_count": {"max": 5}}, 0, "6 rows, more than the maximum 5"),
        ({"expression": "quantity > 0"}, 2, "2 of 6 rows fail: quantity > 0 is not true"),
        ({"query": "select * from this where amount < 0"}, 1, "the query returned 1 failing row"),
        (
            {"query": "select order_id from this group by order_id having count(*) > 1"},
            1,
            "returned 1 failing row",
        ),
    ],
)
def test_each_kind_fails_with_counts(entry: dict[str, Any], failing: int, says: str) -> None:
    result = _only(_run(ORDERS, entry, lookup=_customers))
    expected_status = "pass" if "unique across" in says else "fail"
    assert result.status == expected_status
    assert result.failing_rows == failing
    assert result.total_rows == 6
    assert says in result.message
    assert result.checked_at == NOW
    assert result.table == TABLE


@pytest.mark.parametrize(
    "entry",
    [
        {"not_null": "order_id"},
        {"unique": "email"},
        {"accepted_values": {"column": "status", "values": ["placed", "paid", "lost"]}},
        {"range": {"column": "amount", "min": -1, "max": 20000}},
        {"regex": {"column": "email", "pattern": "[a-z]"}},
        {"relationships": {"column": "order_id", "to": "silver.customers", "field": "customer_id"}},
        {"row_count": {"min": 6, "max": 6}},
        {"expression": "order_id > 0"},
        {"query": "select * from this where amount < -1"},
    ],
)
def test_each_kind_passes_on_good_data(entry: dict[str, Any]) -> None:
    def keys(query: str) -> pa.Table:
        return pa.table({"customer_id": [1, 2, 3, 4, 5]})

    result = _only(_run(ORDERS, entry, lookup=keys))
    assert (result.status, result.failing_rows) == ("pass", 0), result.message


def test_nulls_pass_value_checks_but_fail_expressions() -> None:
    data = {"v": [None, None], "s": [None, None]}
    for entry in (
        {"accepted_values": {"column": "s", "values": ["a"]}},
        {"range": {"column": "v", "min": 0}},
        {"regex": {"column": "s", "pattern": "^a$"}},
        {"unique": "v"},
    ):
        assert _only(_run(data, entry)).status == "pass", entry
    assert _only(_run(data, {"expression": "v > 0"})).failing_rows == 2


def test_range_compares_dates_and_includes_its_bounds() -> None:
    data = {"day": [date(2024, 1, 1), date(2024, 1, 31), date(2024, 2, 1)]}
    entry = {"range": {"column": "day", "min": date(2024, 1, 1), "max": date(2024, 1, 31)}}
    assert _only(_run(data, entry)).failing_rows == 1


def test_relationships_null_keys_pass_and_referenced_nulls_do_not_hide_failures() -> None:
    def with_null(query: str) -> pa.Table:
        return pa.table({"id": pa.array([1, None], pa.int64())})

    data = {"customer_id": pa.array([1, None, 2, None], pa.int64())}
    entry = {"relationships": {"column": "customer_id", "to": "silver.customers", "field": "id"}}
    result = _only(_run(data, entry, lookup=with_null))
    assert (result.status, result.failing_rows) == ("fail", 1)


def test_relationships_without_a_readable_target_is_an_error() -> None:
    entry = {"relationships": {"column": "customer_id", "to": "silver.customers"}}
    no_lookup = _only(_run(ORDERS, entry))
    assert no_lookup.status == "error"
    assert "no lookup" in no_lookup.message

    def missing(query: str) -> pa.Table:
        raise CheckConfigError("boom", table="x", check="y")

    broken = _only(_run(ORDERS, entry, lookup=missing))
    assert broken.status == "error"
    assert "cannot read silver.customers.customer_id" in broken.message


# -- freshness -----------------------------------------------------------------------------


def _times(*values: datetime | None, tz: str | None = "UTC") -> pa.Table:
    return pa.table({"at": pa.array(values, pa.timestamp("us", tz=tz))})


def test_freshness_against_an_injected_now() -> None:
    entry = {"freshness": {"column": "at", "max_age": "36 hours"}}
    data = _times(NOW - timedelta(days=5), NOW - timedelta(hours=30), None)
    fresh = _only(_run(data, entry))
    assert fresh.status == "pass"
    assert "30 hours old" in fresh.message
    stale = _only(_run(data, entry, now=NOW + timedelta(hours=7)))
    assert stale.status == "fail"
    assert "older than 36 hours" in stale.message


def test_freshness_fails_on_an_empty_table_and_on_all_nulls() -> None:
    entry = {"freshness": {"column": "at", "max_age": "1 day"}}
    for data in (_times(), _times(None, None)):
        result = _only(_run(data, entry))
        assert result.status == "fail"
        assert "no at values" in result.message


def test_freshness_reads_naive_timestamps_as_utc_and_dates_as_midnight() -> None:
    entry = {"freshness": {"column": "at", "max_age": "12 hours"}}
    naive = _times(datetime(2024, 3, 10, 0, 30), tz=None)
    assert _only(_run(naive, entry)).status == "pass"  # 11.5 hours before NOW
    nanos = pa.table({"at": pa.array([NOW - timedelta(hours=13)], pa.timestamp("ns", tz="UTC"))})
    assert _only(_run(nanos, entry)).status == "fail"
    days = pa.table({"at": pa.array([date(2024, 3, 10)], pa.date32())})
    assert _only(_run(days, entry)).status == "pass"
    other_zone = _times(datetime(2024, 3, 10, 14, 0, tzinfo=UTC), tz="Asia/Tokyo")
    assert "2024-03-10T14:00:00+00:00" in _only(_run(other_zone, entry)).message


def test_freshness_of_a_non_temporal_column_is_an_error() -> None:
    result = _only(_run({"at": ["2024-01-01"]}, {"freshness": {"column": "at", "max_age": "1d"}}))
    assert result.status == "error"
    assert "needs a timestamp or date column" in result.message


# -- severities, quarantine and publishing ---------------------------------------------------


def test_drop_quarantines_failing_rows_once_with_every_reason() -> None:
    result = _run(
        ORDERS,
        {"accepted_values": {"column": "status", "values": ["placed", "paid"], "severity": "drop"}},
        {"range": {"column": "amount", "min": 0, "max": 10000, "severity": "drop"}},
        {"expression": {"sql": "quantity > 0", "name": "positive_quantity", "severity": "drop"}},
    )
    assert not result.failed
    assert [r.status for r in result.results] == ["warn", "warn", "warn"]
    assert [r.failing_rows for r in result.results] == [1, 2, 2]
    assert result.passed.column("order_id").to_pylist() == [1, 3, 5]
    assert result.passed.schema == pa.table(ORDERS).schema
    quarantined = result.quarantined.select(["order_id", "_check", "_reason"]).to_pylist()
    assert quarantined == [
        {
            "order_id": 2,
            "_check": "range(amount), positive_quantity",
            "_reason": "amount is outside [0, 10000]; quantity > 0 is not true",
        },
        {
            "order_id": 2,
            "_check": "accepted_values(status), range(amount)",
            "_reason": "status is not one of placed, paid; amount is outside [0, 10000]",
        },
        {"order_id": 4, "_check": "positive_quantity", "_reason": "quantity > 0 is not true"},
    ]
    assert result.quarantined.column_names == [*ORDERS, "_check", "_reason"]
    assert result.passed.num_rows + result.quarantined.num_rows == len(ORDERS["order_id"])


def test_nothing_dropped_leaves_an_empty_quarantine_with_reason_columns() -> None:
    result = _run(ORDERS, {"not_null": {"column": "order_id", "severity": "drop"}})
    assert result.passed.num_rows == 6
    assert result.quarantined.num_rows == 0
    assert result.quarantined.column_names == [*ORDERS, "_check", "_reason"]
    assert result.quarantined.schema.field("_reason").type == pa.string()


def test_warn_records_and_publishes_everything() -> None:
    result = _run(ORDERS, {"not_null": {"column": "customer_id", "severity": "warn"}})
    assert _only(result).status == "warn"
    assert _only(result).failing_rows == 2
    assert not result.failed
    assert result.passed.num_rows == 6
    assert result.quarantined.num_rows == 0
    result.raise_if_failed()


def test_fail_blocks_publishing_and_names_the_checks() -> None:
    result = _run(
        ORDERS,
        {"not_null": "customer_id"},
        {"row_count": {"min": 100}},
        {"unique": {"column": "order_id", "severity": "warn"}},
    )
    assert result.failed
    assert [r.check for r in result.failures] == ["not_null(customer_id)", "row_count"]
    with pytest.raises(CheckFailedError) as caught:
        result.raise_if_failed()
    error = caught.value
    assert error.table == TABLE
    assert error.failures == {"not_null(customer_id)": 2, "row_count": 0}
    assert error.checks == ["not_null(customer_id)", "row_count"]
    assert "2 checks failed on silver.orders, nothing was published" in str(error)
    assert "6 rows, fewer than the minimum 100" in str(error)
    assert isinstance(error, Terminal)


def test_row_attribution_survives_reordering_joins_and_windows() -> None:
    # DuckDB does not keep row order through joins and window functions, in parallel.
    n = 300_000
    rng = np.random.default_rng(7)
    ids = np.arange(n)
    customers = rng.integers(0, 1000, n)
    amounts = rng.random(n)
    data = pa.table({"id": ids, "customer_id": customers, "amount": amounts, "k": ids % 97})

    def odd_customers(query: str) -> pa.Table:
        return pa.table({"customer_id": np.arange(1, 1000, 2)})

    result = _run(
        data,
        {"relationships": {"column": "customer_id", "to": "silver.customers", "severity": "drop"}},
        {
            "expression": {
                "sql": "amount <= max(amount) over (partition by k) - 0.001",
                "name": "not_top_of_group",
                "severity": "drop",
            }
        },
        lookup=odd_customers,
    )
    even = customers % 2 == 0
    frame = data.to_pandas()
    group_max = frame.groupby("k")["amount"].transform("max").to_numpy()
    top = amounts > group_max - 0.001
    expected = even | top
    assert [r.failing_rows for r in result.results] == [int(even.sum()), int(top.sum())]
    assert result.quarantined.column("id").to_pylist() == ids[expected].tolist()
    assert result.passed.column("id").to_pylist() == ids[~expected].tolist()
    reasons = result.quarantined.column("_check").to_pylist()
    for row_id, names in zip(ids[expected][:2000], reasons[:2000], strict=True):
        wanted = [
            name
            for name, hit in (
                ("relationships(customer_id)", even[row_id]),
                ("not_top_of_group", top[row_id]),
            )
            if hit
        ]
        assert names == ", ".join(wanted)


# -- errors while evaluating -------------------------------------------------------------------


def test_broken_sql_is_an_error_result_and_other_checks_still_run() -> None:
    result = _run(
        ORDERS,
        {"expression": {"sql": "nope > 0", "name": "broken", "severity": "warn"}},
        {"not_null": {"column": "customer_id", "severity": "drop"}},
        {"query": {"sql": "select * from missing_table", "name": "bad_query", "severity": "warn"}},
    )
    broken, not_null, bad_query = result.results
    assert broken.status == "error"
    assert 'Referenced column "nope" not found' in broken.message
    assert (not_null.status, not_null.failing_rows) == ("warn", 2)
    assert bad_query.status == "error"
    assert "missing_table" in bad_query.message
    assert not result.failed  # errors of warn checks are warnings
    assert result.quarantined.num_rows == 2


def test_an_error_in_a_fail_check_fails_safe() -> None:
    result = _run(ORDERS, {"expression": "nope > 0"})
    assert _only(result).status == "error"
    assert result.failed


@pytest.mark.parametrize(
    ("severity", "max_failing", "status", "says"),
    [
        # 2 of the 6 rows have no customer: 33%.
        ("fail", 2, "warn", "within max_failing 2"),  # within: one step milder
        ("fail", "40%", "warn", "within max_failing 40%"),
        ("fail", 1, "fail", "more than max_failing 1"),
        ("fail", "30%", "fail", "more than max_failing 30%"),
        ("warn", 2, "pass", "within max_failing 2"),
        ("warn", 1, "warn", "more than max_failing 1"),
        ("drop", 2, "warn", "(dropped to quarantine) (within max_failing 2)"),
        # So many bad rows mean a broken input: nothing is published.
        ("drop", "10%", "fail", "more than max_failing 10%"),
    ],
)
def test_max_failing_tolerates_that_many_failing_rows(
    severity: str, max_failing: int | str, status: str, says: str
) -> None:
    entry = {"not_null": "customer_id", "severity": severity, "max_failing": max_failing}
    result = _run(ORDERS, entry)
    assert (_only(result).status, _only(result).failing_rows) == (status, 2)
    assert says in _only(result).message
    assert result.failed is (status == "fail")
    assert result.quarantined.num_rows == (2 if severity == "drop" else 0)


def test_a_drop_check_that_cannot_run_blocks_publishing() -> None:
    # Publishing would let through every row the check exists to take out.
    result = _run(ORDERS, {"not_null": {"column": "customer", "severity": "drop"}})
    assert _only(result).status == "error"
    assert result.failed
    with pytest.raises(CheckFailedError, match="could not evaluate") as info:
        result.raise_if_failed()
    assert "fix the check or the model" in (info.value.hint or "")


def test_unknown_column_is_named() -> None:
    result = _run(ORDERS, {"not_null": "customer"}, {"unique": "missing"})
    assert [r.status for r in result.results] == ["error", "error"]
    assert "column 'customer' is not in the data of silver.orders" in result.results[0].message
    assert "order_id, customer_id" in result.results[0].message


def test_column_names_match_case_insensitively_like_sql() -> None:
    result = _run(ORDERS, {"not_null": "Customer_ID"}, {"unique": "ORDER_ID"})
    assert [r.failing_rows for r in result.results] == [2, 2]


def test_aggregate_expressions_are_not_row_level() -> None:
    result = _run(ORDERS, {"expression": "sum(quantity) > 0"})
    assert _only(result).status == "error"


def test_user_sql_sees_only_the_new_data() -> None:
    secret = pa.table({"password": ["hunter2"]})  # a Python variable DuckDB could scan
    assert secret.num_rows == 1
    for sql in (
        "select * from secret",
        "select * from read_csv('/etc/passwd')",
        "select * from read_text('/etc/hostname')",
    ):
        result = _only(_run(ORDERS, {"query": {"sql": sql, "name": "leak", "severity": "warn"}}))
        assert result.status == "error", sql
    escape = _only(
        _run(ORDERS, {"expression": {"sql": "length(getenv('HOME')) > 0", "severity": "warn"}})
    )
    assert escape.status == "error"


def test_empty_data_passes_row_checks() -> None:
    empty = pa.table(ORDERS).slice(0, 0)
    result = _run(
        empty,
        {"not_null": "customer_id"},
        {"expression": {"sql": "quantity > 0", "severity": "drop"}},
        {"unique": "order_id"},
    )
    assert [r.status for r in result.results] == ["pass", "pass", "pass"]
    assert result.results[0].message == "no rows to check"
    assert result.passed.num_rows == 0
    assert result.quarantined.column_names[-2:] == ["_check", "_reason"]


def test_audit_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        _run(ORDERS, {"not_null": "order_id"}, now=datetime(2024, 1, 1))


def test_results_are_stamped_in_utc() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2024, 3, 10, 8, 0, tzinfo=ZoneInfo("America/New_York"))
    result = _only(_run(ORDERS, {"not_null": "order_id"}, now=local))
    assert result.checked_at == local
    assert result.checked_at.tzinfo == UTC


def test_fail_checks_judge_the_rows_left_after_drop_checks() -> None:
    data = pa.table({"id": [1, 1, 2], "copy": [1, 2, 1]})
    checks = parse_checks(
        [
            {"expression": {"sql": "copy = 1", "name": "first_copy", "severity": "drop"}},
            {"unique": "id"},
        ],
        table="silver.t",
    )
    outcome = audit(data, checks, table="silver.t")
    assert not outcome.failed  # the duplicate id was dropped before `unique` looked
    assert outcome.passed.column("id").to_pylist() == [1, 2]
    assert [r.status for r in outcome.results] == ["warn", "pass"]
