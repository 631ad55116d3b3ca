"""What each running pipeline reports: throughput, lag, watermark, late and bad events.

Kept in a process-wide registry (the serving layer exposes it as Prometheus metrics) and
mirrored after every batch to `.lakebed/streams/<pipeline>.json`, so `lakebed stream
--status` in another process can show pipelines that are running elsewhere.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUS_DIR = "streams"


@dataclass
class PipelineMetrics:
    """Counters since the process started, and the latest gauges."""

    pipeline: str
    topic: str
    target: str
    state: str = "starting"  # starting, recovering, running, stopped, failed
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    batches: int = 0
    events_in: int = 0
    rows_out: int = 0
    quarantined: int = 0
    late: int = 0
    duplicates: int = 0
    events_per_second: float = 0.0
    lag: dict[str, int] = field(default_factory=dict)  # partition -> records behind
    positions: dict[str, int] = field(default_factory=dict)  # partition -> next offset
    watermark: float | None = None  # epoch seconds
    watermark_delay_seconds: float | None = None
    last_commit_at: float | None = None
    last_batch_seconds: float = 0.0
    state_rows: int = 0
    error: str | None = None

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


class MetricsRegistry:
    """Every pipeline's metrics in this process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pipelines: dict[str, PipelineMetrics] = {}

    def register(self, metrics: PipelineMetrics) -> PipelineMetrics:
        with self._lock:
            self._pipelines[metrics.pipeline] = metrics
        return metrics

    def snapshot(self) -> list[PipelineMetrics]:
        with self._lock:
            return list(self._pipelines.values())


REGISTRY = MetricsRegistry()


def write_status(state_dir: Path, metrics: PipelineMetrics) -> None:
    """Mirror one pipeline's metrics to its status file (atomically replaced)."""
    folder = state_dir / STATUS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    metrics.updated_at = time.time()
    target = folder / f"{metrics.pipeline}.json"
    temporary = target.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(asdict(metrics)), encoding="utf-8")
    os.replace(temporary, target)


def read_status(state_dir: Path) -> list[PipelineMetrics]:
    """The last status each pipeline wrote; a `running` one whose process died is `stopped`."""
    folder = state_dir / STATUS_DIR
    found = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            metrics = PipelineMetrics(**data)
        except (OSError, ValueError, TypeError):
            continue
        if metrics.state in ("starting", "recovering", "running") and not _alive(metrics.pid):
            metrics.state = "dead"
        found.append(metrics)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
