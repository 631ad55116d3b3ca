"""Random sequences of writes against an in-memory model: after every step `lh.sql` shows the
model's rows, and at the end time travel shows the model's rows of every version."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pyarrow as pa
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from helpers import new_lakehouse

Row = tuple[int, str | None, int | None]  # (id, p, v)

SCHEMA = pa.schema([("id", pa.int64()), ("p", pa.string()), ("v", pa.int64())])

ids = st.integers(min_value=0, max_value=9)
partitions = st.sampled_from(["a", "b", None])
values = st.one_of(st.none(), st.integers(min_value=-5, max_value=5))
row = st.tuples(ids, partitions, values)
rows = st.lists(row, min_size=1, max_size=6)

DELETES: list[tuple[str | None, Callable[[Row], bool]]] = [
    ("id < 3", lambda r: r[0] < 3),
    ("p = 'b'", lambda r: r[1] == "b"),
    ("p IS NULL", lambda r: r[1] is None),
    ("v > 0", lambda r: r[2] is not None and r[2] > 0),
    (None, lambda r: True),
]

# Predicate, what it removes, and how to make a row satisfy it.
OVERWRITES: list[tuple[str, Callable[[Row], bool], Callable[[Row], Row]]] = [
    ("p = 'a'", lambda r: r[1] == "a", lambda r: (r[0], "a", r[2])),
    ("v > 0", lambda r: r[2] is not None and r[2] > 0, lambda r: (r[0], r[1], abs(r[2] or 0) + 1)),
]


def arrow(data: list[Row]) -> pa.Table:
    return pa.table(
        {"id": [r[0] for r in data], "p": [r[1] for r in data], "v": [r[2] for r in data]},
        schema=SCHEMA,
    )


def canonical(data: list[Row]) -> list[Row]:
    return sorted(data, key=lambda r: tuple((x is not None, x) for x in r))


class WritesMatchTheModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="lakebed-property-"))
        self.lh = new_lakehouse(self.folder / "project")
        self.table = self.lh.create_table("silver.t", SCHEMA, partition_by=["p"])
        self.model: list[Row] = []
        self.states: list[list[Row]] = [[]]  # the model's rows at each table version

    def _committed(self) -> None:
        version = self.table.version()
        assert version in (len(self.states) - 1, len(self.states))
        if version == len(self.states):
            self.states.append(list(self.model))
        else:
            assert canonical(self.model) == canonical(self.states[-1])

    @rule(data=rows)
    def append(self, data: list[Row]) -> None:
        self.table.append(arrow(data))
        self.model += data
        self._committed()

    @rule(data=st.lists(row, max_size=5))
    def overwrite(self, data: list[Row]) -> None:
        self.table.overwrite(arrow(data))
        self.model = list(data)
        self._committed()

    @rule(data=rows, which=st.sampled_from(OVERWRITES))
    def overwrite_where(self, data: list[Row], which: tuple[Any, ...]) -> None:
        predicate, removes, conform = which
        data = [conform(r) for r in data]
        self.table.overwrite(arrow(data), predicate=predicate)
        self.model = [r for r in self.model if not removes(r)] + data
        self._committed()

    @rule(
        data=st.lists(row, min_size=1, max_size=6, unique_by=lambda r: r[0]),
        when_matched=st.sampled_from(["update", "ignore"]),
        full_sync=st.booleans(),
    )
    def merge(self, data: list[Row], when_matched: str, full_sync: bool) -> None:
        self.table.merge(
            arrow(data),
            keys=["id"],
            when_matched=when_matched,  # type: ignore[arg-type]
            delete_unmatched_target=full_sync,
        )
        source = {r[0]: r for r in data}
        target_ids = {r[0] for r in self.model}
        merged = []
        for r in self.model:
            if r[0] in source:
                merged.append(source[r[0]] if when_matched == "update" else r)
            elif not full_sync:
                merged.append(r)
        merged += [r for r in data if r[0] not in target_ids]
        self.model = merged
        self._committed()

    @rule(which=st.sampled_from(DELETES))
    def delete(self, which: tuple[str | None, Callable[[Row], bool]]) -> None:
        predicate, removes = which
        self.table.delete(predicate)
        self.model = [r for r in self.model if not removes(r)]
        self._committed()

    @precondition(lambda self: len(self.states) > 1)
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        # Earlier versions only: restoring the current one is covered in tests/storage.
        version = data.draw(st.integers(min_value=0, max_value=len(self.states) - 2))
        self.table.restore(version)
        self.model = list(self.states[version])
        self._committed()

    @rule(zorder=st.booleans())
    def optimize(self, zorder: bool) -> None:
        self.table.optimize(zorder_by=["id", "v"] if zorder else None)
        self._committed()

    @invariant()
    def sql_shows_the_model(self) -> None:
        got = self.lh.sql("select * from silver.t order by id").rows()
        assert canonical(got) == canonical(self.model)
        assert [r[0] for r in got] == sorted(r[0] for r in self.model)

    def teardown(self) -> None:
        try:
            for version, state in enumerate(self.states):
                got = self.lh.sql("select * from silver.t", as_of=version).rows()
                assert canonical(got) == canonical(state), f"version {version}"
        finally:
            self.lh.close()
            shutil.rmtree(self.folder, ignore_errors=True)


TestWritesMatchTheModel = pytest.mark.slow(WritesMatchTheModel.TestCase)
TestWritesMatchTheModel.settings = settings(max_examples=25, stateful_step_count=8, deadline=None)
