"""Run `dbt run` on a project in-process and print {"seconds": ...}: run by
bench/transform.py in the peers' environment (.venv-peers).

Interpreter start-up and the imports of dbt and its DuckDB adapter are not timed; the
invocation is, parsing the project included (the cost a user pays on every `dbt run`).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(project: str, *extra: str) -> int:
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    import dbt.adapters.duckdb  # noqa: F401  (imported before the clock starts)
    from dbt.cli.main import dbtRunner

    args = [
        "run",
        "--project-dir",
        project,
        "--profiles-dir",
        project,
        "--no-send-anonymous-usage-stats",
        "--no-version-check",
        *extra,
    ]
    start = time.perf_counter()
    result = dbtRunner().invoke(args)
    seconds = time.perf_counter() - start
    if not result.success:
        print(f"dbt run failed: {result.exception or result.result}", file=sys.stderr)
        return 1
    print(json.dumps({"seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
