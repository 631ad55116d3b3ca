"""The public API changes only on purpose: update these lists in the same commit."""

from __future__ import annotations

import lakebed
import lakebed.errors
import lakebed.process
import lakebed.storage


def test_root_all_is_pinned() -> None:
    assert lakebed.__all__ == [
        "LakebedError",
        "Lakehouse",
        "QueryResult",
        "Table",
        "WriteResult",
        "__version__",
        "init_project",
        "model",
        "open",
    ]


def test_every_root_name_exists() -> None:
    for name in lakebed.__all__:
        assert hasattr(lakebed, name), name


def test_layer_packages_export_what_they_list() -> None:
    for package in (lakebed.storage, lakebed.process):
        for name in package.__all__:
            assert hasattr(package, name), f"{package.__name__}.{name}"


def test_every_error_derives_from_the_root() -> None:
    errors = [
        value
        for value in vars(lakebed.errors).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ]
    assert len(errors) > 5
    for error in errors:
        assert issubclass(error, lakebed.LakebedError), error.__name__
