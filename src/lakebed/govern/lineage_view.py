"""The stored lineage drawn as trees: upstream to the source columns or downstream to
every use (`lakebed lineage`), or the tables alone; `lineage_reach` gives the edges a
tree draws (`--format json`). Every model records a `table` edge (columns `*`) per table
it reads: a Python model's columns are not traced, so its tables stand in for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, TypeVar

from rich.text import Text
from rich.tree import Tree

from lakebed.metastore.lineage_store import WHOLE_TABLE, LineageEdge
from lakebed.storage import TableName

__all__ = ["Direction", "lineage_reach", "lineage_tree", "table_edges"]

Direction = Literal["upstream", "downstream"]
_T = TypeVar("_T")


def table_edges(table: TableName | str, inputs: Iterable[TableName | str]) -> list[LineageEdge]:
    """The edges saying `table` is built from each of `inputs` (columns `*`, transform
    `table`): what every model records, its columns traced or not."""
    name = str(TableName.parse(table))
    return [
        LineageEdge(name, WHOLE_TABLE, str(TableName.parse(i)), WHOLE_TABLE, "table")
        for i in inputs
    ]


def _chosen(edges: Iterable[LineageEdge], tables: bool) -> list[LineageEdge]:
    """The edges a tree follows: table edges alone (`tables`), or column edges
    and the table edges of tables with no column traced (Python models)."""
    edges = list(edges)
    if tables:
        return [e for e in edges if e.transform == "table"]
    traced = {e.downstream_table for e in edges if e.transform != "table"}
    return [e for e in edges if e.transform != "table" or e.downstream_table not in traced]


def lineage_reach(
    edges: Iterable[LineageEdge],
    table: TableName | str,
    column: str | None = None,
    direction: Direction = "upstream",
    *,
    tables: bool = False,
) -> list[LineageEdge]:
    """The edges `lineage_tree` draws: every edge reached from `table` (or one column of
    it) going `upstream` or `downstream`, each once, in the order they are reached."""
    name = str(TableName.parse(table))
    links: dict[tuple[str, str], list[LineageEdge]] = {}
    for edge in _chosen(edges, tables):
        down = (edge.downstream_table, edge.downstream_column)
        up = (edge.upstream_table, edge.upstream_column)
        links.setdefault(down if direction == "upstream" else up, []).append(edge)
    wanted = column.lower() if column is not None and not tables else None
    todo = sorted(
        k
        for k in links
        if k[0] == name and (wanted is None or k[1] == WHOLE_TABLE or k[1].lower() == wanted)
    )
    seen: set[tuple[str, str]] = set(todo)
    reached: list[LineageEdge] = []
    while todo:
        start = todo.pop(0)
        for edge in sorted(_ends(links, start, direction == "upstream"), key=_edge_order):
            reached.append(edge)
            up = (edge.upstream_table, edge.upstream_column)
            down = (edge.downstream_table, edge.downstream_column)
            end = up if direction == "upstream" else down
            if end not in seen:
                seen.add(end)
                todo.append(end)
    return reached


_Key = tuple[str, str]


def _ends(links: Mapping[_Key, list[_T]], start: _Key, upstream: bool) -> list[_T]:
    """What `start` links to; going upstream, a column of a table whose columns are not
    traced (a Python model's, a bronze table's) leads where the whole table comes from."""
    found = links.get(start)
    if found or not upstream or start[1] == WHOLE_TABLE:
        return found or []
    return links.get((start[0], WHOLE_TABLE), [])


def _edge_order(edge: LineageEdge) -> tuple[str, str, str, str]:
    return (
        edge.upstream_table,
        edge.upstream_column,
        edge.downstream_table,
        edge.downstream_column,
    )


def lineage_tree(
    edges: Iterable[LineageEdge],
    table: TableName | str,
    column: str | None = None,
    direction: Direction = "upstream",
    *,
    tables: bool = False,
) -> Tree:
    """A rich tree of `table` (or one column) and, recursively, the columns it is computed
    from (`upstream`, down to source columns) or the columns computed from it
    (`downstream`); with `tables`, of the tables alone. A Python model's columns are not
    traced: its tables stand in for them. A column met again on the same path is marked as
    a cycle, and one already drawn elsewhere in the tree is not drawn twice."""
    name = str(TableName.parse(table))
    if tables:
        column = None
    links: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for edge in _chosen(edges, tables):
        down = (edge.downstream_table, edge.downstream_column)
        up = (edge.upstream_table, edge.upstream_column)
        start, end = (down, up) if direction == "upstream" else (up, down)
        links.setdefault(start, []).append((*end, edge.transform))
    for ends in links.values():
        ends.sort()
    columns = sorted(c for t, c in links if t == name)
    if columns == [WHOLE_TABLE]:  # a Python model: its tables stand in for its columns
        column = None
    if column is not None:
        # DuckDB column names are case-insensitive: find the stored spelling.
        column = next((c for c in columns if c.lower() == column.lower()), column)
    root = Tree(_label(name, column, None, style="bold"), guide_style="dim")
    grow = _Grower(links, upstream=direction == "upstream")
    if column is not None:
        grow(root, (name, column), {(name, column)})
        if direction == "downstream":  # Python models reading the table read every column
            grow(root, (name, WHOLE_TABLE), {(name, WHOLE_TABLE)})
    elif columns == [WHOLE_TABLE]:
        grow(root, (name, WHOLE_TABLE), {(name, WHOLE_TABLE)})
        if not tables and direction == "upstream":
            note = "its columns are not traced: what it is built or loaded from"
            root.add(Text(note, style="dim italic"))
    else:
        for each in columns:
            grow(root.add(_label(name, each, None)), (name, each), {(name, each)})
    if not root.children:
        what = "upstream columns" if direction == "upstream" else "downstream uses"
        root.add(Text(f"no {what} recorded", style="dim italic"))
    return root


class _Grower:
    """Adds to a branch what its column links to, recursively; a column drawn already is
    not drawn twice, and one met again on the same path is a cycle."""

    def __init__(self, links: Mapping[_Key, list[tuple[str, str, str]]], *, upstream: bool):
        self.links, self.upstream = links, upstream
        self.drawn: set[_Key] = set()

    def __call__(self, branch: Tree, start: _Key, path: set[_Key]) -> None:
        for table, column, transform in _ends(self.links, start, self.upstream):
            end = (table, column)
            label = _label(table, column, transform)
            if end in path:
                label.append(" ↻ cycle", style="yellow")
                branch.add(label)
                continue
            if end in self.drawn and _ends(self.links, end, self.upstream):
                label.append(" (shown above)", style="dim italic")
                branch.add(label)
                continue
            self.drawn.add(end)
            self(branch.add(label), end, path | {end})


def _label(table: str, column: str | None, transform: str | None, style: str = "") -> Text:
    text = Text(table, style=f"cyan {style}".strip())
    if column is not None and column != WHOLE_TABLE:
        text.append(".", style="cyan")
        text.append(column, style=style or "bold")
    if transform is not None and transform != "table":
        text.append(f" ({transform})", style="dim")
    return text
