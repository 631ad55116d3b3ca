"""The stored lineage drawn as trees: upstream to the source columns or downstream to
every use (`lakebed lineage`), or the tables alone; `lineage_reach` gives the edges a
tree draws (`--format json`). Every model records a `table` edge (columns `*`) per table
it reads: a Python model's columns are not traced, so its tables stand in for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from rich.text import Text
from rich.tree import Tree

from lakebed.metastore.lineage_store import WHOLE_TABLE, LineageEdge
from lakebed.storage import TableName

__all__ = ["Direction", "lineage_reach", "lineage_tree", "table_edges"]

Direction = Literal["upstream", "downstream"]


def table_edges(table: TableName | str, inputs: Iterable[TableName | str]) -> list[LineageEdge]:
    """The edges saying `table` is built from each of `inputs` (columns `*`, transform
    `table`): what every model records, its columns traced or not."""
    name = str(TableName.parse(table))
    return [
        LineageEdge(name, WHOLE_TABLE, str(TableName.parse(i)), WHOLE_TABLE, "table")
        for i in inputs
    ]


_Key = tuple[str, str]


class _Links:
    """The stored edges as steps from a node (a column, or a table as `*`) in one
    direction: column steps, and table steps (`table` edges). Tables whose columns are not
    traced (Python models, tables loaded from outside) have table steps alone: going
    upstream, their columns lead where the whole table comes from."""

    def __init__(self, edges: Iterable[LineageEdge], direction: Direction, tables: bool):
        self.upstream = direction == "upstream"
        self.columns: dict[_Key, list[LineageEdge]] = {}
        self.wholes: dict[_Key, list[LineageEdge]] = {}
        self.traced: set[str] = set()  # tables some column of which was traced
        for edge in edges:
            if edge.transform == "table":
                self.wholes.setdefault(self.start(edge), []).append(edge)
            elif not tables:
                self.columns.setdefault(self.start(edge), []).append(edge)
                self.traced.add(edge.downstream_table)
        for steps in (*self.columns.values(), *self.wholes.values()):
            steps.sort(key=_edge_order)

    def start(self, edge: LineageEdge) -> _Key:
        if self.upstream:
            return (edge.downstream_table, edge.downstream_column)
        return (edge.upstream_table, edge.upstream_column)

    def end(self, edge: LineageEdge) -> _Key:
        if self.upstream:
            return (edge.upstream_table, edge.upstream_column)
        return (edge.downstream_table, edge.downstream_column)

    def steps(self, node: _Key, *, untraced_only: bool = False) -> list[LineageEdge]:
        """Where `node` leads; `untraced_only`: of a table's readers, those whose columns
        are not traced (the others are reached through the columns they read)."""
        table, column = node
        if column == WHOLE_TABLE:
            found = self.wholes.get(node, [])
            if untraced_only:
                return [e for e in found if e.downstream_table not in self.traced]
            return found
        found = self.columns.get(node, [])
        if not found and self.upstream and table not in self.traced:
            return self.wholes.get((table, WHOLE_TABLE), [])
        return found

    def columns_of(self, table: str) -> list[str]:
        return sorted({c for t, c in self.columns if t == table})


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
    links = _Links(edges, direction, tables)
    starts = _starts(links, name, column, tables)
    seen: set[_Key] = set(starts)
    todo = list(starts)
    reached: list[LineageEdge] = []
    while todo:
        node = todo.pop(0)
        root_table = node in starts and node[1] == WHOLE_TABLE and not tables
        for edge in links.steps(node, untraced_only=root_table and not links.upstream):
            reached.append(edge)
            end = links.end(edge)
            if end not in seen:
                seen.add(end)
                todo.append(end)
    return reached


def _starts(links: _Links, name: str, column: str | None, tables: bool) -> list[_Key]:
    """The nodes a tree of `name` (or one column of it) grows from."""
    if tables:
        return [(name, WHOLE_TABLE)]
    columns = links.columns_of(name)
    if column is not None:
        # DuckDB column names are case-insensitive: find the stored spelling.
        found = next((c for c in columns if c.lower() == column.lower()), None)
        chosen = [(name, found)] if found is not None else []
    else:
        chosen = [(name, c) for c in columns]
    if links.upstream:
        if not chosen and name not in links.traced and (name, WHOLE_TABLE) in links.wholes:
            return [(name, WHOLE_TABLE)]  # its columns are not traced: its tables
        return chosen
    return [*chosen, (name, WHOLE_TABLE)]  # and the readers whose columns are not traced


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
    links = _Links(edges, direction, tables)
    starts = _starts(links, name, column, tables)
    whole = starts == [(name, WHOLE_TABLE)]
    one = column is not None and not tables and not whole
    # The column as stored (DuckDB's names are case-insensitive), else as asked for.
    shown = next((c for _, c in starts if c != WHOLE_TABLE), column) if one else None
    root = Tree(_label(name, shown, None, style="bold"), guide_style="dim")
    grow = _Grower(links)
    for node in starts:
        if node[1] == WHOLE_TABLE:
            grow(root, node, {node}, untraced_only=not tables and not links.upstream)
        elif one:
            grow(root, node, {node})
        else:
            grow(root.add(_label(name, node[1], None)), node, {node})
    if whole and not tables and links.upstream and root.children:
        note = "its columns are not traced: what it is built or loaded from"
        root.add(Text(note, style="dim italic"))
    if not root.children:
        what = "upstream columns" if direction == "upstream" else "downstream uses"
        root.add(Text(f"no {what} recorded", style="dim italic"))
    return root


class _Grower:
    """Adds to a branch where its node leads, recursively; a node drawn already is not
    drawn twice, and one met again on the same path is a cycle."""

    def __init__(self, links: _Links):
        self.links = links
        self.drawn: set[_Key] = set()

    def __call__(
        self, branch: Tree, start: _Key, path: set[_Key], *, untraced_only: bool = False
    ) -> None:
        for edge in self.links.steps(start, untraced_only=untraced_only):
            end = self.links.end(edge)
            label = _label(*end, edge.transform)
            if end in path:
                label.append(" ↻ cycle", style="yellow")
                branch.add(label)
                continue
            if end in self.drawn and self.links.steps(end):
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
