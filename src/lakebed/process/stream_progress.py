"""What a committed micro-batch reached, kept in its Delta commit's metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lakebed.storage import Table

STREAM_KEY = "lakebed.stream"


@dataclass
class Progress:
    """What a committed batch reached; stored as JSON in its commit metadata."""

    batch: int
    offsets: dict[int, int]
    replay: dict[int, int]
    watermark_us: int | None
    # In the quarantine's log: True when the batch wrote nothing to the target (so this
    # commit is the batch's whole record), False when the target commit follows.
    final: bool = False

    def to_json(self, pipeline: str) -> str:
        return json.dumps(
            {
                "pipeline": pipeline,
                "batch": self.batch,
                "offsets": self.offsets,
                "replay": self.replay,
                "watermark_us": self.watermark_us,
                "final": self.final,
            }
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(
            batch=int(data["batch"]),
            offsets={int(p): int(o) for p, o in data["offsets"].items()},
            replay={int(p): int(o) for p, o in data.get("replay", {}).items()},
            watermark_us=data.get("watermark_us"),
            final=bool(data.get("final", False)),
        )


def committed_progress(table: Table, pipeline: str, batch: int) -> Progress | None:
    """The progress committed with `batch` in `table`'s log (newest commits searched first)."""
    for limit in (64, None):
        for entry in table.history(limit):
            raw = entry.get(STREAM_KEY)
            if raw is None:
                continue
            data = json.loads(raw) if isinstance(raw, str) else raw
            if data.get("pipeline") == pipeline and int(data.get("batch", -1)) == batch:
                return Progress.from_json(data)
    return None


def per_partition_ends(records: pa.Table) -> dict[int, int]:
    """One past the highest offset read, per partition."""
    if not records.num_rows:
        return {}
    grouped = records.group_by("partition").aggregate([("offset", "max")])
    return {
        int(p): int(o) + 1
        for p, o in zip(
            grouped.column("partition").to_pylist(),
            grouped.column("offset_max").to_pylist(),
            strict=True,
        )
    }


def location_keys(partitions: pa.Array | pa.ChunkedArray, offsets: Any) -> np.ndarray:
    """(partition, offset) folded into one int64, to test membership with numpy."""
    parts = np.asarray(pa.chunked_array([partitions]).to_numpy(), dtype=np.int64)
    return (parts << 40) | np.asarray(pa.chunked_array([offsets]).to_numpy(), dtype=np.int64)
