"""Whether a model must be built again: a table whose SQL reads the clock is never up to
date, since its rows change with no new input rows."""

from __future__ import annotations

from pathlib import Path

import lakebed
from helpers import write_model


def test_a_table_reading_the_clock_is_rebuilt_at_every_run(tmp_path: Path) -> None:
    lh = lakebed.open(lakebed.init_project(tmp_path / "p"))
    lh.write("silver.events", {"id": [1, 2], "hours_ago": [1, 30]})
    window = (
        "select id from silver.events where now() - to_hours(hours_ago) > now() - interval 1 day"
    )
    write_model(lh.root, "gold.recent", window)
    write_model(lh.root, "gold.ids", "select id from silver.events")
    lh.run()
    second = {n.model: n.status for n in lh.run().nodes}
    assert second == {"gold.recent": "success", "gold.ids": "up_to_date"}
    assert lh.sql("select id from gold.recent").rows() == [(1,)]
