"""Run the benchmarks: one JSON line per figure on stdout, progress on stderr.

    .venv/bin/python bench/run.py                      # every figure, full size (make bench)
    .venv/bin/python bench/run.py --only scan_groupby_10m --rows 200000 --repeat 3

A figure is a function `(Settings) -> Contest` listed in its module's FIGURES dict; add a
module's dict to FIGURES below and its figures run here.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import ingest
import merge
import scan
import stream
import stream_latency
import transform
import transform_cli
from common import DEFAULT_ROWS, Figure, Settings, emit, log, measure

FIGURES: dict[str, Figure] = {
    **scan.FIGURES,
    **merge.FIGURES,
    **ingest.FIGURES,
    **transform.FIGURES,
    **transform_cli.FIGURES,
    **stream.FIGURES,
}
# Figures that time no contenders but measure a distribution themselves (the stream
# latency): each returns its JSON record.
RECORDS: dict[str, Callable[[Settings], dict[str, Any]]] = {**stream_latency.FIGURES}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this figure (repeatable, or comma-separated): "
        + ", ".join([*FIGURES, *RECORDS]),
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=DEFAULT_ROWS,
        help=f"rows of the scanned table (default {DEFAULT_ROWS:,}); the merge target is "
        "half of it and the merge source a tenth",
    )
    parser.add_argument(
        "--repeat", type=int, help="timed rounds per figure (default: 15 for scans, 5 for merge)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    names = [*FIGURES, *RECORDS]
    if args.only:
        names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in names if n not in FIGURES and n not in RECORDS]
        if unknown:
            known = ", ".join([*FIGURES, *RECORDS])
            log(f"unknown figure(s) {', '.join(unknown)}; figures are {known}")
            return 2
    if args.rows < 1000 or (args.repeat is not None and args.repeat < 1):
        log("--rows must be at least 1000 and --repeat at least 1")
        return 2
    settings = Settings(rows=args.rows, repeat=args.repeat)
    started = time.perf_counter()
    for name in names:
        log(f"{name}:")
        figure_started = time.perf_counter()
        if name in RECORDS:
            record = RECORDS[name](settings)
        else:
            contest = FIGURES[name](settings)
            try:
                record = measure(name, contest, settings.repeat or contest.repeat)
            finally:
                if contest.cleanup is not None:
                    contest.cleanup()
        emit(record)
        log(f"  done in {time.perf_counter() - figure_started:.1f}s")
    log(f"all figures in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
