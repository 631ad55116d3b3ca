"""Table names (`layer.name`) and where a table lives under the storage root."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lakebed.errors import InvalidTableNameError

LAYERS = ("bronze", "silver", "gold", "quarantine")
# Layers whose tables record a change data feed by default (downstream incremental reads).
CDF_LAYERS = frozenset({"silver", "gold"})

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True, order=True)
class TableName:
    """A lakehouse table address: `layer.name`, lower-case identifiers."""

    layer: str
    name: str

    def __str__(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def relative_path(self) -> str:
        return f"{self.layer}/{self.name}"

    @classmethod
    def parse(cls, text: str | TableName) -> TableName:
        """Parse `layer.name`; raise `InvalidTableNameError` saying what is wrong."""
        if isinstance(text, TableName):
            return text
        parts = text.strip().lower().split(".")
        if len(parts) != 2:
            raise InvalidTableNameError(
                f"table name {text!r} must be layer.name",
                table=text,
                hint=f"for example silver.orders; layers are {', '.join(LAYERS)}",
            )
        layer, name = parts
        if layer not in LAYERS:
            raise InvalidTableNameError(
                f"unknown layer {layer!r} in table name {text!r}",
                table=text,
                hint=f"layers are {', '.join(LAYERS)}",
            )
        if not _IDENTIFIER.match(name):
            raise InvalidTableNameError(
                f"table name {name!r} in {text!r} is not a plain identifier",
                table=text,
                hint="use lower-case letters, digits and underscores, starting with a letter",
            )
        return cls(layer, name)
