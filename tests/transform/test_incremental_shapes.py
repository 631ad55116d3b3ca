"""Every shape of SQL a merged model may have ends as a full rebuild would, after seeded
random appends, updates and deletes to the rows it reads and to the dimension it joins:
the shapes read row by row, by key, by a computed key, latest per key, and those that
must rebuild in full (outer joins, anti joins, scalar subqueries)."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pytest

import lakebed
from helpers import write_model
from lakebed import Lakehouse

pytestmark = pytest.mark.slow

# name: (SQL over silver.src(id, c, v) and silver.dim(c, label), unique key)
SHAPES = {
    "join a dimension": (
        "select o.id, d.label, o.v from silver.src o join silver.dim d on d.c = o.c where o.v > 2",
        "id",
    ),
    "join condition filters": (
        "select o.id, d.label from silver.src o join silver.dim d on d.c = o.c and d.label <> 'x'",
        "id",
    ),
    "left join, preserved side": (
        "select o.id, coalesce(d.label, 'none') as label from silver.src o "
        "left join silver.dim d on d.c = o.c",
        "id",
    ),
    "full outer join": (
        "select coalesce(o.id, -d.c) as k, d.label from silver.src o "
        "full join silver.dim d on d.c = o.c",
        "k",
    ),
    "ctes in a chain": (
        "with a as (select id, v from silver.src where v > 5), b as (select id, v from a "
        "where v < 9) select id, v from b",
        "id",
    ),
    "aggregate with having": (
        "select c, count(*) as n, sum(v) as s from silver.src group by c having count(*) > 1",
        "c",
    ),
    "count distinct": ("select c, count(distinct v) as nv from silver.src group by c", "c"),
    "ordered aggregates": (
        "select c, list(v order by id) as vs, max_by(id, v) as top from silver.src group by c",
        "c",
    ),
    "window over another column": (
        "select id, c, rank() over (partition by c order by v desc) as r from silver.src",
        "id",
    ),
    "window within the key": (
        "select c, id, v - lag(v) over (partition by c order by id) as dv from silver.src",
        "c, id",
    ),
    "latest per key, filtered": (
        "select c, id, v from silver.src where v % 2 = 0 "
        "qualify row_number() over (partition by c order by v desc, id desc) = 1",
        "c",
    ),
    "exists": (
        "select d.c, d.label from silver.dim d where exists "
        "(select 1 from silver.src s where s.c = d.c and s.v > 4)",
        "c",
    ),
    "in, or": (
        "select d.c, d.label from silver.dim d where d.label = 'x' "
        "or d.c in (select c from silver.src where v > 6)",
        "c",
    ),
    "semi join": ("select d.* from silver.dim d semi join silver.src s using (c)", "c"),
    "anti join": ("select d.* from silver.dim d anti join silver.src s using (c)", "c"),
    "scalar subquery": (
        "select id, v from silver.src where v > (select avg(v) from silver.src)",
        "id",
    ),
    "computed key": (
        "select v % 3 as bucket, count(*) as n, max(id) as top from silver.src group by all",
        "bucket",
    ),
    "computed and copied key": (
        "select c, v % 2 as parity, count(*) as n from silver.src group by all",
        "c, parity",
    ),
    "case as the key": (
        "select case when v > 5 then 'hi' else 'lo' end as band, count(*) as n "
        "from silver.src group by 1",
        "band",
    ),
    "a NULL group": ("select nullif(c, 1) as c1, sum(v) as s from silver.src group by 1", "c1"),
    "distinct": ("select distinct c, v % 2 = 0 as even from silver.src", "c, even"),
    "group by the dimension": (
        "select d.label, count(*) as n from silver.src s join silver.dim d using (c) "
        "group by d.label",
        "label",
    ),
}


def _change(lh: Lakehouse, rng: random.Random, next_id: int) -> int:
    """One random change to the source or the dimension; the next unused id."""
    source, dimension = lh.table("silver.src"), lh.table("silver.dim")
    kind = rng.choice(["append", "update", "delete", "relabel", "drop", "add"])
    if kind == "append":
        count = rng.randint(1, 3)
        source.append(
            {
                "id": list(range(next_id, next_id + count)),
                "c": [rng.randint(0, 4) for _ in range(count)],
                "v": [rng.randint(0, 9) for _ in range(count)],
            }
        )
        return next_id + count
    if kind == "update":
        source.update({"v": str(rng.randint(0, 9))}, predicate=f"id = {rng.randint(0, next_id)}")
    elif kind == "delete":
        source.delete(f"id = {rng.randint(0, next_id)}")
    elif kind == "relabel":
        dimension.update({"label": f"'{rng.choice('abxy')}'"}, predicate=f"c = {rng.randint(0, 4)}")
    elif kind == "drop":
        dimension.delete(f"c = {rng.randint(0, 4)}")
    else:  # a dimension holds each c once
        c = rng.randint(0, 5)
        if not lh.sql(f"select count(*) from silver.dim where c = {c}").scalar():
            dimension.append({"c": [c], "label": [rng.choice("abxy")]})
    return next_id


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_an_incremental_model_of_each_shape_equals_its_full_rebuild(
    tmp_path: Path, shape: str
) -> None:
    sql, key = SHAPES[shape]
    rng = random.Random(zlib.crc32(shape.encode()))
    for trial in range(3):
        lh = lakebed.open(lakebed.init_project(tmp_path / f"p{trial}"))
        lh.write("silver.dim", {"c": [0, 1, 2, 3], "label": ["a", "b", "x", "y"]})
        lh.write(
            "silver.src",
            {
                "id": list(range(8)),
                "c": [i % 4 for i in range(8)],
                "v": [rng.randint(0, 9) for _ in range(8)],
            },
        )
        write_model(lh.root, "gold.m", sql, f"materialized: incremental\nunique_key: [{key}]\n")
        assert lh.run().ok
        next_id = 8
        for step in range(5):
            next_id = _change(lh, rng, next_id)
            summary = lh.run()
            assert summary.ok, summary.nodes[0].error
            built = lh.sql("select * from gold.m order by all").rows()
            assert built == lh.sql(f"select * from ({sql}) order by all").rows(), (trial, step)
        lh.close()
