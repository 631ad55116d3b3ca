"""Query engines over the lakehouse (DuckDB snapshot SQL) and the stream processor."""

from lakebed.process.engine import DuckDBEngine, SnapshotResolver
from lakebed.process.pruning import Predicate, prune, references
from lakebed.process.result import QueryResult, render_table
from lakebed.process.scan import scan_sql
from lakebed.process.stream import StreamProcessor
from lakebed.process.stream_metrics import PipelineMetrics
from lakebed.process.stream_runner import run_pipelines
from lakebed.process.stream_spec import PipelineSpec, load_pipelines

__all__ = [
    "DuckDBEngine",
    "PipelineMetrics",
    "PipelineSpec",
    "Predicate",
    "QueryResult",
    "SnapshotResolver",
    "StreamProcessor",
    "load_pipelines",
    "prune",
    "references",
    "render_table",
    "run_pipelines",
    "scan_sql",
]
