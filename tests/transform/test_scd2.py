"""scd2 models: a NULL key is a key, whose versions close like any other's."""

from __future__ import annotations

from pathlib import Path

import lakebed
from helpers import write_model


def test_a_null_keys_version_closes_when_it_changes(tmp_path: Path) -> None:
    lh = lakebed.open(lakebed.init_project(tmp_path / "p"))
    lh.write("silver.plans", {"id": [1, None], "seats": [1, 2]})
    write_model(
        lh.root,
        "gold.plan_history",
        "select id, seats from silver.plans",
        "materialized: scd2\nunique_key: [id]\n",
    )
    lh.run()
    lh.table("silver.plans").update({"seats": "5"}, predicate="id is null")
    assert lh.run().nodes[0].mode == "incremental"
    versions = lh.sql(
        "select seats, is_current, valid_to is not null as closed from gold.plan_history "
        "where id is null order by seats"
    ).rows()
    assert versions == [(2, False, True), (5, True, False)]
