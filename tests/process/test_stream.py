"""Stream pipelines on the embedded bus: topic → bronze, streaming SQL with windows,
lateness, deduplication, enrichment joins, upserts and recovery of state."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lakebed import Lakehouse
from lakebed.bus import BEGINNING, Record, TopicPartition
from lakebed.errors import ConfigError
from lakebed.process.stream import StreamProcessor
from process.streams import T0, event, run_until_caught_up, stream_project

FIXTURES = Path(__file__).parent.parent / "fixtures" / "streams"

WINDOW_SQL = (
    "SELECT window_start, window_end, count(*) AS n, sum(amount) AS total, "
    "list(id ORDER BY id) AS ids "
    "FROM TUMBLE(topic.orders, ts, INTERVAL '10 seconds') GROUP BY ALL"
)


def _seconds(value: Any) -> float:
    return float((value - T0).total_seconds())


def _batch_windows(
    lh: Lakehouse, events: list[dict[str, Any]], size: int, until: float
) -> list[dict[str, Any]]:
    """The same windows computed in one batch query over all events (the reference)."""
    import pyarrow as pa

    table = pa.Table.from_pylist(events)
    result = lh.sql(
        f"""
        SELECT time_bucket(INTERVAL '{size} seconds', CAST(ts AS TIMESTAMPTZ),
                           TIMESTAMPTZ '2026-11-26 12:00:00+00') AS window_start,
               count(*) AS n, sum(amount) AS total
        FROM ev GROUP BY 1 ORDER BY 1
        """,
        relations={"ev": table},
    ).dicts()
    return [
        {"start": _seconds(r["window_start"]), "n": r["n"], "total": r["total"]}
        for r in result
        if _seconds(r["window_start"]) + size <= until
    ]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return tmp_path / "project"


def test_topic_to_bronze_loads_each_event_once_with_its_origin(project: Path) -> None:
    lh = stream_project(project, {"orders": {"topic": "orders", "event_time": "ts"}})
    lh.bus.create_topic("orders", 3)
    lh.produce("orders", [event(i, i) for i in range(1000)], key="customer")
    run_until_caught_up(lh)
    bronze = lh.sql(
        "SELECT count(*) AS n, count(DISTINCT (_partition, _offset)) AS places, "
        "count(DISTINCT id) AS ids, min(_event_time) AS first FROM bronze.orders"
    ).dicts()[0]
    assert bronze == {"n": 1000, "places": 1000, "ids": 1000, "first": T0}
    columns = lh.table("bronze.orders").schema().names
    assert {"_topic", "_partition", "_offset", "_event_time", "id", "amount"} <= set(columns)
    version = lh.table("bronze.orders").version()

    run_until_caught_up(lh)  # nothing new: nothing written
    assert lh.table("bronze.orders").version() == version

    lh.produce("orders", [event(i, i) for i in range(1000, 1500)], key="customer")
    run_until_caught_up(lh)
    assert lh.sql("SELECT count(DISTINCT id) AS n, count(*) AS m FROM bronze.orders").dicts() == [
        {"n": 1500, "m": 1500}
    ]


def test_unparseable_events_go_to_quarantine_with_raw_bytes_and_error(project: Path) -> None:
    lh = stream_project(project, {"orders": {"topic": "orders", "event_time": "ts"}})
    good = [event(i, i) for i in range(5)]
    lh.produce("orders", good[:2])
    lh.produce(
        "orders",
        [
            Record(b"{not json"),
            Record(b"[1, 2]"),
            Record(None),
            Record(json.dumps({"id": 99, "ts": "yesterday-ish"}).encode()),
        ],
    )
    lh.produce("orders", good[2:])
    run_until_caught_up(lh)
    assert lh.sql("SELECT count(*) AS n FROM bronze.orders").scalar() == 5
    bad = lh.sql(
        "SELECT _offset, reason, error, raw FROM quarantine.orders ORDER BY _offset"
    ).dicts()
    assert [(b["_offset"], b["reason"]) for b in bad] == [
        (2, "unparseable"),
        (3, "unparseable"),
        (4, "empty"),
        (5, "event_time"),
    ]
    assert bad[0]["raw"] == b"{not json"
    assert "JSON" in bad[0]["error"]
    assert "'ts'" in bad[3]["error"]


def test_tumbling_windows_with_late_and_out_of_order_events_match_golden(project: Path) -> None:
    golden = json.loads((FIXTURES / "tumble_late.json").read_text())
    lh = stream_project(
        project,
        {
            "per_window": {
                "sql": WINDOW_SQL,
                "target": "gold.per_window",
                "allowed_lateness": "5 seconds",
                "max_batch_records": 1,
            }
        },
    )
    lh.produce("orders", [event(i, t) for i, t in golden["events"]])
    run_until_caught_up(lh)
    windows = lh.sql("SELECT * FROM gold.per_window ORDER BY window_start").dicts()
    assert [
        {
            "window_start": _seconds(w["window_start"]),
            "window_end": _seconds(w["window_end"]),
            "n": w["n"],
            "total": w["total"],
            "ids": w["ids"],
        }
        for w in windows
    ] == golden["windows"]
    late = lh.sql("SELECT reason, raw FROM quarantine.per_window").dicts()
    assert sorted(json.loads(r["raw"])["id"] for r in late) == golden["late"]
    assert {r["reason"] for r in late} == {"late"}


def test_closed_windows_equal_a_batch_computation(project: Path) -> None:
    import random

    rng = random.Random(7)
    events = [event(i, i * 0.37 + rng.uniform(-3, 3)) for i in range(3000)]
    sql = (
        "SELECT window_start, count(*) AS n, sum(amount) AS total "
        "FROM TUMBLE(topic.orders, ts, INTERVAL '30 seconds') GROUP BY ALL"
    )
    lh = stream_project(
        project,
        {"agg": {"sql": sql, "allowed_lateness": "10 seconds", "max_batch_records": 250}},
    )
    lh.bus.create_topic("orders", 2)
    lh.produce("orders", events, key="customer")
    run_until_caught_up(lh)
    watermark = max(_seconds_of(e) for e in events) - 10
    got = [
        {"start": _seconds(r["window_start"]), "n": r["n"], "total": r["total"]}
        for r in lh.sql("SELECT * FROM silver.agg ORDER BY window_start").dicts()
    ]
    assert got == _batch_windows(lh, events, 30, watermark)
    assert (
        not lh.storage.exists_name("quarantine.agg") if hasattr(lh.storage, "exists_name") else True
    )


def _seconds_of(e: dict[str, Any]) -> float:
    from datetime import datetime

    return _seconds(datetime.fromisoformat(e["ts"]))


def test_upsert_keeps_running_aggregates_of_open_windows(project: Path) -> None:
    sql = (
        "SELECT window_start, customer, count(*) AS n, max(amount) AS top "
        "FROM TUMBLE(topic.orders, ts, INTERVAL '1 minute') GROUP BY ALL"
    )
    lh = stream_project(project, {"running": {"sql": sql, "output": "upsert"}})
    lh.produce("orders", [event(i, i) for i in range(6)])
    run_until_caught_up(lh)
    first = lh.sql("SELECT customer, n, top FROM silver.running ORDER BY customer").rows()
    assert first == [("c0", 2, 3.0), ("c1", 2, 4.0), ("c2", 2, 5.0)]
    lh.produce("orders", [event(i, i) for i in range(6, 9)] + [event(9, 70)])
    run_until_caught_up(lh)
    rows = lh.sql(
        "SELECT minute(window_start) AS m, customer, n, top FROM silver.running ORDER BY 1, 2"
    ).rows()
    assert rows == [(0, "c0", 3, 6.0), (0, "c1", 3, 7.0), (0, "c2", 3, 8.0), (1, "c0", 1, 9.0)]


def test_hop_and_session_windows(project: Path) -> None:
    hop = (
        "SELECT window_start, count(*) AS n FROM "
        "HOP(topic.orders, ts, INTERVAL '10 seconds', INTERVAL '20 seconds') GROUP BY ALL"
    )
    session = (
        "SELECT customer, window_start, window_end, count(*) AS n FROM "
        "SESSION(topic.orders, ts, INTERVAL '5 seconds', customer) GROUP BY ALL"
    )
    lh = stream_project(project, {"hop": {"sql": hop}, "sessions": {"sql": session}})
    times = [0, 3, 12, 14, 31, 60]
    lh.produce("orders", [event(0, t, customer="a") for t in times])
    run_until_caught_up(lh)
    hops = lh.sql("SELECT window_start, n FROM silver.hop ORDER BY 1").rows()
    assert [(_seconds(s), n) for s, n in hops] == [(-10, 2), (0, 4), (10, 2), (20, 1), (30, 1)]
    sessions = lh.sql("SELECT window_start, window_end, n FROM silver.sessions ORDER BY 1").rows()
    assert [(_seconds(s), _seconds(e), n) for s, e, n in sessions] == [
        (0, 8, 2),
        (12, 19, 2),
        (31, 36, 1),
    ]


def test_duplicates_within_the_horizon_are_dropped(project: Path) -> None:
    lh = stream_project(
        project,
        {
            "orders": {
                "topic": "orders",
                "event_time": "ts",
                "dedup": {"key": "id", "within": "1 minute"},
            }
        },
    )
    lh.produce("orders", [event(1, 0), event(2, 1), event(1, 30), event(2, 200), event(3, 201)])
    lh.produce("orders", [event(3, 202)])
    run_until_caught_up(lh)
    kept = lh.sql("SELECT id, _offset FROM bronze.orders ORDER BY _offset").rows()
    assert kept == [(1, 0), (2, 1), (2, 3), (3, 4)]


def test_enrichment_join_sees_a_dimension_change_on_the_next_batch(project: Path) -> None:
    sql = (
        "SELECT o.id, c.tier FROM topic.orders AS o "
        "JOIN silver.customers AS c ON c.customer = o.customer"
    )
    lh = stream_project(project, {"enriched": {"sql": sql}})
    lh.write("silver.customers", [{"customer": f"c{i}", "tier": "basic"} for i in range(3)])
    lh.produce("orders", [event(i, i) for i in range(3)])
    run_until_caught_up(lh)
    lh.table("silver.customers").update({"tier": "'gold'"}, "customer = 'c1'")
    lh.produce("orders", [event(i, i) for i in range(3, 6)])
    run_until_caught_up(lh)
    rows = lh.sql("SELECT id, tier FROM silver.enriched ORDER BY id").rows()
    assert rows == [
        (0, "basic"),
        (1, "basic"),
        (2, "basic"),
        (3, "basic"),
        (4, "gold"),
        (5, "basic"),
    ]


def test_a_restarted_pipeline_rebuilds_open_windows_from_the_topic(project: Path) -> None:
    sql = (
        "SELECT window_start, count(*) AS n, sum(amount) AS total "
        "FROM TUMBLE(topic.orders, ts, INTERVAL '10 seconds') GROUP BY ALL"
    )
    config = {"agg": {"sql": sql, "max_batch_records": 7, "commit_interval": 0}}
    lh = stream_project(project, config)
    events = [event(i, i * 0.5) for i in range(200)]
    lh.produce("orders", events)
    spec = lh.pipelines()["agg"]
    for _ in range(3):  # three partial runs, each a fresh processor: state only via replay
        StreamProcessor(lh, spec, lh.bus).run(threading.Event(), max_batches=5)
    run_until_caught_up(lh)
    got = [
        {"start": _seconds(r["window_start"]), "n": r["n"], "total": r["total"]}
        for r in lh.sql("SELECT * FROM silver.agg ORDER BY window_start").dicts()
    ]
    assert got == _batch_windows(lh, events, 10, 99.5)


def test_status_reports_throughput_lag_and_counts(project: Path) -> None:
    lh = stream_project(project, {"orders": {"topic": "orders", "event_time": "ts"}})
    lh.produce("orders", [event(i, i) for i in range(100)])
    lh.produce("orders", [Record(b"oops")])
    run_until_caught_up(lh)
    lh.produce("orders", [event(i, i) for i in range(100, 130)])
    [status] = lh.stream_status()
    assert status.pipeline == "orders"
    assert status.state == "stopped"
    assert status.events_in == 101
    assert status.rows_out == 100
    assert status.quarantined == 1
    assert status.lag == {"0": 30}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"x": {}}, "needs `topic:`"),
        ({"x": {"topic": "a", "sql": "SELECT * FROM topic.b"}}, "SQL reads topic.b"),
        ({"x": {"sql": "SELECT count(*) FROM topic.a"}}, "never closes"),
        ({"x": {"topic": "a", "allowed_lateness": "soon"}}, "expected a duration"),
        ({"x": {"topic": "a", "schema": {"id": "bigint", "v": "blob"}}}, "unknown type"),
        ({"x": {"topic": "a", "output": "upsert"}}, "needs a key"),
        ({"Bad-Name": {"topic": "a"}}, "plain lower-case identifier"),
    ],
)
def test_pipeline_config_errors_name_the_key(
    project: Path, config: dict[str, Any], message: str
) -> None:
    lh = stream_project(project, config)
    with pytest.raises(ConfigError, match=message) as info:
        lh.pipelines()
    assert "lakebed.yml" in str(info.value)


def test_results_also_go_to_an_output_topic(project: Path) -> None:
    sql = (
        "SELECT window_start, customer, count(*) AS n "
        "FROM TUMBLE(topic.orders, ts, INTERVAL '10 seconds') GROUP BY ALL"
    )
    lh = stream_project(project, {"counts": {"sql": sql, "topic_out": "counts"}})
    lh.produce("orders", [event(i, i) for i in range(12)])
    run_until_caught_up(lh)
    consumer = lh.bus.consumer()
    consumer.assign({TopicPartition("counts", 0): BEGINNING})
    records = consumer.poll(100, timeout=5.0)
    consumer.close()
    sent = sorted(
        (json.loads(v)["customer"], json.loads(v)["n"], k.decode())
        for k, v in zip(
            records.column("key").to_pylist(), records.column("value").to_pylist(), strict=True
        )
    )
    # Window [0, 10) closed when event 11 arrived; [10, 20) is still open.
    assert [(c, n) for c, n, _ in sent] == [("c0", 4), ("c1", 3), ("c2", 3)]
    assert all(key.endswith(f"|{c}") for c, _, key in sent)  # keyed by window and customer
    table = lh.sql("SELECT customer, n FROM silver.counts ORDER BY customer").rows()
    assert table == [(c, n) for c, n, _ in sent]


def test_a_latest_pipeline_reads_what_comes_after_its_first_start(project: Path) -> None:
    lh = stream_project(project, {"orders": {"topic": "orders", "start": "latest"}})
    lh.produce("orders", [event(i, i) for i in range(10)])
    run_until_caught_up(lh)  # starts at the end: reads nothing, remembers where it began
    assert "bronze.orders" not in [t.name for t in lh.tables()]
    lh.produce("orders", [event(i, i) for i in range(10, 13)])
    run_until_caught_up(lh)
    assert lh.sql("SELECT id FROM bronze.orders ORDER BY id").rows() == [(10,), (11,), (12,)]


def test_a_pipeline_can_start_at_a_time(project: Path) -> None:
    lh = stream_project(project, {})
    now = int(time.time() * 1000)
    lh.produce(
        "orders",
        [
            Record(json.dumps(event(i, i)).encode(), timestamp_ms=now - 60_000 + i * 1000)
            for i in range(10)
        ],
    )
    moment = datetime.fromtimestamp((now - 55_000) / 1000, UTC).isoformat()
    lh.close()
    lh = stream_project(project, {"orders": {"topic": "orders", "start": moment}})
    run_until_caught_up(lh)
    assert lh.sql("SELECT min(id), count(*) FROM bronze.orders").rows() == [(5, 5)]


def test_start_must_be_earliest_latest_or_a_time(project: Path) -> None:
    lh = stream_project(project, {"orders": {"topic": "orders", "start": "yesterday"}})
    with pytest.raises(ConfigError, match="expected earliest, latest or an ISO time"):
        lh.pipelines()


def test_later_batches_are_parsed_into_the_types_of_the_table_the_pipeline_created(
    project: Path,
) -> None:
    lh = stream_project(project, {"orders": {"topic": "orders", "event_time": "ts"}})
    lh.bus.create_topic("orders", 1)
    processor = StreamProcessor(lh, lh.pipelines()["orders"], lh.bus)
    processor.recover()  # no table yet: the first batch's types make it
    lh.produce("orders", [event(i, i + 0.5) for i in range(10)])  # ts with fractions: text
    assert processor.step() == 10
    # Alone, a ts without fractions would be read as a timestamp, which the table refuses.
    lh.produce("orders", [event(10, 20)])
    processor.run(threading.Event(), max_batches=1)
    assert lh.sql("SELECT count(*) FROM bronze.orders").scalar() == 11
    assert str(lh.table("bronze.orders").schema().field("ts").type) == "string"


class _StuckGroupBus:
    """The bus, except that commits to a consumer group wait until `release` is set, as a
    commit does while the group's coordinator is away (a broker restart)."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.release = threading.Event()
        self.commits = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)

    def consumer(self, group: str | None = None) -> Any:
        consumer = self.bus.consumer(group)
        if group is not None:
            commit = consumer.commit

            def stuck_commit(offsets: Any = None) -> None:
                self.commits += 1
                self.release.wait()
                commit(offsets)

            consumer.commit = stuck_commit
        return consumer


def test_a_group_commit_that_does_not_return_does_not_hold_the_pipeline(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lakebed.process.stream.MIRROR_CLOSE_SECONDS", 0.1)
    lh = stream_project(
        project, {"orders": {"topic": "orders", "event_time": "ts", "max_batch_records": 10}}
    )
    lh.produce("orders", [event(i, i) for i in range(100)])
    bus = _StuckGroupBus(lh.bus)
    processor = StreamProcessor(lh, lh.pipelines()["orders"], bus)  # type: ignore[arg-type]
    done: list[object] = []
    runner = threading.Thread(
        target=lambda: done.append(processor.run(threading.Event(), until_caught_up=True))
    )
    runner.start()
    try:
        runner.join(60)
        assert done, "the pipeline stood still while its mirror commit waited on the broker"
        assert lh.sql("SELECT count(*) FROM bronze.orders").scalar() == 100
        assert bus.commits >= 1  # the mirror did try, on its own thread
    finally:
        bus.release.set()
        runner.join(10)
