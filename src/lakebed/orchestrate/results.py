"""How each model ended in the last model run, for the `result:` selectors
(`lakebed run --select result:failed+`: build again what failed and what it feeds, as
dbt's `result:error+` and `dbt retry` do)."""

from __future__ import annotations

from lakebed.metastore import Metastore

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
