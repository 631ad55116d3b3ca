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

# (SQL, unique key): rows from one source row each; then rows that aggregate, or pick one
# of, the source rows of their key (each key recomputed from all its rows).
MODELS = {
    "row by row": (
        "select s.id, s.grp, s.v * 2 as doubled, d.label\n"
        "from silver.src s join silver.dim d on s.grp = d.grp\n"
        "where s.v > 3",
        "id",
    ),
    "aggregate per key": (
        "select grp, count(*) as n, sum(v) as total, max(id) as last_id\n"
        "from silver.src where v > 2 group by grp",
        "grp",
    ),
    # Rows of the dimension that some source row passes the filter for: a source row
    # removed takes the group out only if no other row of it passes.
    "filtered by another input": (
        "select d.grp, d.label from silver.dim d\n"
        "where d.grp in (select grp from silver.src where v > 3)",
        "grp",
    ),
    # Keyed by a value computed from each row (a day of a timestamp, in real life): an
    # update moves its row from one key to another.
    "aggregate per computed key": (
        "select v > 4 as high, count(*) as n, sum(v) as total\nfrom silver.src group by 1",
        "high",
    ),
    "latest per key": (
        "select grp, id, v from silver.src\n"
        "qualify row_number() over (partition by grp order by v desc, id desc) = 1",
        "grp",
    ),
    # Keyed by (grp, rank), recomputed by grp: a deleted row shifts its group's ranks and
    # the group's last rank goes.
    "rank within a key": (
        "select grp, row_number() over (partition by grp order by v, id) as rank, id, v\n"
        "from silver.src",
        "grp, rank",
    ),
}

operation = st.one_of(
    st.tuples(st.just("append"), st.lists(st.integers(0, 9), min_size=1, max_size=5)),
    st.tuples(st.just("update"), st.integers(0, 15), st.integers(0, 9)),
    st.tuples(st.just("delete"), st.integers(0, 15)),
    # The dimension the row-by-row model joins: relabel, drop or (re)add a group.
    st.tuples(st.just("relabel"), st.integers(0, 2), st.sampled_from("xyz")),
    st.tuples(st.just("drop_group"), st.integers(0, 2)),
    st.tuples(st.just("add_group"), st.integers(0, 3)),
    st.tuples(st.just("run"), st.just(0)),
)


@pytest.mark.parametrize("kind", sorted(MODELS))
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(operation, min_size=1, max_size=8))
def test_incremental_merge_model_equals_full_rebuild(kind: str, steps: list[tuple]) -> None:
    model_sql, key = MODELS[kind]
    with tempfile.TemporaryDirectory() as tmp:
        root = lakebed.init_project(Path(tmp) / "p")
        folder = root / "models" / "gold"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "big.sql").write_text(model_sql)
        (folder / "big.yml").write_text(
            f"materialized: incremental\nincremental_strategy: merge\nunique_key: [{key}]\n"
        )
        with lakebed.open(root) as lh:
            lh.write("silver.dim", {"grp": [0, 1, 2], "label": ["a", "b", "c"]})
            lh.write("silver.src", {"id": [0, 1, 2], "grp": [0, 1, 2], "v": [5, 1, 9]})
            source = lh.table("silver.src")
            dim = lh.table("silver.dim")
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
                elif step[0] == "relabel":
                    dim.update({"label": f"'{step[2]}'"}, predicate=f"grp = {step[1]}")
                elif step[0] == "drop_group":
                    dim.delete(f"grp = {step[1]}")
                elif step[0] == "add_group":  # a dimension holds each group once
                    held = lh.sql(f"select count(*) from silver.dim where grp = {step[1]}")
                    if not held.scalar():
                        dim.append({"grp": [step[1]], "label": ["n"]})
                summary = lh.run()
                assert summary.ok, summary.nodes
                if step[0] != "run":
                    # Only what changed was read (or nothing changed at all).
                    assert summary.nodes[0].mode in ("incremental", "up_to_date")
                built = lh.sql("select * from gold.big order by all").rows()
                full = lh.sql(f"select * from ({model_sql}) order by all").rows()
                assert built == full, (kind, step, summary.nodes[0].mode)
