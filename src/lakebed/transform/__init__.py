"""Transformations: SQL and Python models and the dependency graph between them.

Usage::

    from lakebed.transform import ModelGraph, load_models

    models = load_models(project_dir)           # models/<layer>/<name>.sql | .py (+ .yml)
    graph = ModelGraph(models, sources={...})   # raises on unknown inputs and cycles
    graph.select("+gold.revenue tag:nightly")   # selectors, in build order
"""

from lakebed.transform.decorator import model
from lakebed.transform.definition import Model, ModelConfig
from lakebed.transform.discover import load_models, model_tables
from lakebed.transform.graph import ModelGraph

__all__ = ["Model", "ModelConfig", "ModelGraph", "load_models", "model", "model_tables"]
