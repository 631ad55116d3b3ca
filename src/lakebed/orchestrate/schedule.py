"""Schedules: build selections of the model graph when their cron expressions come due.

Two places declare schedules:

- a model's `<name>.yml` (or its `@model` decorator): `schedule: "0 * * * *"` builds that
  model; a missed due time is skipped (only the latest one runs);
- `schedules.yml` in the project folder, one entry per selector group::

      schedules:
        hourly_gold:
          cron: "0 * * * *"        # minute hour day-of-month month day-of-week, in UTC
          select: "layer:gold"     # any `lakebed run --select` expression
          exclude: "tag:slow"      # optional: models to leave out, the same way
          missed: catch_up         # or skip (the default): run the latest due time only
          start: 2025-06-01T00:00Z # optional: nothing is due before it; catch_up starts here

Cron expressions have five fields (`*`, `*/n`, ranges, lists, month and weekday names) or
are one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually; they are
evaluated in UTC.

Every run of a schedule goes to the run log (kind `schedule`, target the schedule's name,
the due time in its params). The scheduler continues after the latest due time whose run
finished there, so a restarted scheduler picks up where the last one stopped; a run that
was cut off (its record still `running`) is done again. A schedule that never ran is due
at its latest due time (catch_up with a `start`: at every due time since `start`).
Run one scheduler per project at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from lakebed.config import config_error, load_yaml, parse_cron
from lakebed.errors import ConfigError, LakebedError, ModelError, TransformError
from lakebed.orchestrate.run import RunSummary, _dead
from lakebed.storage import TableName
from lakebed.transform import Model, ModelGraph

if TYPE_CHECKING:
    from lakebed.lakehouse import Lakehouse

SCHEDULES_FILE = "schedules.yml"
RUN_KIND = "schedule"  # the kind of a schedule's records in the run log
MAX_CATCH_UP = 100  # at most this many missed due times of one schedule run in one tick
MissedPolicy = Literal["catch_up", "skip"]
ScheduleStatus = Literal["running", "success", "failed"]

# croniter's get_prev is strict: start just after `now` so a due time equal to it counts.
_EPSILON = timedelta(microseconds=1)
# How many of a schedule's newest run records are read to find its last handled due time.
_HISTORY = 100

log = logging.getLogger(__name__)


# -- cron ----------------------------------------------------------------------------------


def due_times(
    cron: str, now: datetime, *, after: datetime | None = None, limit: int = 1
) -> tuple[list[datetime], bool]:
    """The due times of `cron` in (`after`, `now`], oldest first: the latest `limit` of them,
    and whether older ones were left out."""
    found: list[datetime] = []
    cursor = croniter(cron, _utc(now) + _EPSILON)
    while True:
        moment = _utc(cursor.get_prev(datetime))
        if after is not None and moment <= after:
            return found[::-1], False
        if len(found) >= limit:
            return found[::-1], True
        found.append(moment)


def next_due(cron: str, after: datetime) -> datetime:
    """The first due time of `cron` strictly after `after`."""
    return _utc(croniter(cron, _utc(after)).get_next(datetime))


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC (naive times are taken as UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC, fold=0)
    return moment.astimezone(UTC).replace(fold=0)


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat()


# -- declarations --------------------------------------------------------------------------


def _valid_cron(expression: str) -> str:
    return parse_cron(expression)


Cron = Annotated[str, AfterValidator(_valid_cron)]
ScheduleName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", max_length=100)
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleConfig(_Strict):
    """One entry under `schedules:` in schedules.yml."""

    cron: Cron
    select: str = Field(min_length=1, description="a `lakebed run --select` expression")
    exclude: str | None = Field(default=None, description="models to leave out of `select`")
    missed: MissedPolicy = "skip"
    start: datetime | None = Field(default=None, description="nothing is due before it")
    description: str | None = None

    @field_validator("select", "exclude")
    @classmethod
    def _selects_models(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        text = " ".join(value.split())
        if not text:
            raise ValueError("empty selector")
        graph = (info.context or {}).get("graph")
        if isinstance(graph, ModelGraph):
            try:
                graph.select(text)
            except TransformError as exc:
                hint = f" ({exc.hint})" if exc.hint else ""
                raise ValueError(f"{exc.message}{hint}") from None
        return text

    @field_validator("start")
    @classmethod
    def _start_in_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)


class SchedulesFile(_Strict):
    """The contents of schedules.yml."""

    schedules: dict[ScheduleName, ScheduleConfig] = Field(default_factory=dict)


class _ModelSchedule(BaseModel):
    """The `schedule:` key of a model's settings, checked as a cron expression."""

    model_config = ConfigDict(extra="ignore")

    schedule: Cron | None = None


