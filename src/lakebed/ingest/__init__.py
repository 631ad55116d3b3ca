"""Batch ingestion into bronze: files, HTTP APIs and SQL databases, exactly once."""

from lakebed.ingest.base import (
    Batch,
    Connector,
    ConnectorOptions,
    IngestProgress,
    Piece,
    Reject,
    RowOrigins,
    SourceConfig,
    SourceContext,
    StreamAbandonedError,
    StreamedBatch,
    connector_kinds,
    deep_merge,
    register_connector,
)
from lakebed.ingest.runner import (
    IngestRun,
    IngestSummary,
    recover_state,
    rewind_state,
    source_state,
)
from lakebed.ingest.sources import SourceSpec, load_sources, source_named

__all__ = [
    "Batch",
    "Connector",
    "ConnectorOptions",
    "IngestProgress",
    "IngestRun",
    "IngestSummary",
    "Piece",
    "Reject",
    "RowOrigins",
    "SourceConfig",
    "SourceContext",
    "SourceSpec",
    "StreamAbandonedError",
    "StreamedBatch",
    "connector_kinds",
    "deep_merge",
    "load_sources",
    "recover_state",
    "register_connector",
    "rewind_state",
    "source_named",
    "source_state",
]
