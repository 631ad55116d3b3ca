"""Several processes writing one table at once (spawned: delta-rs panics after fork)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import lakebed
from helpers import new_lakehouse, sorted_rows
from lakebed.errors import ConcurrentWriteError

WRITERS = 3
BATCHES = 6
ROWS_PER_BATCH = 5
SCHEMA = pa.schema([("id", pa.int64()), ("writer", pa.int64()), ("p", pa.string())])


def _append_worker(root: str, writer: int, barrier: Any, out: Any) -> None:
    versions: list[int] = []
    errors: list[str] = []
    with lakebed.open(root) as lh:
        table = lh.table("silver.events")
        barrier.wait()
        for batch in range(BATCHES):
            first = (writer * BATCHES + batch) * ROWS_PER_BATCH
            ids = list(range(first, first + ROWS_PER_BATCH))
            try:
                result = table.append(
                    {"id": ids, "writer": [writer] * len(ids), "p": [f"w{writer % 2}"] * len(ids)}
                )
                versions.append(result.version)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
    out.put((writer, versions, errors))


def _rewrite_worker(root: str, writer: int, operation: str, barrier: Any, out: Any) -> None:
    with lakebed.open(root) as lh:
        table = lh.table("silver.events")
        barrier.wait()
        try:
            if operation == "overwrite":
                ids = [1000 * (writer + 1) + i for i in range(3)]
                table.overwrite({"id": ids, "writer": [writer] * 3, "p": ["w0"] * 3})
            else:
                table.delete(f"writer = {writer}")
            out.put((writer, "ok", ""))
        except ConcurrentWriteError as exc:
            out.put((writer, "conflict", str(exc)))
        except Exception as exc:
            out.put((writer, "error", f"{type(exc).__name__}: {exc}"))


def _run(target: Any, args_per_process: list[tuple[Any, ...]]) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args_per_process))
    out = ctx.Queue()
    processes = [
        ctx.Process(target=target, args=(*args, barrier, out)) for args in args_per_process
    ]
    for process in processes:
        process.start()
    results = [out.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return results


def _new_project(root: Path) -> Path:
    with new_lakehouse(root) as lh:
        lh.create_table("silver.events", SCHEMA, partition_by=["p"])
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return _new_project(tmp_path / "project")


@pytest.fixture(scope="module")
def appended(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    """One race of WRITERS processes appending BATCHES batches each (shared by the tests)."""
    root = _new_project(tmp_path_factory.mktemp("appends") / "project")
    return root, _run(_append_worker, [(str(root), w) for w in range(WRITERS)])


@pytest.mark.slow
def test_concurrent_appends_all_land_exactly_once(appended: tuple[Path, list[Any]]) -> None:
    project, results = appended
    assert [errors for _, _, errors in results] == [[]] * WRITERS
    with lakebed.open(project) as lh:
        ids = lh.sql("select id from silver.events order by id").arrow().column("id").to_pylist()
        assert ids == list(range(WRITERS * BATCHES * ROWS_PER_BATCH))
        table = lh.table("silver.events")
        assert table.version() == WRITERS * BATCHES
        assert sorted_rows(table.read()) == sorted_rows(
            lh.sql("select * from silver.events").arrow()
        )
        assert lh.describe("silver.events").row_count == WRITERS * BATCHES * ROWS_PER_BATCH


@pytest.mark.slow
def test_concurrent_appends_each_report_their_own_commit_version(
    appended: tuple[Path, list[Any]],
) -> None:
    project, results = appended
    versions = [v for _, writer_versions, _ in results for v in writer_versions]
    assert sorted(versions) == list(range(1, WRITERS * BATCHES + 1))
    with lakebed.open(project) as lh:
        table = lh.table("silver.events")
        # The commit at each reported version added exactly that writer's batch.
        for writer, writer_versions, _ in results:
            for version in writer_versions:
                before = set(table.read(as_of=version - 1).column("id").to_pylist())
                after = set(table.read(as_of=version).column("id").to_pylist())
                added = after - before
                assert len(added) == ROWS_PER_BATCH
                assert {i // (BATCHES * ROWS_PER_BATCH) for i in added} == {writer}


@pytest.mark.slow
@pytest.mark.parametrize("operation", ["overwrite", "delete"])
def test_racing_rewrites_succeed_or_conflict_and_never_corrupt(
    project: Path, operation: str
) -> None:
    with lakebed.open(project) as lh:
        for writer in range(WRITERS):
            ids = [100 * writer + i for i in range(4)]
            lh.table("silver.events").append(
                {"id": ids, "writer": [writer] * 4, "p": ["w0", "w1", "w0", "w1"]}
            )
        before = sorted_rows(lh.table("silver.events").read())
        start_version = lh.table("silver.events").version()
    results = _run(_rewrite_worker, [(str(project), w, operation) for w in range(WRITERS)])
    outcomes = {writer: status for writer, status, _ in results}
    assert set(outcomes.values()) <= {"ok", "conflict"}, results
    succeeded = sorted(w for w, status in outcomes.items() if status == "ok")
    assert succeeded, "at least one writer must win the race"
    with lakebed.open(project) as lh:
        table = lh.table("silver.events")
        assert table.version() == start_version + len(succeeded)
        via_sql = sorted_rows(lh.sql("select * from silver.events").arrow())
        assert via_sql == sorted_rows(table.read())
        if operation == "overwrite":
            # The table holds exactly one writer's rows, from the last successful commit.
            last = table.history(1)[0]
            assert last["operation"] == "WRITE"
            writers = {row["writer"] for row in via_sql}
            assert len(writers) == 1
            assert writers <= set(succeeded)
            (winner,) = writers
            assert [row["id"] for row in via_sql] == [1000 * (winner + 1) + i for i in range(3)]
        else:
            expected = [row for row in before if row["writer"] not in succeeded]
            assert via_sql == expected


def test_write_result_reports_its_own_version_when_another_writer_commits_right_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lakebed.storage.table as table_module

    root = _new_project(tmp_path / "project")
    with lakebed.open(root) as lh, lakebed.open(root) as other:
        ours, theirs = lh.table("silver.events"), other.table("silver.events")
        real_write = table_module.write_deltalake
        interleaved = []

        def write_then_let_another_writer_commit(*args: Any, **kwargs: Any) -> None:
            real_write(*args, **kwargs)
            if not interleaved:  # the other writer commits between our commit and its result
                interleaved.append(True)
                monkeypatch.setattr(table_module, "write_deltalake", real_write)
                theirs.append({"id": [99], "writer": [9], "p": ["w1"]})

        monkeypatch.setattr(table_module, "write_deltalake", write_then_let_another_writer_commit)
        result = ours.append({"id": [1], "writer": [1], "p": ["w0"]})
        assert interleaved
        assert ours.version() == 2
        assert result.version == 1
        assert ours.read(as_of=result.version).column("id").to_pylist() == [1]
