"""The ingest runner: metadata columns, exactly-once state, quarantine, schema policies."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

import lakebed
from lakebed import Lakehouse
from lakebed.errors import ConfigError, SchemaContractError
from lakebed.ingest import (
    Batch,
    Connector,
    ConnectorOptions,
    IngestProgress,
    Reject,
    RowOrigins,
    register_connector,
)
from lakebed.ingest import runner as runner_module


class RowsOptions(ConnectorOptions):
    """Batches listed in a JSON-lines file of the project: one line = one batch."""

    batches_file: str
    replace_key: str | None = None


@register_connector
class RowsConnector(Connector):
    kind = "test_rows"
    options_model = RowsOptions

    def batches(self, state: Mapping[str, Any], progress: IngestProgress) -> Iterator[Batch]:
        import json

        assert isinstance(self.options, RowsOptions)
        lines = (self.context.project_dir / self.options.batches_file).read_text().splitlines()
        done = int(state.get("done", 0))
        for number, line in enumerate(lines[done:], start=done + 1):
            spec = json.loads(line)
            rows = spec.get("rows", [])
            progress.advance("files")
            yield Batch(
                data=pa.Table.from_pylist(rows) if rows else pa.table({}),
                origins=[f"batch{number}:{i}" for i in range(len(rows))],
                state_delta={"done": number, "seen": {f"b{number}": len(rows)}},
                rejects=[
                    Reject(_raw(r), "unparseable", f"batch{number}:bad")
                    for r in spec.get("bad", [])
                ],
                label=f"batch {number}",
                replace_predicate=spec.get("replace"),
            )


def _raw(text: str) -> str | bytes:
    return bytes.fromhex(text[4:]) if text.startswith("hex:") else text


def _project(tmp_path: Path, **source: Any) -> Path:
    root = lakebed.init_project(tmp_path / "p")
    config = yaml.safe_load((root / "lakebed.yml").read_text())
    config["sources"] = {"events": {"kind": "test_rows", "batches_file": "batches.jsonl", **source}}
    (root / "lakebed.yml").write_text(yaml.safe_dump(config))
    return root


def _batches(root: Path, *batches: dict[str, Any]) -> None:
    import json

    with (root / "batches.jsonl").open("a") as out:
        for batch in batches:
            out.write(json.dumps(batch) + "\n")


def _rows(lh: Lakehouse, table: str = "bronze.events", columns: str = "id, v") -> list[tuple]:
    return lh.sql(f"select {columns} from {table} order by all").rows()


def test_batches_land_with_metadata_columns_and_state(tmp_path: Path) -> None:
    root = _project(tmp_path)
    _batches(
        root, {"rows": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]}, {"rows": [{"id": 3, "v": "c"}]}
    )
    with lakebed.open(root) as lh:
        summary = lh.ingest("events")
        assert (summary.rows, summary.batches, summary.quarantined) == (3, 2, 0)
        assert _rows(lh) == [(1, "a"), (2, "b"), (3, "c")]
        meta = lh.sql(
            "select distinct _source, _load_id is not null, _ingested_at is not null"
            " from bronze.events"
        ).rows()
        assert meta == [("events", True, True)]
        origins = _rows(lh, columns="_origin, _origin_row")
        assert origins == [("batch1", 0), ("batch1", 1), ("batch2", 0)]
        assert lh.table("bronze.events").transaction_version("lakebed-ingest:events") == 2
        assert lh.source_state("events") == {"done": 2, "seen": {"b1": 2, "b2": 1}}
        (run,) = lh.runs(kind="ingest")
        assert (run.status, run.rows, run.target) == ("success", 3, "events")


def test_a_rerun_with_nothing_new_writes_nothing(tmp_path: Path) -> None:
    root = _project(tmp_path)
    _batches(root, {"rows": [{"id": 1, "v": "a"}]})
    with lakebed.open(root) as lh:
        lh.ingest("events")
        version = lh.table("bronze.events").version()
        summary = lh.ingest("events")
        assert (summary.rows, summary.batches) == (0, 0)
        assert lh.table("bronze.events").version() == version


def test_state_is_recovered_from_the_delta_log_when_the_metastore_lost_it(tmp_path: Path) -> None:
    root = _project(tmp_path)
    _batches(root, {"rows": [{"id": 1, "v": "a"}]}, {"rows": [{"id": 2, "v": "b"}]})
    with lakebed.open(root) as lh:
        lh.ingest("events")
        lh.metastore.clear_source_state("events")
        _batches(root, {"rows": [{"id": 3, "v": "c"}]})
        summary = lh.ingest("events")
        assert summary.rows == 1  # batches 1 and 2 were not read again
        assert _rows(lh) == [(1, "a"), (2, "b"), (3, "c")]
        assert lh.source_state("events")["seen"] == {"b1": 1, "b2": 1, "b3": 1}


def test_a_crash_between_commit_and_state_update_loses_and_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path)
    _batches(root, {"rows": [{"id": 1, "v": "a"}]}, {"rows": [{"id": 2, "v": "b"}]})
    with lakebed.open(root) as lh:
        calls = []

        def crash(*args: Any, **kwargs: Any) -> None:
            calls.append(kwargs["txn_version"])
            raise KeyboardInterrupt("killed after the commit")

        monkeypatch.setattr(lh.metastore, "set_source_state", crash)
        with pytest.raises(KeyboardInterrupt):
            lh.ingest("events")
        monkeypatch.undo()
        assert calls == [1]
        summary = lh.ingest("events")
        assert summary.rows == 1
        assert _rows(lh) == [(1, "a"), (2, "b")]


def test_a_crash_between_quarantine_and_bronze_does_not_repeat_quarantine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path)
    _batches(root, {"rows": [{"id": 1, "v": "a"}], "bad": ["#garbage"]})
    with lakebed.open(root) as lh:
        original = runner_module.IngestRun._commit

        def crash(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt("killed before the bronze commit")

        monkeypatch.setattr(runner_module.IngestRun, "_commit", crash)
        with pytest.raises(KeyboardInterrupt):
            lh.ingest("events")
        monkeypatch.setattr(runner_module.IngestRun, "_commit", original)
        lh.ingest("events")
        assert _rows(lh) == [(1, "a")]
        quarantined = lh.sql("select raw, error, _origin from quarantine.events").rows()
        assert quarantined == [("#garbage", "unparseable", "batch1:bad")]


def test_unparseable_and_untypeable_records_go_to_quarantine(tmp_path: Path) -> None:
    root = _project(tmp_path)
    _batches(
        root,
        {"rows": [{"id": 1, "v": "a"}]},
        {"rows": [{"id": "2", "v": "b"}, {"id": "x3", "v": "c"}], "bad": ["hex:fffe"]},
    )
    with lakebed.open(root) as lh:
        summary = lh.ingest("events")
        assert (summary.rows, summary.quarantined) == (2, 2)
        assert _rows(lh) == [(1, "a"), (2, "b")]
        bad = lh.sql("select _origin, error, raw from quarantine.events order by _origin").rows()
        assert bad[0][0] == "batch2:1"
        assert "x3" in bad[0][1]
        assert '"x3"' in bad[0][2]
        assert bad[1] == ("batch2:bad", "unparseable", "\\xff\\xfe")


def test_new_columns_evolve_the_table_by_default(tmp_path: Path) -> None:
    root = _project(tmp_path)
    _batches(root, {"rows": [{"id": 1, "v": "a"}]}, {"rows": [{"id": 2, "v": "b", "extra": 5}]})
    with lakebed.open(root) as lh:
        lh.ingest("events")
        assert _rows(lh, columns="id, extra") == [(1, None), (2, 5)]


def test_discard_row_quarantines_records_with_new_fields(tmp_path: Path) -> None:
    root = _project(tmp_path, schema="discard_row")
    _batches(
        root,
        {"rows": [{"id": 1, "v": "a"}]},
        {"rows": [{"id": 2, "v": "b", "extra": 5}, {"id": 3, "v": "c", "extra": None}]},
    )
    with lakebed.open(root) as lh:
        summary = lh.ingest("events")
        assert summary.quarantined == 1
        assert _rows(lh) == [(1, "a"), (3, "c")]
        assert "extra" not in lh.table("bronze.events").schema().names
        (error,) = lh.sql("select error from quarantine.events").rows()[0]
        assert "new field extra" in error


def test_freeze_fails_the_run_and_writes_nothing_of_the_bad_batch(tmp_path: Path) -> None:
    root = _project(tmp_path, schema="freeze")
    _batches(root, {"rows": [{"id": 1, "v": "a"}]}, {"rows": [{"id": 2, "v": "b", "extra": 5}]})
    with lakebed.open(root) as lh:
        with pytest.raises(SchemaContractError, match="extra"):
            lh.ingest("events")
        assert _rows(lh) == [(1, "a")]
        (run,) = lh.runs(kind="ingest")
        assert run.status == "failed"


def test_merge_disposition_upserts_by_key_and_the_last_duplicate_wins(tmp_path: Path) -> None:
    root = _project(tmp_path, write_disposition="merge", primary_key=["id"])
    _batches(
        root,
        {"rows": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]},
        {"rows": [{"id": 2, "v": "B1"}, {"id": 2, "v": "B2"}, {"id": 3, "v": "c"}]},
    )
    with lakebed.open(root) as lh:
        lh.ingest("events")
        assert _rows(lh) == [(1, "a"), (2, "B2"), (3, "c")]


def test_replace_disposition_keeps_only_the_latest_run(tmp_path: Path) -> None:
    root = _project(tmp_path, write_disposition="replace")
    _batches(root, {"rows": [{"id": 1, "v": "a"}]})
    with lakebed.open(root) as lh:
        lh.ingest("events")
        _batches(root, {"rows": [{"id": 7, "v": "x"}]}, {"rows": [{"id": 8, "v": "y"}]})
        lh.ingest("events")
        assert _rows(lh) == [(7, "x"), (8, "y")]


def test_a_replace_predicate_swaps_the_rows_of_a_reloaded_file(tmp_path: Path) -> None:
    root = _project(tmp_path)
    _batches(root, {"rows": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]})
    with lakebed.open(root) as lh:
        lh.ingest("events")
        _batches(root, {"rows": [{"id": 1, "v": "A"}], "replace": "id = 1"})
        lh.ingest("events")
        assert _rows(lh) == [(1, "A"), (2, "b")]


def test_invalid_source_options_name_the_file_line_and_key(tmp_path: Path) -> None:
    root = _project(tmp_path, batch_file="typo.jsonl")
    with pytest.raises(ConfigError) as info:
        lakebed.open(root)
    message = str(info.value)
    assert "lakebed.yml" in message
    assert "sources.events.batch_file" in message
    assert "batches_file" in message  # the valid keys are listed


def test_merge_without_a_primary_key_is_a_config_error(tmp_path: Path) -> None:
    root = _project(tmp_path, write_disposition="merge")
    with pytest.raises(ConfigError, match="primary_key"):
        lakebed.open(root)


def test_an_unknown_source_names_the_declared_ones(tmp_path: Path) -> None:
    root = _project(tmp_path)
    with lakebed.open(root) as lh, pytest.raises(ConfigError, match="did you mean events"):
        lh.ingest("event")


def test_row_origins_give_location_and_position_columns(tmp_path: Path) -> None:
    root = _project(tmp_path)
    with lakebed.open(root) as lh:
        spec = lh.sources()["events"]
        batch = Batch(
            data=pa.table({"id": [1, 2]}),
            origins=RowOrigins("data/a.csv", pa.array([2, 3])),
            state_delta={},
        )
        location, position = batch.origin_columns()
        assert location.to_pylist() == ["data/a.csv", "data/a.csv"]
        assert position.to_pylist() == [2, 3]
        legacy = Batch(pa.table({"id": [1]}), ["https://api/x?page=2:7"], {})
        assert [c.to_pylist() for c in legacy.origin_columns()] == [["https://api/x?page=2"], [7]]
        assert spec.app_id == "lakebed-ingest:events"


def test_restoring_bronze_rewinds_the_source_so_the_lost_rows_load_again(tmp_path: Path) -> None:
    root = _project(tmp_path)
    _batches(root, {"rows": [{"id": 1, "v": "a"}]}, {"rows": [{"id": 2, "v": "b"}]})
    with lakebed.open(root) as lh:
        lh.ingest("events")
        table = lh.table("bronze.events")
        first_batch_version = next(
            h["version"]
            for h in table.history()
            if h["operation"] == "WRITE" and '"txn": 1' in str(h.get("lakebed.ingest"))
        )
        table.restore(first_batch_version)
        assert _rows(lh) == [(1, "a")]
        assert lh.source_state("events")["done"] == 1
        summary = lh.ingest("events")
        assert summary.rows == 1
        assert _rows(lh) == [(1, "a"), (2, "b")]


def test_an_empty_first_batch_does_not_define_the_table(tmp_path: Path) -> None:
    root = _project(tmp_path)
    _batches(root, {"rows": []}, {"rows": [{"id": 1, "v": "a"}]})
    with lakebed.open(root) as lh:
        lh.ingest("events")
        names = lh.table("bronze.events").schema().names
        assert names[:2] == ["id", "v"]  # the data's columns come first, then lakebed's
        assert lh.source_state("events")["done"] == 2
