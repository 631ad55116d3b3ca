from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import new_lakehouse
from lakebed import Lakehouse


@pytest.fixture
def lh(tmp_path: Path) -> Iterator[Lakehouse]:
    """A fresh, empty project."""
    with new_lakehouse(tmp_path / "project") as lakehouse:
        yield lakehouse
