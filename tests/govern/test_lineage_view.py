"""The tree drawn from stored lineage edges, upstream or downstream, of columns or tables."""

from __future__ import annotations

import io
import re

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from lakebed.govern import ColumnEdge, lineage_reach, lineage_tree, table_edges
from lakebed.metastore.lineage_store import LineageEdge

# -- lineage_tree ----------------------------------------------------------------------------


def _edges(*lines: str) -> list[LineageEdge]:
    """Edges from `down.table.col <- up.table.col (transform)` lines."""
    edges = []
    for line in lines:
        found = re.fullmatch(r"(\w+\.\w+)\.(\w+) <- (\w+\.\w+)\.(\w+) \((\w+)\)", line)
        assert found, line
        edges.append(LineageEdge(found[1], found[2], found[3], found[4], found[5]))  # type: ignore[arg-type]
    return edges


GRAPH = _edges(
    "silver.orders.amount <- bronze.orders.amount (expression)",
    "silver.orders.customer_id <- bronze.orders.customer_id (copy)",
    "gold.revenue.customer_id <- silver.orders.customer_id (copy)",
    "gold.revenue.total <- silver.orders.amount (aggregate)",
    "gold.ranked.rank <- gold.revenue.total (window)",
    "gold.ranked.customer_id <- gold.revenue.customer_id (copy)",
    "gold.ranked.share <- gold.revenue.total (expression)",
    "gold.ranked.share <- silver.orders.amount (aggregate)",
)


def render(tree: Tree) -> str:
    console = Console(width=100, record=True, color_system=None, file=io.StringIO())
    console.print(tree)
    return console.export_text()


def test_upstream_tree_of_a_column_reaches_the_source_columns() -> None:
    text = render(lineage_tree(GRAPH, "gold.ranked", "share", "upstream"))
    assert text.splitlines() == [
        "gold.ranked.share",
        "├── gold.revenue.total (expression)",
        "│   └── silver.orders.amount (aggregate)",
        "│       └── bronze.orders.amount (expression)",
        "└── silver.orders.amount (aggregate) (shown above)",
    ]


def test_upstream_tree_of_a_table_has_a_branch_per_column() -> None:
    text = render(lineage_tree(GRAPH, "gold.revenue", None, "upstream"))
    assert text.splitlines() == [
        "gold.revenue",
        "├── gold.revenue.customer_id",
        "│   └── silver.orders.customer_id (copy)",
        "│       └── bronze.orders.customer_id (copy)",
        "└── gold.revenue.total",
        "    └── silver.orders.amount (aggregate)",
        "        └── bronze.orders.amount (expression)",
    ]


def test_downstream_tree_shows_every_use() -> None:
    text = render(lineage_tree(GRAPH, "silver.orders", "amount", "downstream"))
    assert text.splitlines() == [
        "silver.orders.amount",
        "├── gold.ranked.share (aggregate)",
        "└── gold.revenue.total (aggregate)",
        "    ├── gold.ranked.rank (window)",
        "    └── gold.ranked.share (expression)",
    ]


def test_tree_column_is_matched_case_insensitively() -> None:
    text = render(lineage_tree(GRAPH, "GOLD.Revenue", "TOTAL", "upstream"))
    assert text.splitlines()[0] == "gold.revenue.total"
    assert "silver.orders.amount (aggregate)" in text


def test_tree_marks_a_cycle_instead_of_recursing_forever() -> None:
    cyclic = _edges(
        "silver.a.x <- silver.b.y (copy)",
        "silver.b.y <- silver.c.z (expression)",
        "silver.c.z <- silver.a.x (copy)",
    )
    for direction in ("upstream", "downstream"):
        text = render(lineage_tree(cyclic, "silver.a", "x", direction))
        assert "↻ cycle" in text
        assert len(text.splitlines()) == 4


def test_tree_of_a_column_without_lineage_says_so() -> None:
    text = render(lineage_tree(GRAPH, "bronze.orders", "amount", "upstream"))
    assert text.splitlines() == ["bronze.orders.amount", "└── no upstream columns recorded"]
    text = render(lineage_tree(GRAPH, "gold.ranked", None, "downstream"))
    assert text.splitlines() == ["gold.ranked", "└── no downstream uses recorded"]


