"""Property: for random sequences of upstream appends, updates and deletes, an incremental
model's table equals the same model rebuilt in full; so does every model of a chain of
merged models, with batches of changes between runs."""

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


def _change_dimension(lh: lakebed.Lakehouse, step: tuple) -> None:
    """Relabel, drop or (re)add a group of `silver.dim` (a dimension holds each group
    once); any other step changes nothing."""
    dim = lh.table("silver.dim")
    if step[0] == "relabel":
        dim.update({"label": f"'{step[2]}'"}, predicate=f"grp = {step[1]}")
    elif step[0] == "drop_group":
        dim.delete(f"grp = {step[1]}")
    elif step[0] == "add_group":
        held = lh.sql(f"select count(*) from silver.dim where grp = {step[1]}")
        if not held.scalar():
            dim.append({"grp": [step[1]], "label": ["n"]})


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
                else:
                    _change_dimension(lh, step)
                summary = lh.run()
                assert summary.ok, summary.nodes
                if step[0] != "run":
                    # Only what changed was read (or nothing changed at all).
                    assert summary.nodes[0].mode in ("incremental", "up_to_date")
                built = lh.sql("select * from gold.big order by all").rows()
                full = lh.sql(f"select * from ({model_sql}) order by all").rows()
                assert built == full, (kind, step, summary.nodes[0].mode)


# A chain of merged models, as a medallion project has: the latest version of each id
# (QUALIFY), joined with a dimension, aggregated per group. Between runs come batches of
# changes to the source and the dimension; a run then merges what each model's inputs
# changed, a reader computing ahead of the merge it reads (`compute_ahead`).
LATEST = (
    "select id, grp, v, ts from bronze.src where v <> 7\n"
    "qualify row_number() over (partition by id order by ts desc) = 1"
)
FACT = (
    "select l.id, l.grp, l.v * 10 as v10, d.label, l.ts\n"
    "from silver.latest l join silver.dim d on l.grp = d.grp where l.v > 1"
)
AGG = "select grp, count(*) as n, sum(v10) as total from gold.fact group by grp"
CHAIN = {"silver.latest": (LATEST, "id"), "gold.fact": (FACT, "id"), "gold.agg": (AGG, "grp")}

change = st.one_of(
    st.tuples(
        st.just("append"),
        st.lists(st.tuples(st.integers(0, 12), st.integers(0, 9), st.integers(0, 50)), max_size=5),
    ),
    st.tuples(st.just("update_v"), st.integers(0, 12), st.integers(0, 9)),
    st.tuples(st.just("update_ts"), st.integers(0, 12)),
    st.tuples(st.just("update_grp"), st.integers(0, 12), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.integers(0, 12)),
    st.tuples(st.just("relabel"), st.integers(0, 2), st.sampled_from("xyz")),
    st.tuples(st.just("drop_group"), st.integers(0, 2)),
    st.tuples(st.just("add_group"), st.integers(0, 3)),
)


def _rebuilt(name: str) -> str:
    """The model's SELECT over the source tables alone (its model inputs inlined)."""
    sql = CHAIN[name][0]
    for inner in ("gold.fact", "silver.latest"):
        sql = sql.replace(inner, f"({CHAIN[inner][0]})")
    return sql


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.lists(change, max_size=4), min_size=1, max_size=6))
def test_a_chain_of_merged_models_equals_its_full_rebuild(batches: list[list[tuple]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = lakebed.init_project(Path(tmp) / "p")
        for name, (sql, key) in CHAIN.items():
            layer, table = name.split(".")
            folder = root / "models" / layer
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{table}.sql").write_text(sql)
            (folder / f"{table}.yml").write_text(
                f"materialized: incremental\nincremental_strategy: merge\nunique_key: [{key}]\n"
            )
        with lakebed.open(root) as lh:
            lh.write("silver.dim", {"grp": [0, 1, 2], "label": ["a", "b", "c"]})
            rows = {"id": [0, 1, 2, 1], "grp": [0, 1, 2, 1], "v": [5, 1, 9, 4], "ts": [1, 1, 1, 2]}
            lh.write("bronze.src", rows)
            source = lh.table("bronze.src")
            assert lh.run().ok
            stamps = iter(range(10, 10**6))

            def ts(base: int) -> int:
                # Even and never repeated; an update makes an id's stamps odd (2ts + 1, an
                # order-keeping map): no two versions of an id ever tie on ts.
                return base * 1000 + 2 * next(stamps)

            for batch in batches:
                for step in batch:
                    if step[0] == "append" and step[1]:
                        new = step[1]
                        source.append(
                            {
                                "id": [r[0] for r in new],
                                "grp": [r[0] % 3 for r in new],
                                "v": [r[1] for r in new],
                                "ts": [ts(r[2]) for r in new],
                            }
                        )
                    elif step[0] == "update_v":
                        source.update({"v": str(step[2])}, predicate=f"id = {step[1]}")
                    elif step[0] == "update_ts":
                        source.update({"ts": "ts * 2 + 1"}, predicate=f"id = {step[1]}")
                    elif step[0] == "update_grp":
                        source.update({"grp": str(step[2])}, predicate=f"id = {step[1]}")
                    elif step[0] == "delete":
                        source.delete(f"id = {step[1]}")
                    else:
                        _change_dimension(lh, step)
                summary = lh.run()
                assert summary.ok, summary.nodes
                for name in CHAIN:
                    built = lh.sql(f"select * from {name} order by all").rows()
                    full = lh.sql(f"select * from ({_rebuilt(name)}) order by all").rows()
                    assert built == full, (name, batch, [(n.model, n.mode) for n in summary.nodes])