@dataclass(frozen=True)
class Schedule:
    """Something to build when a cron expression comes due."""

    name: str  # a schedules.yml entry, or a model's `layer.name`
    cron: str
    select: str
    missed: MissedPolicy = "skip"
    start: datetime | None = None
    file: str | None = None  # where it is declared
    exclude: str | None = None
    description: str | None = None

    def next_due(self, now: datetime) -> datetime:
        """The first due time after `now` (and not before `start`)."""
        moment = _utc(now)
        if self.start is not None and moment < self.start:
            moment = self.start - _EPSILON
        return next_due(self.cron, moment)

    def due(
        self, now: datetime, *, last: datetime | None, limit: int = MAX_CATCH_UP
    ) -> tuple[list[datetime], bool]:
        """The due times to run at `now` when `last` is the latest one handled, oldest first,
        and whether older missed ones were left out (catch_up past `limit`)."""
        floor = last
        if self.start is not None and (floor is None or floor < self.start):
            floor = self.start - _EPSILON
        if self.missed == "skip" or floor is None:
            times, _ = due_times(self.cron, now, after=floor, limit=1)
            return times, False
        return due_times(self.cron, now, after=floor, limit=max(1, limit))


def _load_yaml(text: str, *, file: str) -> Any:
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
            file=file,
            line=mark.line + 1 if mark is not None else None,
            hint="check indentation and quoting",
        ) from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from exc


def parse_schedules(
    text: str, *, file: str = SCHEDULES_FILE, graph: ModelGraph | None = None
) -> list[Schedule]:
    """The schedules of a schedules.yml text; with `graph`, every selection must pick models.

    Raises `ConfigError` naming the file, line and key of the first problem.
    """
    raw = _load_yaml(text, file=file)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"expected a mapping with a `schedules:` key, got {type(raw).__name__}",
            file=file,
            line=1,
            hint="write `schedules:` and under it one entry per group, e.g. "
            "`hourly_gold: {cron: '0 * * * *', select: 'layer:gold'}`",
        )
    if raw.get("schedules", {}) is None:
        raw = {**raw, "schedules": {}}
    try:
        parsed = SchedulesFile.model_validate(raw, context={"graph": graph})
    except ValidationError as exc:
        raise config_error(exc, file=file, text=text, model=SchedulesFile) from exc
    return [
        Schedule(
            name=name,
            cron=entry.cron,
            select=entry.select,
            missed=entry.missed,
            start=entry.start,
            file=file,
            exclude=entry.exclude,
            description=entry.description,
        )
        for name, entry in sorted(parsed.schedules.items())
    ]


def _model_schedule(model: Model) -> Schedule | None:
    """The schedule a model's settings declare, its cron checked against the settings file."""
    expression = model.config.schedule
    if expression is None:
        return None
    settings = model.path.with_suffix(".yml")
    try:
        cron = parse_cron(expression)
    except ValueError as exc:
        if settings.is_file():
            text = _read_text(settings)
            raw = _load_yaml(text, file=str(settings))
            try:
                _ModelSchedule.model_validate(raw if isinstance(raw, dict) else {})
            except ValidationError as invalid:
                error = config_error(invalid, file=str(settings), text=text, model=_ModelSchedule)
                where = f"{error.file}:{error.line}: " if error.line else f"{error.file}: "
                raise ModelError(
                    error.message.removeprefix(f"{where}`{error.key}`: "),
                    file=error.file,
                    line=error.line,
                    key=error.key,
                    model=str(model.name),
                ) from None
        raise ModelError(
            str(exc), file=str(model.path), key="schedule", model=str(model.name)
        ) from None
    return Schedule(
        name=str(model.name),
        cron=cron,
        select=str(model.name),
        missed="skip",
        file=str(settings if settings.is_file() else model.path),
    )