def test_tree_labels_dim_the_transform() -> None:
    tree = lineage_tree(GRAPH, "gold.revenue", "total", "upstream")
    (child,) = tree.children
    label = child.label
    assert isinstance(label, Text)
    spans = {label.plain[s.start : s.end]: str(s.style) for s in label.spans}
    assert spans[" (aggregate)"] == "dim"


def _named(edges: list[ColumnEdge]) -> list[str]:
    return [
        f"{e.downstream_table}.{e.downstream_column} <- "
        f"{e.upstream_table}.{e.upstream_column} ({e.transform})"
        for e in edges
    ]


def test_reach_holds_the_edges_the_tree_draws() -> None:
    assert _named(lineage_reach(GRAPH, "gold.ranked", "SHARE", "upstream")) == [
        "gold.ranked.share <- gold.revenue.total (expression)",
        "gold.ranked.share <- silver.orders.amount (aggregate)",
        "gold.revenue.total <- silver.orders.amount (aggregate)",
        "silver.orders.amount <- bronze.orders.amount (expression)",
    ]
    downstream = _named(lineage_reach(GRAPH, "silver.orders", "amount", "downstream"))
    assert downstream == [
        "gold.ranked.share <- silver.orders.amount (aggregate)",
        "gold.revenue.total <- silver.orders.amount (aggregate)",
        "gold.ranked.rank <- gold.revenue.total (window)",
        "gold.ranked.share <- gold.revenue.total (expression)",
    ]
    cyclic = _edges("silver.a.x <- silver.b.y (copy)", "silver.b.y <- silver.a.x (copy)")
    assert len(lineage_reach(cyclic, "silver.a", "x", "upstream")) == 2


# Every model also records the tables it reads; gold.top is a Python model (no columns).
TABLES = [
    *GRAPH,
    *table_edges("silver.orders", ["bronze.orders"]),
    *table_edges("gold.revenue", ["silver.orders", "silver.refunds"]),  # refunds: a filter
    *table_edges("gold.ranked", ["gold.revenue", "silver.orders"]),
    *table_edges("gold.top", ["silver.orders"]),
]


def test_table_tree_follows_the_tables_a_model_reads() -> None:
    assert render(lineage_tree(TABLES, "gold.ranked", tables=True)).splitlines() == [
        "gold.ranked",
        "├── gold.revenue",
        "│   ├── silver.orders",
        "│   │   └── bronze.orders",
        "│   └── silver.refunds",
        "└── silver.orders (shown above)",
    ]
    downstream = render(lineage_tree(TABLES, "silver.orders", "amount", "downstream", tables=True))
    assert downstream.splitlines() == [
        "silver.orders",
        "├── gold.ranked",
        "├── gold.revenue",
        "│   └── gold.ranked",
        "└── gold.top",
    ]


def test_a_python_models_tables_stand_in_for_its_columns() -> None:
    assert render(lineage_tree(TABLES, "gold.top", "total")).splitlines() == [
        "gold.top",
        "├── silver.orders",
        "│   └── bronze.orders",  # on through the tables the tables it reads are built from
        "└── its columns are not traced: what it is built or loaded from",
    ]
    # Reading the whole table, it uses every column of it; SQL models' table edges are
    # left out of column trees (their columns say more).
    uses = render(lineage_tree(TABLES, "silver.orders", "amount", "downstream")).splitlines()
    assert uses == [
        "silver.orders.amount",
        "├── gold.ranked.share (aggregate)",
        "├── gold.revenue.total (aggregate)",
        "│   ├── gold.ranked.rank (window)",
        "│   └── gold.ranked.share (expression)",
        "└── gold.top",
    ]
    assert _named(lineage_reach(TABLES, "gold.top", "total")) == [
        "gold.top.* <- silver.orders.* (table)",
        "silver.orders.* <- bronze.orders.* (table)",
    ]
    assert len(lineage_reach(TABLES, "gold.ranked", tables=True)) == 5


def test_a_column_of_a_table_loaded_from_outside_leads_to_its_source() -> None:
    loaded = [*TABLES, LineageEdge("bronze.orders", "*", "source:shop_orders", "*", "table")]
    assert render(lineage_tree(loaded, "gold.revenue", "total")).splitlines() == [
        "gold.revenue.total",
        "└── silver.orders.amount (aggregate)",
        "    └── bronze.orders.amount (expression)",
        "        └── source:shop_orders",
    ]
    assert _named(lineage_reach(loaded, "silver.orders", "amount"))[-1] == (
        "bronze.orders.* <- source:shop_orders.* (table)"
    )
