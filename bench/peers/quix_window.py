"""1-minute tumbling count/sum per key with Quix Streams, for bench/stream.py: run in the
peers' environment (.venv-peers) as

    quix_window.py BOOTSTRAP TOPIC MESSAGES FOLDER

It reads TOPIC from the beginning in a new consumer group (event time: the record
timestamps, which the bench sets to each event's `ts`), keeps windows per record key with
`tumbling_window(60_000).agg(count=Count(), total=Sum("amount")).final()` closing them on the
partition's event time, stops once it has processed MESSAGES messages, writes the windows
it emitted to FOLDER/windows.jsonl and prints {"seconds", "messages", "windows"}: seconds
from its first message to the end of `app.run()` (its last checkpoint committed). Like every
contender timed by the bench, it runs with the garbage collector off.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any


def main(bootstrap: str, topic_name: str, messages: int, folder: Path) -> None:
    from quixstreams import Application
    from quixstreams.dataframe.windows import Count, Sum

    gc.collect()
    gc.freeze()
    gc.disable()  # as bench/common.py does around every timed run
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"bench-quix-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        state_dir=str(folder / "state"),
        loglevel="WARNING",
    )
    topic = app.topic(topic_name, value_deserializer="json", key_deserializer="str")
    seen = {"messages": 0, "first": 0.0}
    windows: list[tuple[str, int, int, float]] = []

    def count(value: Any) -> None:
        if not seen["messages"]:
            seen["first"] = time.perf_counter()
        seen["messages"] += 1
        if seen["messages"] >= messages:
            app.stop()  # this message is still processed to the end; none after it

    def emit(value: dict[str, Any], key: str, timestamp: int, headers: Any) -> None:
        windows.append((key, value["start"], value["count"], value["total"]))

    sdf = app.dataframe(topic)
    sdf = sdf.update(count)
    sdf = (
        sdf.tumbling_window(60_000)
        .agg(count=Count(), total=Sum("amount"))
        .final(closing_strategy="partition")
    )
    sdf = sdf.update(emit, metadata=True)
    app.run()
    seconds = time.perf_counter() - seen["first"]
    with (folder / "windows.jsonl").open("w") as out:
        for window in windows:
            out.write(json.dumps(window) + "\n")
    print(json.dumps({"seconds": seconds, "messages": seen["messages"], "windows": len(windows)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
