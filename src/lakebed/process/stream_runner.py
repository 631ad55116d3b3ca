"""Several pipelines in one process: a thread each, one stop signal for all."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from lakebed.bus import Bus
from lakebed.process.stream import StreamCatalog, StreamProcessor
from lakebed.process.stream_metrics import PipelineMetrics
from lakebed.process.stream_spec import PipelineSpec


def run_pipelines(
    catalog: StreamCatalog,
    specs: Sequence[PipelineSpec],
    bus: Bus,
    stop: threading.Event,
    *,
    until_caught_up: bool = False,
) -> list[PipelineMetrics]:
    """Run `specs` until `stop` is set (or, with `until_caught_up`, until each has read
    everything on its topic). A failing pipeline stops the others, then its error is raised."""
    if len(specs) == 1:
        return [StreamProcessor(catalog, specs[0], bus).run(stop, until_caught_up=until_caught_up)]
    results: dict[str, PipelineMetrics] = {}
    errors: dict[str, BaseException] = {}

    def work(spec: PipelineSpec) -> None:
        try:
            processor = StreamProcessor(catalog, spec, bus)
            results[spec.name] = processor.run(stop, until_caught_up=until_caught_up)
        except BaseException as exc:  # reported below, after the others stopped
            errors[spec.name] = exc
            stop.set()

    threads = [threading.Thread(target=work, args=(s,), name=f"stream-{s.name}") for s in specs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise next(iter(errors.values()))
    return [results[s.name] for s in specs]
