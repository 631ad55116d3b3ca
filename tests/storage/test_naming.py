from __future__ import annotations

import pytest

from lakebed.errors import InvalidTableNameError, StorageError, Terminal
from lakebed.storage import CDF_LAYERS, LAYERS, TableName


@pytest.mark.parametrize(
    ("text", "layer", "name"),
    [
        ("bronze.orders", "bronze", "orders"),
        ("silver.orders_2024", "silver", "orders_2024"),
        ("gold._private", "gold", "_private"),
        ("quarantine.orders", "quarantine", "orders"),
        ("  Silver.Orders  ", "silver", "orders"),
    ],
)
def test_parse_accepts_layer_dot_name_and_lowercases(text: str, layer: str, name: str) -> None:
    parsed = TableName.parse(text)
    assert (parsed.layer, parsed.name) == (layer, name)
    assert str(parsed) == f"{layer}.{name}"
    assert parsed.relative_path == f"{layer}/{name}"


def test_parse_returns_a_table_name_unchanged() -> None:
    name = TableName("gold", "revenue")
    assert TableName.parse(name) is name


def test_table_names_are_hashable_and_ordered() -> None:
    names = {TableName.parse("silver.b"), TableName.parse("silver.a"), TableName.parse("silver.a")}
    assert sorted(names) == [TableName("silver", "a"), TableName("silver", "b")]


def test_layers_and_change_data_feed_layers() -> None:
    assert LAYERS == ("bronze", "silver", "gold", "quarantine")
    assert set(CDF_LAYERS) == {"silver", "gold"}


@pytest.mark.parametrize("text", ["orders", "silver.orders.extra", "a.b.c.d", ""])
def test_parse_rejects_wrong_number_of_parts(text: str) -> None:
    with pytest.raises(InvalidTableNameError) as info:
        TableName.parse(text)
    assert "must be layer.name" in info.value.message
    assert info.value.hint is not None
    assert "silver.orders" in info.value.hint
    assert "bronze, silver, gold, quarantine" in info.value.hint


def test_parse_rejects_an_unknown_layer_and_lists_the_layers() -> None:
    with pytest.raises(InvalidTableNameError) as info:
        TableName.parse("platinum.orders")
    assert "unknown layer 'platinum'" in info.value.message
    assert info.value.table == "platinum.orders"
    assert info.value.hint == "layers are bronze, silver, gold, quarantine"
    assert "hint: layers are" in str(info.value)


@pytest.mark.parametrize(
    "text", ["silver.1orders", "silver.my-orders", "silver.my orders", "silver.", "silver.ördrë"]
)
def test_parse_rejects_names_that_are_not_plain_identifiers(text: str) -> None:
    with pytest.raises(InvalidTableNameError) as info:
        TableName.parse(text)
    assert "is not a plain identifier" in info.value.message
    assert info.value.hint is not None
    assert "lower-case letters, digits and underscores" in info.value.hint


def test_invalid_name_error_is_a_terminal_storage_error() -> None:
    with pytest.raises(StorageError) as info:
        TableName.parse("nope")
    assert isinstance(info.value, Terminal)
