"""Schedules: cron parsing, due times with an injected clock, missed-run policies, restarts
from the run log, schedules.yml validation, and a real `lakebed scheduler` process stopped
with SIGTERM in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import lakebed
from helpers import write_model
from lakebed import Lakehouse
from lakebed.errors import ConfigError, ModelError
from lakebed.orchestrate.schedule import (
    RUN_KIND,
    Schedule,
    ScheduledRun,
    Scheduler,
    due_times,
    load_schedules,
    next_due,
    parse_cron,
    parse_schedules,
)


def at(text: str) -> datetime:
    """A UTC moment from `2025-01-01 10:30`-style text."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- cron ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "normalized"),
    [
        ("0 * * * *", "0 * * * *"),
        ("  */15   9-17 1,15 * *  ", "*/15 9-17 1,15 * *"),
        ("0 6 * jan-mar mon-fri", "0 6 * jan-mar mon-fri"),
        ("30 2 * * SUN", "30 2 * * SUN"),
        ("@hourly", "@hourly"),
        ("@Daily", "@daily"),
    ],
)
def test_parse_cron_accepts_five_fields_and_macros(expression: str, normalized: str) -> None:
    assert parse_cron(expression) == normalized


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [
        ("0 * * *", "5 fields"),
        ("0 0 * * * *", "5 fields"),
        ("", "5 fields"),
        ("60 * * * *", "out of range"),
        ("0 24 * * *", "out of range"),
        ("0 0 * 13 *", "out of range"),
        ("*/0 * * * *", "step"),
        ("0 0 30 2 *", "invalid cron expression"),  # February 30th never comes
        ("a b c d e", "invalid cron expression"),
        ("@fortnightly", "unknown cron macro"),
    ],
)
def test_parse_cron_rejects_bad_expressions_saying_why(expression: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_cron(expression)


def test_due_times_are_inclusive_of_now_and_oldest_first() -> None:
    times, truncated = due_times("0 * * * *", at("2025-01-01 13:00"), after=at("2025-01-01 10:00"))
    assert (times, truncated) == ([at("2025-01-01 13:00")], True)  # limit=1: the latest only
    times, truncated = due_times(
        "0 * * * *", at("2025-01-01 13:00"), after=at("2025-01-01 10:00"), limit=10
    )
    assert times == [at("2025-01-01 11:00"), at("2025-01-01 12:00"), at("2025-01-01 13:00")]
    assert not truncated
    times, truncated = due_times(
        "*/15 * * * *", at("2025-01-01 10:59:59"), after=at("2025-01-01 10:00"), limit=2
    )
    assert (times, truncated) == ([at("2025-01-01 10:30"), at("2025-01-01 10:45")], True)
    assert due_times("0 * * * *", at("2025-01-01 10:59"), after=at("2025-01-01 10:00")) == (
        [],
        False,
    )


def test_next_due_follows_names_and_weekdays() -> None:
    # 2025-01-03 is a Friday: the next weekday 06:00 after Friday noon is Monday the 6th.
    assert next_due("0 6 * * mon-fri", at("2025-01-03 12:00")) == at("2025-01-06 06:00")
    assert next_due("0 0 1 feb *", at("2025-01-03 12:00")) == at("2025-02-01 00:00")
    assert next_due("@hourly", at("2025-01-01 10:00")) == at("2025-01-01 11:00")
    aware = datetime(2025, 1, 1, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert next_due("0 * * * *", aware) == at("2025-01-01 12:00")  # 11:00 UTC + 1 h


def test_skip_runs_only_the_latest_and_catch_up_each_missed_time() -> None:
    now, last = at("2025-01-01 13:05"), at("2025-01-01 10:00")
    skip = Schedule("s", "0 * * * *", "x", missed="skip")
    catch_up = Schedule("c", "0 * * * *", "x", missed="catch_up")
    assert skip.due(now, last=last) == ([at("2025-01-01 13:00")], False)
    assert catch_up.due(now, last=last)[0] == [at(f"2025-01-01 {h}:00") for h in (11, 12, 13)]
    assert catch_up.due(now, last=last, limit=2) == (
        [at("2025-01-01 12:00"), at("2025-01-01 13:00")],
        True,
    )
    # Never ran: the latest due time only, unless a start says where to catch up from.
    assert catch_up.due(now, last=None) == ([at("2025-01-01 13:00")], False)
    started = Schedule("c", "0 * * * *", "x", missed="catch_up", start=at("2025-01-01 12:00"))
    assert started.due(now, last=None)[0] == [at("2025-01-01 12:00"), at("2025-01-01 13:00")]
    assert started.due(at("2025-01-01 11:30"), last=None)[0] == []  # not started yet
    assert started.next_due(at("2025-01-01 09:00")) == at("2025-01-01 12:00")


# -- a project with schedules ----------------------------------------------------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def lh(tmp_path: Path) -> Iterator[Lakehouse]:
    root = lakebed.init_project(tmp_path / "p")
    write_model(root, "silver.events", "select id, upper(kind) as kind from bronze.events")
    write_model(
        root,
        "gold.by_kind",
        "select kind, count(*) as n from silver.events group by all",
        'schedule: "0 * * * *"\n',
    )
    with lakebed.open(root) as lake:
        lake.write("bronze.events", {"id": [1, 2, 3], "kind": ["a", "b", "a"]})
        assert lake.run().ok  # built once by hand before any schedule runs
        yield lake


def _schedules_yml(lh: Lakehouse, text: str) -> None:
    (lh.root / "schedules.yml").write_text(text)


def _handled(lh: Lakehouse, name: str) -> list[tuple[str, str]]:
    """(due, status) of a schedule's runs in the run log, oldest first."""
    records = lh.metastore.runs(limit=1000, kind=RUN_KIND, target=name)
    return [(r.params["due"], r.status) for r in reversed(records)]


def _iso(text: str) -> str:
    return at(text).isoformat()


def test_schedules_come_from_model_settings_and_schedules_yml(lh: Lakehouse) -> None:
    _schedules_yml(
        lh,
        "schedules:\n"
        "  hourly_silver:\n"
        "    cron: '30 * * * *'\n"
        "    select: 'layer:silver'\n"
        "    missed: catch_up\n"
        "    start: 2025-01-01T08:00:00Z\n",
    )
    scheduler = Scheduler(lh, clock=Clock(at("2025-01-01 10:45")))
    assert [(s.name, s.cron, s.select, s.missed) for s in scheduler.schedules] == [
        ("hourly_silver", "30 * * * *", "layer:silver", "catch_up"),
        ("gold.by_kind", "0 * * * *", "gold.by_kind", "skip"),
    ]
    assert scheduler.schedules[0].start == at("2025-01-01 08:00")
    assert [(d.schedule.name, d.due) for d in scheduler.due()] == [
        ("hourly_silver", at("2025-01-01 08:30")),
        ("hourly_silver", at("2025-01-01 09:30")),
        ("gold.by_kind", at("2025-01-01 10:00")),
        ("hourly_silver", at("2025-01-01 10:30")),
    ]
    assert scheduler.next_due(scheduler.schedules[1]) == at("2025-01-01 11:00")


def test_catch_up_runs_each_missed_time_in_order_and_skip_only_the_latest(lh: Lakehouse) -> None:
    _schedules_yml(
        lh, "schedules:\n  silver: {cron: '0 * * * *', select: silver.events, missed: catch_up}\n"
    )
    clock = Clock(at("2025-01-01 10:30"))
    seen: list[tuple[str, str, datetime]] = []

    def report(event: str, run: ScheduledRun) -> None:
        seen.append((event, run.schedule.name, run.due))

    scheduler = Scheduler(lh, clock=clock, report=report)
    first = scheduler.tick()  # never ran: only the latest due time of each
    assert [(r.schedule.name, r.due, r.status) for r in first] == [
        ("gold.by_kind", at("2025-01-01 10:00"), "success"),
        ("silver", at("2025-01-01 10:00"), "success"),
    ]
    assert lh.sql("select * from gold.by_kind order by kind").rows() == [("A", 2), ("B", 1)]
    assert scheduler.tick() == []  # nothing new is due within the same hour

    clock.now = at("2025-01-01 13:05")  # three hours later: 11:00, 12:00 and 13:00 were due
    second = scheduler.tick()
    assert [(r.schedule.name, r.due) for r in second] == [
        ("silver", at("2025-01-01 11:00")),
        ("silver", at("2025-01-01 12:00")),
        ("gold.by_kind", at("2025-01-01 13:00")),  # skip: the latest due time only
        ("silver", at("2025-01-01 13:00")),
    ]
    assert all(r.status == "success" and r.summary is not None for r in second)
    assert _handled(lh, "silver") == [
        (_iso(f"2025-01-01 {hour}:00"), "success") for hour in (10, 11, 12, 13)
    ]
    assert _handled(lh, "gold.by_kind") == [
        (_iso("2025-01-01 10:00"), "success"),
        (_iso("2025-01-01 13:00"), "success"),
    ]
    # Each due run started one model run of its selection, reported as it went.
    assert len(lh.runs(kind="run", limit=100)) == 1 + 6
    assert [e for e in seen if e[0] == "started"] == [
        ("started", r.schedule.name, r.due) for r in first + second
    ]


def test_a_schedule_group_can_exclude_models(lh: Lakehouse) -> None:
    _schedules_yml(
        lh,
        "schedules:\n  all_but_gold:\n"
        "    {cron: '0 * * * *', select: 'silver.events+', exclude: 'layer:gold'}\n",
    )
    scheduler = Scheduler(lh, clock=Clock(at("2025-01-01 10:30")))
    group = next(s for s in scheduler.schedules if s.name == "all_but_gold")
    assert group.exclude == "layer:gold"
    run = scheduler.run_due(group, at("2025-01-01 10:00"))
    assert run.summary is not None
    assert [n.model for n in run.summary.nodes] == ["silver.events"]


def test_a_restart_continues_after_the_last_recorded_due_time(lh: Lakehouse) -> None:
    _schedules_yml(
        lh, "schedules:\n  silver: {cron: '0 * * * *', select: silver.events, missed: catch_up}\n"
    )
    Scheduler(lh, clock=Clock(at("2025-01-01 10:30"))).tick()
    # A scheduler killed in the middle of its 11:00 run left the record `running`.
    lh.metastore.start_run(RUN_KIND, "silver", {"due": _iso("2025-01-01 11:00")})

    restarted = Scheduler(lh, clock=Clock(at("2025-01-01 12:10")))
    assert restarted.last_due(restarted.schedules[0]) == at("2025-01-01 10:00")
    ran = restarted.tick()
    assert [(r.schedule.name, r.due) for r in ran] == [
        ("silver", at("2025-01-01 11:00")),  # the interrupted due time is done again
        ("gold.by_kind", at("2025-01-01 12:00")),
        ("silver", at("2025-01-01 12:00")),
    ]
    assert [due for due, status in _handled(lh, "silver") if status == "success"] == [
        _iso("2025-01-01 10:00"),
        _iso("2025-01-01 11:00"),
        _iso("2025-01-01 12:00"),
    ]
    again = Scheduler(lh, clock=Clock(at("2025-01-01 12:59")))
    assert again.tick() == []


def test_stop_lets_the_run_in_progress_finish_and_the_rest_wait(lh: Lakehouse) -> None:
    _schedules_yml(
        lh,
        "schedules:\n"
        "  silver:\n"
        "    {cron: '0 * * * *', select: silver.events, missed: catch_up, start: 2025-01-01}\n",
    )
    (lh.root / "models" / "gold" / "by_kind.yml").unlink()
    stop = threading.Event()

    def report(event: str, run: ScheduledRun) -> None:
        if event == "started":
            stop.set()  # a SIGTERM arrives while the first run is building

    clock = Clock(at("2025-01-01 02:30"))
    ran = Scheduler(lh, clock=clock, report=report).tick(stop=stop)
    assert [(r.due, r.status) for r in ran] == [(at("2025-01-01 00:00"), "success")]
    assert _handled(lh, "silver") == [(_iso("2025-01-01 00:00"), "success")]
    rest = Scheduler(lh, clock=clock).tick()
    assert [r.due for r in rest] == [at("2025-01-01 01:00"), at("2025-01-01 02:00")]


def test_run_forever_returns_when_stopped(lh: Lakehouse) -> None:
    stop = threading.Event()
    scheduler = Scheduler(lh, clock=Clock(at("2025-01-01 10:30")))
    thread = threading.Thread(
        target=scheduler.run_forever, args=(stop,), kwargs={"poll_seconds": 0.05}
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not _handled(lh, "gold.by_kind") and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert _handled(lh, "gold.by_kind") == [(_iso("2025-01-01 10:00"), "success")]


def test_a_failed_run_is_recorded_and_not_retried(lh: Lakehouse) -> None:
    write_model(lh.root, "silver.events", "select id, kind, 1 / 0 as boom from bronze.missing")
    clock = Clock(at("2025-01-01 10:30"))
    scheduler = Scheduler(lh, clock=clock, schedules=[Schedule("s", "0 * * * *", "silver.events")])
    (ran,) = scheduler.tick()
    assert ran.status == "failed"
    assert ran.error is not None
    assert "bronze.missing" in ran.error
    assert _handled(lh, "s") == [(_iso("2025-01-01 10:00"), "failed")]
    assert scheduler.tick() == []  # the failed due time counts as handled
    clock.now = at("2025-01-01 11:00")
    assert [r.due for r in scheduler.tick()] == [at("2025-01-01 11:00")]


def test_failing_models_mark_the_schedule_run_failed(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "silver.events",
        "select id, upper(kind) as kind from bronze.events",
        "checks:\n  - accepted_values: {column: kind, values: [A]}\n",
    )
    scheduler = Scheduler(
        lh,
        clock=Clock(at("2025-01-01 10:30")),
        schedules=[Schedule("s", "0 * * * *", "silver.events+")],
    )
    (ran,) = scheduler.tick()
    assert ran.status == "failed"
    assert ran.error == "models failed: silver.events"
    assert ran.summary is not None
    assert {n.model: n.status for n in ran.summary.nodes} == {
        "silver.events": "failed",
        "gold.by_kind": "skipped",
    }
    (record,) = lh.metastore.runs(kind=RUN_KIND, target="s")
    assert (record.status, record.error) == ("failed", "models failed: silver.events")


def test_catch_up_is_capped_with_a_warning(lh: Lakehouse) -> None:
    warnings: list[str] = []
    scheduler = Scheduler(
        lh,
        clock=Clock(at("2025-01-01 10:00")),
        schedules=[
            Schedule("s", "0 * * * *", "silver.events", "catch_up", start=at("2024-12-31 00:00"))
        ],
        max_catch_up=3,
        warn=warnings.append,
    )
    assert [r.due for r in scheduler.tick()] == [at(f"2025-01-01 {h:02}:00") for h in (8, 9, 10)]
    (warning,) = warnings
    assert "missed more than 3 due times" in warning
    assert "latest 3" in warning


# -- invalid declarations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "key", "complaint"),
    [
        (
            "schedules:\n  gold:\n    cron: '0 * * * *'\n    select: layer:gold\n    missd: skip\n",
            5,
            "schedules.gold.missd",
            "unknown key (did you mean missed? known keys: cron, select, exclude, missed, "
            "start, description)",
        ),
        (
            "schedules:\n  gold:\n    select: layer:gold\n    cron: '0 25 * * *'\n",
            4,
            "schedules.gold.cron",
            "out of range",
        ),
        (
            "schedules:\n  gold:\n    cron: '0 * * *'\n    select: layer:gold\n",
            3,
            "schedules.gold.cron",
            "5 fields",
        ),
        (
            "schedules:\n  gold: {cron: '@hourly', select: 'layer:gold', missed: later}\n",
            2,
            "schedules.gold.missed",
            "'catch_up' or 'skip'",
        ),
        (
            "schedules:\n  gold:\n    cron: '@hourly'\n    select: gold.by_knd\n",
            4,
            "schedules.gold.select",
            "did you mean gold.by_kind",
        ),
        (
            "schedules:\n  gold:\n    cron: '@hourly'\n    select: 'tag:nightly'\n",
            4,
            "schedules.gold.select",
            "no model has tag 'nightly'",
        ),
        (
            "schedules:\n  gold:\n    cron: '@hourly'\n",
            2,
            "schedules.gold.select",
            "Field required",
        ),
        (
            "schedule:\n  gold: {}\n",
            1,
            "schedule",
            "unknown key (did you mean schedules? known keys: schedules)",
        ),
    ],
)
def test_an_invalid_schedules_yml_names_file_line_and_key(
    lh: Lakehouse, text: str, line: int, key: str, complaint: str
) -> None:
    _schedules_yml(lh, text)
    with pytest.raises(ConfigError) as caught:
        Scheduler(lh)
    error = caught.value
    path = str(lh.root / "schedules.yml")
    assert (error.file, error.line, error.key) == (path, line, key)
    assert complaint in str(error)
    assert str(error).startswith(f"{path}:{line}: `{key}`: ")


def test_schedules_yml_that_is_not_yaml_or_not_a_mapping(lh: Lakehouse) -> None:
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        parse_schedules("schedules:\n  gold: {cron: '0 * * * *'\n", file="s.yml")
    assert caught.value.file == "s.yml"
    assert caught.value.line is not None
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_schedules("- gold\n", file="s.yml")
    assert parse_schedules("", file="s.yml") == []
    assert parse_schedules("schedules:\n", file="s.yml") == []


def test_an_invalid_model_schedule_names_its_settings_file(lh: Lakehouse) -> None:
    settings = lh.root / "models" / "gold" / "by_kind.yml"
    settings.write_text("materialized: table\nschedule: every hour\n")
    with pytest.raises(ModelError) as caught:
        load_schedules(lh.root, lh.models())
    error = caught.value
    assert (error.file, error.line, error.key) == (str(settings), 2, "schedule")
    assert error.model == "gold.by_kind"
    assert "5 fields" in str(error)


# -- the real process --------------------------------------------------------------------------

SLOW_MODEL = """
import time
from pathlib import Path

from lakebed.transform import model

PROJECT = Path(__file__).resolve().parents[2]


@model(inputs=["bronze.events"], schedule="* * * * *")
def slow_events(events):
    (PROJECT / "building").write_text("started")
    time.sleep(1.5)  # the SIGTERM arrives now, in the middle of the run
    return events
"""


def _cli(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "lakebed.cli", "--project", str(root), *args]


def test_the_scheduler_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "p")
    (root / "models" / "silver" / "slow_events.py").write_text(SLOW_MODEL)
    with lakebed.open(root) as lake:
        lake.write("bronze.events", {"id": [1, 2, 3], "kind": ["a", "b", "a"]})
    process = subprocess.Popen(
        _cli(root, "scheduler", "--poll", "0.2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        # Every minute, so the latest due time is already past: it runs at once.
        deadline = time.monotonic() + 60
        while not (root / "building").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the scheduled model never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, out + err
    assert "slow_events" in out
    assert "* * * * *" in out
    assert "SIGTERM: stopping after the run in progress" in err
    assert "scheduler stopped" in err
    with lakebed.open(root) as lake:
        assert lake.sql("select count(*) from silver.slow_events").rows() == [(3,)]
        (scheduled,) = lake.runs(kind=RUN_KIND)
        assert (scheduled.target, scheduled.status) == ("silver.slow_events", "success")
        assert scheduled.finished_at is not None
        due = datetime.fromisoformat(scheduled.params["due"])
        assert due.second == 0
        assert due <= datetime.now(UTC)
        # Nothing half-done: the schedule's run, the model run and the model build all ended.
        records = lake.runs(limit=100)
        assert {r.kind for r in records} >= {"schedule", "run", "model"}
        assert [(r.kind, r.status) for r in records if r.status != "success"] == []


def test_scheduler_once_runs_what_is_due_and_exits(tmp_path: Path) -> None:
    root = lakebed.init_project(tmp_path / "p")
    nothing = subprocess.run(_cli(root, "scheduler", "--once"), capture_output=True, text=True)
    assert nothing.returncode == 0, nothing.stderr
    assert "nothing is scheduled" in nothing.stdout
    with lakebed.open(root) as lake:
        lake.write("bronze.events", {"id": [1, 2], "kind": ["a", "b"]})
    write_model(root, "silver.events", "select * from bronze.events")
    (root / "schedules.yml").write_text(
        "schedules:\n  nightly: {cron: '0 3 * * *', select: 'layer:silver'}\n"
    )
    before = datetime.now(UTC)
    once = subprocess.run(
        _cli(root, "scheduler", "--once"),
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert once.returncode == 0, once.stdout + once.stderr
    assert "nightly" in once.stdout
    assert "0 3 * * *" in once.stdout
    assert "layer:silver" in once.stdout
    assert "nightly: success" in once.stdout
    with lakebed.open(root) as lake:
        assert lake.sql("select count(*) from silver.events").rows() == [(2,)]
        (record,) = lake.runs(kind=RUN_KIND)
        assert record.status == "success"
        # The latest 03:00 UTC at or before the moment the scheduler looked.
        latest = {due_times("0 3 * * *", moment)[0][0] for moment in (before, datetime.now(UTC))}
        assert datetime.fromisoformat(record.params["due"]) in latest
    (root / "schedules.yml").write_text("schedules:\n  nightly: {cron: '0 3 * *', select: x}\n")
    broken = subprocess.run(_cli(root, "scheduler", "--once"), capture_output=True, text=True)
    assert broken.returncode == 1
    assert "schedules.yml:2" in broken.stderr
    assert "schedules.nightly.cron" in broken.stderr


def test_a_second_scheduler_on_the_same_project_is_refused(tmp_path: Path) -> None:
    from lakebed.errors import TransformError
    from lakebed.orchestrate.schedule import scheduler_lease

    root = lakebed.init_project(tmp_path / "lease")
    with lakebed.open(root) as lh:
        # A scheduler running on another host holds the project's lease.
        other = "scheduler@another-host:4242"
        assert lh.metastore.acquire_lease("scheduler", other, seconds=600) is None
        with pytest.raises(TransformError, match="another scheduler"), scheduler_lease(lh):
            pass
        lh.metastore.release_lease("scheduler", other)
        with scheduler_lease(lh):  # free again once it stopped
            assert lh.metastore.acquire_lease("scheduler", other, seconds=600) is not None


def test_schedules_lists_each_schedule_with_its_last_and_next_due(lh: Lakehouse) -> None:
    import json

    from typer.testing import CliRunner

    from lakebed.cli import app

    _schedules_yml(lh, "schedules:\n  nightly: {cron: '0 3 * * *', select: 'layer:silver'}\n")
    Scheduler(lh, clock=Clock(at("2025-01-01 10:45"))).tick()
    done = CliRunner().invoke(app, ["--project", str(lh.root), "schedules", "-f", "json"])
    assert done.exit_code == 0, done.output
    listed = {s["schedule"]: s for s in json.loads(done.stdout)}
    assert set(listed) == {"nightly", "gold.by_kind"}
    assert (listed["nightly"]["cron"], listed["nightly"]["select"]) == ("0 3 * * *", "layer:silver")
    assert listed["nightly"]["last_due"] == _iso("2025-01-01 03:00")
    assert listed["gold.by_kind"]["last_due"] == _iso("2025-01-01 10:00")
    next_due = datetime.fromisoformat(listed["nightly"]["next_due"])
    assert (next_due.hour, next_due.minute) == (3, 0)
    assert next_due > datetime.now(UTC)
    table = CliRunner().invoke(
        app, ["--project", str(lh.root), "schedules"], env={"COLUMNS": "200"}
    )
    assert "nightly" in table.stdout
    assert "catch up" not in table.stdout  # both skip missed runs


def test_a_schedule_due_now_is_listed_as_due_now(lh: Lakehouse) -> None:
    from typer.testing import CliRunner

    from lakebed.cli import app

    _schedules_yml(
        lh, "schedules:\n  nightly: {cron: '0 3 * * *', select: 'layer:silver', missed: catch_up}\n"
    )
    nightly = next(s for s in Scheduler(lh).schedules if s.name == "nightly")
    # Never run: its latest due time is run at the scheduler's first look.
    scheduler = Scheduler(lh, clock=Clock(at("2025-01-01 10:45")))
    assert scheduler.pending(nightly) == [at("2025-01-01 03:00")]
    scheduler.tick()
    assert scheduler.pending(nightly) == []
    later = Scheduler(lh, clock=Clock(at("2025-01-03 04:00")))
    assert later.pending(nightly) == [at("2025-01-02 03:00"), at("2025-01-03 03:00")]
    # The listing (by the real clock, long after) says what a scheduler would run first: the
    # latest 100 missed days (MAX_CATCH_UP).
    table = CliRunner().invoke(
        app, ["--project", str(lh.root), "schedules"], env={"COLUMNS": "200"}
    )
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if "nightly" in line)
    assert "now: " in row, row
    assert " and 99 more" in row, row
