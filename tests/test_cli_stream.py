"""`lakebed produce`, `lakebed stream` and `lakebed topics` from the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import lakebed
from lakebed.cli import app
from process.streams import event, stream_project

ENV = {"COLUMNS": "200", "LAKEBED_PROJECT": None, "NO_COLOR": "1"}
LAKEBED = [sys.executable, "-m", "lakebed.cli"]


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV, input=stdin)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    stream_project(root, {"orders": {"topic": "orders", "event_time": "ts"}}).close()
    return root


def test_produce_sends_ndjson_lines_keyed_by_a_field(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(event(i, i)) + "\n" for i in range(50)) + "\n")
    result = run("-p", str(root), "produce", "orders", str(path), "--key", "customer")
    assert result.exit_code == 0, result.output
    assert "produced 50 events to orders" in result.output
    with lakebed.open(root) as lh:
        assert sum(lh.bus.end_offsets("orders").values()) == 50


def test_produce_rejects_malformed_lines_by_number_and_exits_1(root: Path) -> None:
    lines = [
        json.dumps(event(1, 1)),
        "{broken",
        "[1, 2]",
        json.dumps({"id": 2}),  # no key field
        json.dumps(event(3, 3)),
    ]
    result = run(
        "-p",
        str(root),
        "produce",
        "orders",
        "-",
        "--key",
        "customer",
        stdin="\n".join(lines) + "\n",
    )
    assert result.exit_code == 1
    assert "3 line(s) rejected, 2 produced" in result.output
    assert "<stdin>:2: not JSON" in result.output
    assert "<stdin>:3: expected a JSON object, got list" in result.output
    assert "<stdin>:4: no value for the key field 'customer'" in result.output
    with lakebed.open(root) as lh:
        assert sum(lh.bus.end_offsets("orders").values()) == 2


def test_produce_of_a_missing_file_fails_clearly(root: Path) -> None:
    result = run("-p", str(root), "produce", "orders", "nope.ndjson")
    assert result.exit_code == 1
    assert "nope.ndjson: no such file" in result.output


def test_stream_until_caught_up_then_status_and_topics(root: Path) -> None:
    with lakebed.open(root) as lh:
        lh.bus.create_topic("orders", 2)
        lh.produce("orders", [event(i, i) for i in range(40)], key="customer")
    result = run("-p", str(root), "stream", "--until-caught-up")
    assert result.exit_code == 0, result.output
    status = run("-p", str(root), "stream", "--status")
    assert status.exit_code == 0, status.output
    assert "orders" in status.output
    assert "stopped" in status.output
    assert "bronze.orders" in status.output
    topics = run("-p", str(root), "topics")
    assert topics.exit_code == 0, topics.output
    assert "orders" in topics.output
    assert "40" in topics.output


def test_stream_of_an_unknown_pipeline_names_the_known_ones(root: Path) -> None:
    result = run("-p", str(root), "stream", "ordres")
    assert result.exit_code == 1
    assert "no pipeline named 'ordres'" in result.output
    assert "did you mean orders" in result.output


@pytest.mark.slow
def test_sigterm_finishes_the_batch_commits_and_exits_0(root: Path) -> None:
    with lakebed.open(root) as lh:
        lh.produce("orders", [event(i, i) for i in range(500)])
    env = {**os.environ, "LAKEBED_PROJECT": str(root)}
    process = subprocess.Popen([*LAKEBED, "stream"], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lakebed.open(root) as lh:
            if "bronze.orders" in [t.name for t in lh.tables()]:
                break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    with lakebed.open(root) as lh:
        assert lh.sql("SELECT count(*) FROM bronze.orders").scalar() == 500
        [status] = lh.stream_status()
        assert status.state == "stopped"
