"""Load with dlt into a Delta table and print {"seconds": ...}: run by bench/ingest.py in
the peers' environment (.venv-peers), timing only the pipeline run, not start-up."""

from __future__ import annotations

import json
import sys
import time


def main(mode: str, source: str, out_dir: str) -> None:
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{mode}",
        destination=dlt.destinations.filesystem(bucket_url=f"file://{out_dir}/lake"),
        dataset_name="bronze",
        pipelines_dir=f"{out_dir}/pipelines",
    )
    if mode == "csv":
        from dlt.sources.filesystem import filesystem, read_csv

        folder, _, pattern = source.rpartition("/")
        resource = filesystem(bucket_url=f"file://{folder}", file_glob=pattern) | read_csv()
        resource = resource.with_name("orders")
    else:
        from dlt.sources.sql_database import sql_table

        resource = sql_table(
            credentials=source, table="orders", backend="pyarrow", chunk_size=100_000
        )
    start = time.perf_counter()
    pipeline.run(resource, table_format="delta")
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