def load_schedules(
    project_dir: Path,
    models: Mapping[TableName, Model],
    graph: ModelGraph | None = None,
) -> list[Schedule]:
    """Every schedule of a project: those in schedules.yml, then the models' own, by name."""
    schedules: list[Schedule] = []
    path = project_dir / SCHEDULES_FILE
    if path.is_file():
        schedules.extend(parse_schedules(_read_text(path), file=str(path), graph=graph))
    for _, model in sorted(models.items()):
        schedule = _model_schedule(model)
        if schedule is not None:
            schedules.append(schedule)
    return schedules


# -- the scheduler -------------------------------------------------------------------------


@dataclass
class ScheduledRun:
    """One due time of one schedule, and how its run went."""

    schedule: Schedule
    due: datetime
    status: ScheduleStatus = "running"
    run_id: str | None = None  # the schedule's record in the run log
    summary: RunSummary | None = None  # the model run it started
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class DueRun:
    """A schedule and one of its due times that has not been handled yet."""

    schedule: Schedule
    due: datetime


Report = Callable[[Literal["started", "finished"], ScheduledRun], None]


class _ModelsFailedError(LakebedError):
    """Marks a schedule's record failed when some of its models failed."""


def _system_clock() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Runs a project's schedules when they come due, recording each run in the run log.

    `clock` returns the current time (UTC-aware); tests inject their own. `report` hears of
    each run as it starts and finishes; `warn` of missed due times that catch_up left out.
    """

    def __init__(
        self,
        lh: Lakehouse,
        *,
        clock: Callable[[], datetime] = _system_clock,
        schedules: Iterable[Schedule] | None = None,
        workers: int = 2,
        max_catch_up: int = MAX_CATCH_UP,
        report: Report | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.lh = lh
        self.clock = clock
        if schedules is None:
            graph = lh.graph()
            schedules = load_schedules(lh.root, graph.models, graph)
        self.schedules: list[Schedule] = list(schedules)
        names = [s.name for s in self.schedules]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"schedules declared twice: {', '.join(twice)}")
        self.workers = workers
        self.max_catch_up = max_catch_up
        self.report = report
        self.warn: Callable[[str], None] = warn or log.warning

    def now(self) -> datetime:
        return _utc(self.clock())

    # -- what is due -----------------------------------------------------------------------

    def last_due(self, schedule: Schedule) -> datetime | None:
        """The latest due time of `schedule` whose run finished (success or failed)."""
        records = self.lh.metastore.runs(limit=_HISTORY, kind=RUN_KIND, target=schedule.name)
        latest: datetime | None = None
        for record in records:
            due = record.params.get("due")
            if record.status == "running" or not isinstance(due, str):
                continue  # cut off before it finished: its due time is not handled
            try:
                moment = _utc(datetime.fromisoformat(due))
            except ValueError:
                continue
            if latest is None or moment > latest:
                latest = moment
        return latest

    def due(self, now: datetime | None = None) -> list[DueRun]:
        """What to run at `now` (default: the clock), oldest due time first."""
        moment = self.now() if now is None else _utc(now)
        found: list[DueRun] = []
        for schedule in self.schedules:
            last = self.last_due(schedule)
            times, truncated = schedule.due(moment, last=last, limit=self.max_catch_up)
            if truncated:
                since = _iso(last) if last is not None else "its start"
                self.warn(
                    f"schedule {schedule.name} missed more than {len(times)} due times since "
                    f"{since}; catching up on the latest {len(times)} only"
                )
            found.extend(DueRun(schedule, t) for t in times)
        return sorted(found, key=lambda d: (d.due, d.schedule.name))

    def next_due(self, schedule: Schedule, now: datetime | None = None) -> datetime:
        return schedule.next_due(self.now() if now is None else now)

    def pending(self, schedule: Schedule, now: datetime | None = None) -> list[datetime]:
        """The due times of `schedule` that the scheduler would run at `now`, oldest first
        (a schedule that never ran: its latest due time)."""
        moment = self.now() if now is None else _utc(now)
        times, _ = schedule.due(moment, last=self.last_due(schedule), limit=self.max_catch_up)
        return times

    # -- running ---------------------------------------------------------------------------

    def tick(
        self, now: datetime | None = None, *, stop: threading.Event | None = None
    ) -> list[ScheduledRun]:
        """Run everything due at `now`, in due-time order; with `stop`, start nothing more
        once it is set (the run in progress finishes and is recorded)."""
        done: list[ScheduledRun] = []
        for item in self.due(now):
            if stop is not None and stop.is_set():
                break
            done.append(self.run_due(item.schedule, item.due))
        return done

    def run_due(self, schedule: Schedule, due: datetime) -> ScheduledRun:
        """Build a schedule's selection for one due time, recorded in the run log; a failure
        is recorded and returned, not raised."""
        outcome = ScheduledRun(schedule, _utc(due))
        if self.report is not None:
            self.report("started", outcome)
        started = time.perf_counter()
        try:
            with self.lh.track_run(
                RUN_KIND, schedule.name, due=_iso(due), select=schedule.select
            ) as record:
                outcome.run_id = record.run_id
                summary = self.lh.run(
                    schedule.select, exclude=schedule.exclude, workers=self.workers
                )
                outcome.summary = summary
                record.rows = sum(node.rows for node in summary.nodes)
                if not summary.ok:
                    failed = [n.model for n in summary.nodes if n.status == "failed"]
                    raise _ModelsFailedError(f"models failed: {', '.join(failed)}")
            outcome.status = "success"
        except Exception as exc:  # recorded by track_run; the scheduler carries on
            outcome.status = "failed"
            outcome.error = exc.message if isinstance(exc, LakebedError) else repr(exc)
        outcome.seconds = time.perf_counter() - started
        if self.report is not None:
            self.report("finished", outcome)
        return outcome

    def run_forever(self, stop: threading.Event, *, poll_seconds: float = 30.0) -> None:
        """Run what is due, then wait for the next due time (at most `poll_seconds`), until
        `stop` is set; a run in progress then finishes and is recorded first."""
        while not stop.is_set():
            try:
                self.tick(stop=stop)
            except LakebedError as exc:  # e.g. the metastore is unreachable: try again later
                self.warn(f"scheduler tick failed: {exc.message}")
            if stop.is_set():
                break
            stop.wait(self._wait_seconds(poll_seconds))

    def _wait_seconds(self, poll_seconds: float) -> float:
        now = self.now()
        upcoming = [s.next_due(now) for s in self.schedules]
        if not upcoming:
            return poll_seconds
        until = (min(upcoming) - now).total_seconds()
        return max(0.01, min(poll_seconds, until + 0.01))


SCHEDULER_LEASE = "scheduler"


@contextlib.contextmanager
def scheduler_lease(lh: Any) -> Iterator[None]:
    """Hold the project's scheduler lease: a second scheduler would run every due time
    twice. A lease left by a killed scheduler on this host is taken over."""
    me = f"scheduler@{socket.gethostname()}:{os.getpid()}"
    holder = lh.metastore.acquire_lease(SCHEDULER_LEASE, me, seconds=7 * 86_400)
    if holder is not None and _dead(holder):
        holder = lh.metastore.acquire_lease(
            SCHEDULER_LEASE, me, seconds=7 * 86_400, stale_holder=holder
        )
    if holder is not None:
        raise TransformError(
            f"another scheduler ({holder}) already runs this project",
            hint="stop it first; one scheduler per project runs each due time once",
        )
    try:
        yield
    finally:
        lh.metastore.release_lease(SCHEDULER_LEASE, me)
