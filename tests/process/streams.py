"""Helpers for the stream pipeline tests: a project with pipelines, events, a batch reference."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

import lakebed
from lakebed import Lakehouse

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def stream_project(root: Path, pipelines: dict[str, Any], bus: str = "local") -> Lakehouse:
    """A project at `root` whose lakebed.yml declares `pipelines` on `bus`."""
    if not (root / "lakebed.yml").exists():
        lakebed.init_project(root)
    config = yaml.safe_load((root / "lakebed.yml").read_text())
    config["bus"] = bus
    config["pipelines"] = pipelines
    (root / "lakebed.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return lakebed.open(root)


def at(seconds: float) -> str:
    """An ISO timestamp `seconds` after T0."""
    return (T0 + timedelta(seconds=seconds)).isoformat()


def event(i: int, seconds: float, **fields: Any) -> dict[str, Any]:
    return {"id": i, "ts": at(seconds), "customer": f"c{i % 3}", "amount": float(i), **fields}


def run_until_caught_up(lh: Lakehouse, *names: str) -> None:
    lh.stream(list(names) or None, stop=threading.Event(), until_caught_up=True)


def rows(lh: Lakehouse, query: str) -> list[dict[str, Any]]:
    return lh.sql(query).dicts()


def as_json(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=str)
