"""A model's settings around its build, including when it is found up to date: inputs
that must be built, checks and column descriptions that must fit its columns, freshness
judged on its table (its rows do not change, the time does), the catalog entry its settings
describe."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lakebed.errors import LakebedError, ModelError, TransformError
from lakebed.govern import Check, CheckResult, raise_if_blocking
from lakebed.orchestrate.table_checks import judge, model_checks, unjudgeable
from lakebed.storage import TableName
from lakebed.transform import Model, ModelGraph
from lakebed.transform.graph import close_matches

if TYPE_CHECKING:
    from lakebed.orchestrate.build import RunContext


def require_built_inputs(ctx: RunContext, graph: ModelGraph, name: TableName) -> None:
    """A TransformError naming what the model reads that was never written: models never
    built (and not selected with it), with the selector that builds them first, or the
    tables of sources and pipelines that have loaded nothing yet, with the command that
    loads them."""
    missing = [
        i
        for i in graph.models[name].inputs
        if not ctx.storage.exists(i) and (i not in graph.models or ctx.view_sql(i) is None)
    ]
    unbuilt = [str(i) for i in missing if i in graph.models]
    if unbuilt:
        what = "a model" if len(unbuilt) == 1 else "models"
        raise TransformError(
            f"{name} reads {', '.join(unbuilt)}: {what} not built yet",
            hint=f"build them with it: lakebed run --select +{name}",
        )
    writers = {t: f"lakebed ingest {s}" for s, t in graph.source_targets.items()}
    writers |= {
        t: f"lakebed stream {p} --until-caught-up" for p, t in graph.pipeline_targets.items()
    }
    unloaded = [i for i in missing if i in writers]
    if unloaded:
        raise TransformError(
            f"{name} reads {', '.join(map(str, unloaded))}, which nothing has loaded yet",
            hint="load it first: " + "; ".join(writers[i] for i in unloaded),
        )


def freshness_checks(model: Model) -> list[Check]:
    if not any("freshness" in spec for spec in model.config.checks):
        return []  # read before parsing: most models have none
    return [c for c in model_checks(model) if c.kind == "freshness"]


def judge_freshness(ctx: RunContext, model: Model, run_id: str) -> list[CheckResult]:
    """A model found up to date still ages: its freshness checks judge its table as it is
    now (from the Delta log), recorded; one of severity fail that fails fails the model."""
    checks = freshness_checks(model)
    if not checks:
        return []
    results = judge(ctx, model.name, checks, run_id=run_id, again=True)
    raise_if_blocking(results)
    return results


def settings_problem(ctx: RunContext, model: Model) -> LakebedError | None:
    """Why the settings of a model found up to date do not fit it (checks that do not parse
    or name a column it lacks, a description of a column it lacks): its build fails with
    it, as a built model's would."""
    config = model.config
    if not (config.checks or config.columns) or not ctx.storage.exists(model.name):
        return None
    columns = ctx.table(model.name).schema().names
    try:
        problem = unjudgeable(model, columns) if config.checks else None
    except LakebedError as exc:
        return exc
    return problem or undescribed(model, columns)


def undescribed(model: Model, columns: list[str]) -> ModelError | None:
    """The error for column descriptions of columns the model does not return."""
    have = {c.lower() for c in columns}
    unknown = [c for c in model.config.columns if c.lower() not in have]
    if not unknown:
        return None
    close = [found[0] for c in unknown if (found := close_matches(c, columns))]
    return ModelError(
        f"`columns` describes {', '.join(unknown)}, which {model.name} does not return",
        file=str(model.path.with_suffix(".yml")),
        model=str(model.name),
        hint=f"did you mean {', '.join(close)}?" if close else f"its columns: {', '.join(columns)}",
    )


def describe(ctx: RunContext, model: Model) -> None:
    """The model's table in the catalog as its settings describe it."""
    c = model.config
    if c.description or c.owner or c.domain or c.tags or c.columns:
        ctx.describe_table(
            model.name,
            description=c.description,
            owner=c.owner,
            domain=c.domain,
            tags=c.tags or None,
            columns=c.columns or None,
        )
