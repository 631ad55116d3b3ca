"""How models ended: in the last model run, for the `result:` selectors (`lakebed run
--select result:failed+`: build again what failed and what it feeds, as dbt's `result:error+`
and `dbt retry` do), and each model's latest build, for `lakebed models` (as `dbt ls`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lakebed.metastore import Metastore, RunRecord
from lakebed.storage import TableName
from lakebed.transform import Model

# Model records read back to find the last run's: a run records one per model and attempt.
_RECORDS_PER_MODEL = 4


def last_results(metastore: Metastore) -> dict[str, str]:
    """Each model the last finished `lakebed run` selected, and how it ended: `success`,
    `failed`, or `skipped` (not built: an input failed, or the run stopped first)."""
    finished = next(
        (r for r in metastore.runs(kind="run", limit=20) if r.status != "running"), None
    )
    if finished is None:
        return {}
    chosen = [str(m) for m in finished.params.get("models", [])]
    records = metastore.runs(kind="model", limit=max(50, _RECORDS_PER_MODEL * len(chosen)))
    ended: dict[str, str] = {}
    for record in reversed(records):  # oldest first: a later attempt's status wins
        if record.params.get("run") == finished.run_id and record.target is not None:
            ended[record.target] = "failed" if record.status == "failed" else "success"
    return {model: ended.get(model, "skipped") for model in chosen}


@dataclass(frozen=True)
class ModelStatus:
    """One model as `lakebed models` lists it: its settings, and how its latest build
    attempt ended (`last`: None when it never ran)."""

    model: str
    kind: str  # sql | python
    materialized: str
    unique_key: tuple[str, ...]
    inputs: tuple[str, ...]
    tags: tuple[str, ...]
    schedule: str | None
    owner: str | None
    path: str
    last: RunRecord | None

    @property
    def last_status(self) -> str | None:
        """How the latest run ended for it: success, failed, running, or up_to_date (found
        so, nothing built)."""
        if self.last is None:
            return None
        return "up_to_date" if self.last.params.get("up_to_date") else self.last.status

    def to_dict(self) -> dict[str, Any]:
        found = dataclasses.asdict(self)
        last = self.last
        found["last"] = None
        if last is not None:
            found["last"] = {
                "run": last.params.get("run"),
                "status": self.last_status,
                "started_at": last.started_at,
                "rows": last.rows,
                "error": last.error,
            }
        return found


def model_statuses(
    metastore: Metastore, models: Mapping[TableName, Model], names: Iterable[TableName]
) -> list[ModelStatus]:
    """The models `names` (in that order) with the latest build record of each."""
    listed = []
    for name in names:
        model, config = models[name], models[name].config
        latest = metastore.runs(kind="model", target=str(name), limit=1)
        listed.append(
            ModelStatus(
                model=str(name),
                kind=model.kind,
                materialized=config.materialized,
                unique_key=tuple(config.unique_key),
                inputs=tuple(str(i) for i in model.inputs),
                tags=tuple(config.tags),
                schedule=config.schedule,
                owner=config.owner,
                path=str(model.path),
                last=latest[0] if latest else None,
            )
        )
    return listed
