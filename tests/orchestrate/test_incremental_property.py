"""Property: for random sequences of upstream appends, updates and deletes, an incremental
model's table equals the same model rebuilt in full."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lakebed

pytestmark = pytest.mark.slow

MODEL_SQL = (
    "select s.id, s.grp, s.v * 2 as doubled, d.label\n"
    "from silver.src s join silver.dim d on s.grp = d.grp\n"
    "where s.v > 3"
)

operation = st.one_of(
    st.tuples(st.just("append"), st.lists(st.integers(0, 9), min_size=1, max_size=5)),
    st.tuples(st.just("update"), st.integers(0, 60), st.integers(0, 9)),
    st.tuples(st.just("delete"), st.integers(0, 60)),
    st.tuples(st.just("run"), st.just(0)),
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(operation, min_size=1, max_size=8))
def test_incremental_merge_model_equals_full_rebuild(steps: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = lakebed.init_project(Path(tmp) / "p")
        folder = root / "models" / "gold"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "big.sql").write_text(MODEL_SQL)
        (folder / "big.yml").write_text(
            "materialized: incremental\nincremental_strategy: merge\nunique_key: [id]\n"
        )
        with lakebed.open(root) as lh:
            lh.write("silver.dim", {"grp": [0, 1, 2], "label": ["a", "b", "c"]})
            lh.write("silver.src", {"id": [0, 1, 2], "grp": [0, 1, 2], "v": [5, 1, 9]})
            source = lh.table("silver.src")
            next_id = 3
            assert lh.run().ok
            for step in steps:
                if step[0] == "append":
                    values = step[1]
                    ids = list(range(next_id, next_id + len(values)))
                    next_id += len(values)
                    source.append({"id": ids, "grp": [v % 3 for v in values], "v": values})
                elif step[0] == "update":
                    source.update({"v": str(step[2])}, predicate=f"id = {step[1]}")
                elif step[0] == "delete":
                    source.delete(f"id = {step[1]}")
                summary = lh.run()
                assert summary.ok, summary.nodes
                if step[0] in ("append", "update", "delete"):
                    # Only the changed rows were read (or nothing changed at all).
                    assert summary.nodes[0].mode in ("incremental", "up_to_date")
                built = lh.sql("select * from gold.big order by id").rows()
                full = lh.sql(MODEL_SQL + " order by id").rows()
                assert built == full, (step, summary.nodes[0].mode)
