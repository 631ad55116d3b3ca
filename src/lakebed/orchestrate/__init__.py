"""Runs of the model graph: dependency order, parallel builds, retries, run history."""

from lakebed.orchestrate.run import NodeResult, RunSummary, build_model, run, run_models
from lakebed.orchestrate.table_checks import blocking

__all__ = ["NodeResult", "RunSummary", "blocking", "build_model", "run", "run_models"]
