"""Runs of the model graph: dependency order, parallel builds, retries, run history."""

from lakebed.orchestrate.build import NodeResult, build_model
from lakebed.orchestrate.run import RunSummary, run, run_models

__all__ = ["NodeResult", "RunSummary", "build_model", "run", "run_models"]
