"""Validating the sources of lakebed.yml: each error names the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lakebed.errors import ConfigError
from lakebed.ingest.sources import load_sources


def _error(tmp_path: Path, text: str) -> ConfigError:
    (tmp_path / "lakebed.yml").write_text(text, encoding="utf-8")
    raw = yaml.safe_load(text)["sources"]
    with pytest.raises(ConfigError) as raised:
        load_sources(raw, tmp_path)
    return raised.value


def test_a_source_is_read_with_its_kind(tmp_path: Path) -> None:
    text = "sources:\n  orders:\n    kind: files\n    path: in/*.csv\n"
    (tmp_path / "lakebed.yml").write_text(text, encoding="utf-8")
    specs = load_sources(yaml.safe_load(text)["sources"], tmp_path)
    assert str(specs["orders"].target) == "bronze.orders"


def test_a_source_without_kind_says_which_key_was_meant(tmp_path: Path) -> None:
    error = _error(tmp_path, "sources:\n  orders:\n    type: files\n    path: in/*.csv\n")
    assert (error.line, error.key) == (2, "sources.orders")
    # The kinds registered (tests may register more of their own).
    assert "a source needs `kind:` (files, http, sql" in error.message
    assert error.hint == "write `kind: files` instead of `type:`"


def test_a_source_without_kind_or_a_lookalike_gets_an_example(tmp_path: Path) -> None:
    error = _error(tmp_path, "sources:\n  orders:\n    path: in/*.csv\n")
    assert "a source needs `kind:`" in error.message
    assert "kind: files" in (error.hint or "")


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        ("kind: ftp\n    path: x", "sources.orders.kind", "unknown source kind 'ftp'"),
        (
            "kind: files\n    path: x\n    write_disposition: merge",
            "sources.orders.primary_key",
            "write_disposition merge needs a primary_key",
        ),
        ("kind: files\n    pth: x", "sources.orders.pth", "did you mean path?"),
    ],
)
def test_bad_source_settings_name_the_key(
    tmp_path: Path, body: str, key: str, message: str
) -> None:
    error = _error(tmp_path, f"sources:\n  orders:\n    {body}\n")
    assert error.key == key
    assert message in error.message
