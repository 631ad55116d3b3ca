"""The result of a SQL query, convertible to the frames data engineers use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import pandas
    import polars


@dataclass(frozen=True)
class QueryResult:
    """Rows of a query and the table versions it read (one snapshot per table)."""

    table: pa.Table
    query: str
    versions: dict[str, int] = field(default_factory=dict)
    files_scanned: dict[str, int] = field(default_factory=dict)
    files_total: dict[str, int] = field(default_factory=dict)

    def arrow(self) -> pa.Table:
        return self.table

    def pl(self) -> polars.DataFrame:
        import polars

        frame = polars.from_arrow(self.table)
        assert isinstance(frame, polars.DataFrame)
        return frame

    def df(self) -> pandas.DataFrame:
        frame: pandas.DataFrame = self.table.to_pandas()
        return frame

    def rows(self) -> list[tuple[Any, ...]]:
        columns = [column.to_pylist() for column in self.table.columns]
        return list(zip(*columns, strict=True)) if columns else []

    def dicts(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.table.to_pylist()
        return rows

    def scalar(self) -> Any:
        """The single value of a one-row, one-column result."""
        if self.table.num_rows != 1 or self.table.num_columns != 1:
            raise ValueError(
                f"expected one value, got {self.table.num_rows} rows × "
                f"{self.table.num_columns} columns"
            )
        return self.table.column(0)[0].as_py()

    @property
    def columns(self) -> list[str]:
        return list(self.table.column_names)

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def show(self, max_rows: int = 20) -> None:
        """Print the result as a table in the terminal."""
        from rich.console import Console

        Console().print(render_table(self.table, max_rows=max_rows))

    def __repr__(self) -> str:
        return f"QueryResult({self.table.num_rows} rows × {self.table.num_columns} columns)"


def render_table(table: pa.Table, *, max_rows: int = 20, title: str | None = None) -> Any:
    """A rich Table of the first `max_rows` rows; numbers right-aligned, NULL dimmed."""
    from rich.table import Table as RichTable

    view = RichTable(title=title, header_style="bold", show_lines=False)
    numeric = []
    for field_ in table.schema:
        is_number = pa.types.is_integer(field_.type) or pa.types.is_floating(field_.type)
        is_number = is_number or pa.types.is_decimal(field_.type)
        numeric.append(is_number)
        view.add_column(field_.name, justify="right" if is_number else "left")
    for row in table.slice(0, max_rows).to_pylist():
        cells = []
        for value in row.values():
            if value is None:
                cells.append("[dim]NULL[/dim]")
            elif isinstance(value, float):
                cells.append(f"{value:,.4f}".rstrip("0").rstrip("."))
            else:
                cells.append(str(value))
        view.add_row(*cells)
    if table.num_rows > max_rows:
        view.caption = f"{max_rows} of {table.num_rows:,} rows"
    else:
        view.caption = f"{table.num_rows:,} row{'s' if table.num_rows != 1 else ''}"
    return view
