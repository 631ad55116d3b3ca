"""Model discovery: the files under models/, their settings, and the `@model` decorator."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lakebed.errors import ModelError, TransformError
from lakebed.storage import TableName
from lakebed.transform import ModelConfig, load_models, model
from lakebed.transform.decorator import spec_of


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load_error(root: Path) -> ModelError:
    with pytest.raises(ModelError) as raised:
        load_models(root)
    return raised.value


T = TableName.parse

# -- SQL models ------------------------------------------------------------------------------


def test_sql_model_reads_inputs_lines_and_query(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "models/gold/revenue.sql",
        """
        -- revenue per customer and day
        WITH paid AS (SELECT * FROM silver.orders WHERE paid)
        SELECT c.name, p.day, sum(p.amount) AS total
        FROM paid p
        JOIN silver.customers c ON c.id = p.customer_id
        GROUP BY ALL;
        """,
    )
    models = load_models(tmp_path)
    assert list(models) == [T("gold.revenue")]
    revenue = models[T("gold.revenue")]
    assert revenue.name == T("gold.revenue")
    assert revenue.path == path
    assert revenue.kind == "sql"
    assert revenue.inputs == (T("silver.orders"), T("silver.customers"))
    assert revenue.input_lines == {T("silver.orders"): 2, T("silver.customers"): 5}
    assert revenue.sql is not None
    assert revenue.sql.startswith("-- revenue per customer and day\nWITH paid")
    assert revenue.sql.endswith("GROUP BY ALL")
    assert revenue.config == ModelConfig()
    assert revenue.function is None


def test_models_are_keyed_by_output_table_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path, "models/silver/orders.sql", "SELECT * FROM bronze.orders")
    write(tmp_path, "models/gold/daily.sql", "SELECT * FROM silver.orders")
    write(tmp_path, "models/bronze/calendar.sql", "SELECT * FROM range(10)")
    write(tmp_path, "models/silver/customers.sql", "SELECT * FROM bronze.customers")
    assert [str(name) for name in load_models(tmp_path)] == [
        "bronze.calendar",
        "gold.daily",
        "silver.customers",
        "silver.orders",
    ]


def test_project_without_models_folder_has_no_models(tmp_path: Path) -> None:
    assert load_models(tmp_path) == {}


def test_files_that_are_not_models_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "models/silver/orders.sql", "SELECT * FROM bronze.orders")
    write(tmp_path, "models/README.md", "# models")
    write(tmp_path, "models/silver/.gitkeep", "")
    write(tmp_path, "models/silver/notes.txt", "SELECT broken")
    write(tmp_path, "models/.scratch/draft.sql", "not sql at all")
    write(tmp_path, "models/silver/__pycache__/orders.cpython-311.pyc", "")
    write(tmp_path, "models/silver/__init__.py", "")
    assert list(load_models(tmp_path)) == [T("silver.orders")]


def test_sql_errors_name_the_model_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "models/silver/orders.sql",
        """
        SELECT *
        FROM bronze.orders o
        JOIN customers c ON c.id = o.customer_id
        """,
    )
    error = load_error(tmp_path)
    assert error.file == str(path)
    assert error.line == 3
    assert "refer to tables as layer.name" in str(error)
    assert str(error).startswith(f"{path}:3: ")


def test_model_error_is_a_terminal_transform_error(tmp_path: Path) -> None:
    write(tmp_path, "models/silver/orders.sql", "SELECT 1; SELECT 2")
    error = load_error(tmp_path)
    assert isinstance(error, TransformError)
    assert "a model is one SELECT" in str(error)


# -- settings (<name>.yml) -------------------------------------------------------------------


def test_settings_beside_a_sql_model(tmp_path: Path) -> None:
    write(tmp_path, "models/silver/orders.sql", "SELECT * FROM bronze.orders")
    write(
        tmp_path,
        "models/silver/orders.yml",
        """
        materialized: incremental
        incremental_strategy: merge
        unique_key: [id]
        schedule: "0 * * * *"
        owner: sales-data
        tags: [daily, finance]
        columns:
          id: the order id
        """,
    )
    config = load_models(tmp_path)[T("silver.orders")].config
    assert config.materialized == "incremental"
    assert config.incremental_strategy == "merge"
    assert config.unique_key == ["id"]
    assert config.schedule == "0 * * * *"
    assert config.owner == "sales-data"
    assert config.tags == ["daily", "finance"]
    assert config.columns == {"id": "the order id"}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("materialized: incremental\nunique_key: id\n", ("merge", ["id"])),
        ("materialized: incremental\nunique_key: [a, b]\n", ("merge", ["a", "b"])),
        (
            "materialized: incremental\nunique_key: id\nincremental_strategy: append\n",
            ("append", ["id"]),
        ),
        ("materialized: incremental\n", ("append", [])),
        ("materialized: scd2\nunique_key: id\n", ("append", ["id"])),
    ],
    ids=["key alone", "key list", "append said", "no key", "scd2"],
)
def test_a_unique_key_alone_means_merge_on_it(
    tmp_path: Path, settings: str, expected: tuple[str, list[str]]
) -> None:
    write(tmp_path, "models/silver/orders.sql", "SELECT * FROM bronze.orders")
    write(tmp_path, "models/silver/orders.yml", settings)
    config = load_models(tmp_path)[T("silver.orders")].config
    assert (config.incremental_strategy, config.unique_key) == expected


def test_one_value_stands_for_a_list_of_one(tmp_path: Path) -> None:
    write(tmp_path, "models/silver/orders.sql", "SELECT * FROM bronze.orders")
    write(tmp_path, "models/silver/orders.yml", "partition_by: order_month\ntags: daily\n")
    config = load_models(tmp_path)[T("silver.orders")].config
    assert config.partition_by == ["order_month"]
    assert config.tags == ["daily"]


def test_table_properties_are_kept_as_delta_writes_them(tmp_path: Path) -> None:
    write(tmp_path, "models/gold/orders.sql", "SELECT * FROM silver.orders")
    write(
        tmp_path,
        "models/gold/orders.yml",
        "properties:\n"
        "  delta.enableChangeDataFeed: false\n"
        "  delta.checkpointInterval: 20\n"
        "  delta.logRetentionDuration: interval 7 days\n",
    )
    assert load_models(tmp_path)[T("gold.orders")].config.properties == {
        "delta.enableChangeDataFeed": "false",
        "delta.checkpointInterval": "20",
        "delta.logRetentionDuration": "interval 7 days",
    }


def test_a_bad_table_property_names_file_line_and_fix(tmp_path: Path) -> None:
    write(tmp_path, "models/gold/orders.sql", "SELECT * FROM silver.orders")
    path = write(
        tmp_path,
        "models/gold/orders.yml",
        "owner: me\nproperties:\n  delta.enableChangeDatafeed: false\n",
    )
    error = load_error(tmp_path)
    assert (error.file, error.line, error.key) == (str(path), 2, "properties")
    assert "did you mean delta.enableChangeDataFeed?" in str(error)


def test_empty_settings_file_means_defaults(tmp_path: Path) -> None:
    write(tmp_path, "models/silver/orders.sql", "SELECT * FROM bronze.orders")
    write(tmp_path, "models/silver/orders.yml", "# nothing set yet\n")
    assert load_models(tmp_path)[T("silver.orders")].config == ModelConfig()


def test_a_list_or_mapping_left_empty_means_none(tmp_path: Path) -> None:
    write(tmp_path, "models/silver/orders.sql", "SELECT * FROM bronze.orders")
    settings = "checks:\n  # - not_null: id\ntags:\ncolumns:\nproperties:\nunique_key:\n"
    write(tmp_path, "models/silver/orders.yml", settings)
    assert load_models(tmp_path)[T("silver.orders")].config == ModelConfig()


@pytest.mark.parametrize(
    ("settings", "line", "key", "text"),
    [
        ("materialized: table\nowner: me\nmaterialised: view\n", 3, "materialised", "unknown key"),
        ("tags: [a]\nmaterialized: tabel\n", 2, "materialized", "'tabel'"),
        ("unique_key: [id]\ntags: 5\n", 2, "tags", "list"),
        ("materialized: incremental\nincremental_strategy: merge\n", 1, None, "unique_key"),
        (
            "properties:\n  delta.checkpointInterval: 5\nmaterialized: view\n",
            3,
            None,
            "a view has no table",
        ),
        ("owner: me\nfull_refresh: false\n", 2, None, "incremental and scd2"),
        ("owner: me\nschedule: '61 * * * *'\n", 2, "schedule", "invalid cron expression"),
        ("updated_at: at\nmaterialized: table\n", 2, None, "this model is table"),
        (
            "materialized: scd2\nunique_key: id\nupdated_at: at\ncheck_cols: [a]\n",
            3,
            None,
            "set one",
        ),
        ("materialized: table\n  owner: [\n", 2, None, "not valid YAML"),
        ("- materialized\n- table\n", 1, None, "expected a mapping of settings"),
    ],
    ids=[
        "unknown key",
        "bad value",
        "bad type",
        "merge needs a key",
        "view properties",
        "full_refresh of a table",
        "bad cron",
        "updated_at of a table",
        "two scd2 strategies",
        "yaml syntax",
        "a list",
    ],
)
def test_settings_errors_name_file_line_and_key(
    tmp_path: Path, settings: str, line: int, key: str | None, text: str
) -> None:
    write(tmp_path, "models/silver/orders.sql", "SELECT * FROM bronze.orders")
    path = write(tmp_path, "models/silver/orders.yml", settings)
    error = load_error(tmp_path)
    assert error.file == str(path)
    assert error.line == line
    assert error.key == key
    assert error.model == "silver.orders"
    assert text in str(error)


def test_unknown_setting_lists_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, "models/silver/orders.sql", "SELECT * FROM bronze.orders")
    write(tmp_path, "models/silver/orders.yml", "materialised: view\n")
    message = str(load_error(tmp_path))
    assert "materialized" in message
    assert "unique_key" in message
    assert message.count("`materialised`") == 1  # the location prefix is not doubled


# -- layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "text", "fix"),
    [
        ("models/orders.sql", "not in models/ itself", "move it to"),
        ("models/staging/orders.sql", "unknown layer folder 'staging'", "bronze, silver, gold"),
        (
            "models/Silver/orders.sql",
            "unknown layer folder 'Silver'",
            "rename the folder to silver",
        ),
        ("models/quarantine/orders.sql", "unknown layer folder", "bronze, silver, gold"),
        ("models/silver/sales/orders.sql", "not in a sub-folder", "move it to"),
        (
            "models/silver/DailyRevenue.sql",
            "'DailyRevenue' is not a table name",
            "daily_revenue.sql",
        ),
        ("models/silver/daily-revenue.sql", "is not a table name", "daily_revenue.sql"),
        ("models/silver/2024_orders.sql", "is not a table name", "m_2024_orders.sql"),
        ("models/silver/orders.v2.sql", "is not a table name", "orders_v2.sql"),
        ("models/silver/orders.SQL", "not .SQL", "rename it to orders.sql"),
        ("models/silver/orders.yaml", "not .yaml", "rename it to orders.yml"),
    ],
)
def test_misplaced_or_misnamed_files_say_the_fix(
    tmp_path: Path, relative: str, text: str, fix: str
) -> None:
    path = write(tmp_path, relative, "SELECT * FROM bronze.orders")
    error = load_error(tmp_path)
    assert error.file == str(path)
    assert text in str(error)
    assert error.hint is not None
    assert fix in error.hint


def test_settings_without_a_model(tmp_path: Path) -> None:
    write(tmp_path, "models/silver/orders.sql", "SELECT * FROM bronze.orders")
    path = write(tmp_path, "models/silver/order.yml", "materialized: view\n")
    error = load_error(tmp_path)
    assert error.file == str(path)
    assert "no order.sql or order.py" in str(error)


def test_a_table_built_by_both_sql_and_python(tmp_path: Path) -> None:
    write(tmp_path, "models/silver/orders.sql", "SELECT * FROM bronze.orders")
    path = write(
        tmp_path,
        "models/silver/orders.py",
        """
        from lakebed.transform import model

        @model(inputs=["bronze.orders"])
        def orders(raw):
            return raw
        """,
    )
    error = load_error(tmp_path)
    assert error.file == str(path)
    assert "two models build silver.orders: orders.sql and orders.py" in str(error)


# -- Python models ---------------------------------------------------------------------------

PYTHON_MODEL = """
    import pyarrow as pa
    import pyarrow.compute as pc

    from lakebed.transform import model


    def helper(table):
        return table


    @model(
        inputs=[
            "silver.orders",
            "silver.customers",
        ],
        frame="arrow",
        materialized="incremental",
        unique_key=["id"],
        incremental_strategy="merge",
        tags=["daily"],
    )
    def revenue(orders, customers):
        return helper(orders.filter(pc.greater(orders["amount"], 0)))
"""


def test_python_model_declares_inputs_frame_and_settings(tmp_path: Path) -> None:
    import pyarrow as pa

    path = write(tmp_path, "models/gold/revenue.py", PYTHON_MODEL)
    built = load_models(tmp_path)[T("gold.revenue")]
    assert built.kind == "python"
    assert built.path == path
    assert built.inputs == (T("silver.orders"), T("silver.customers"))
    assert built.input_lines == {T("silver.orders"): 13, T("silver.customers"): 14}
    assert built.frame == "arrow"
    assert built.sql is None
    assert built.config.materialized == "incremental"
    assert built.config.unique_key == ["id"]
    assert built.config.tags == ["daily"]
    assert built.function is not None
    assert built.function.__name__ == "revenue"
    orders = pa.table({"id": [1, 2], "amount": [5, -1]})
    assert built.function(orders, pa.table({"id": [1]})).to_pylist() == [{"id": 1, "amount": 5}]


def test_python_modules_get_unique_names(tmp_path: Path) -> None:
    body = """
        from lakebed.transform import model

        @model(inputs=["bronze.orders"])
        def build(raw):
            return "{layer}"
    """
    write(tmp_path, "models/silver/orders.py", body.replace("{layer}", "silver"))
    write(tmp_path, "models/gold/orders.py", body.replace("{layer}", "gold"))
    models = load_models(tmp_path)
    silver, gold = models[T("silver.orders")].function, models[T("gold.orders")].function
    assert silver is not None
    assert gold is not None
    assert silver.__module__ == "lakebed_models.silver.orders"
    assert gold.__module__ == "lakebed_models.gold.orders"
    assert silver(None) == "silver"
    assert gold(None) == "gold"
    assert sys.modules["lakebed_models.gold.orders"].build is gold


def test_python_model_is_reloaded_from_its_text(tmp_path: Path) -> None:
    body = """
        from lakebed.transform import model

        @model
        def orders():
            return {value}
    """
    write(tmp_path, "models/silver/orders.py", body.replace("{value}", "1"))
    first = load_models(tmp_path)[T("silver.orders")].function
    # Same size, same second: a bytecode cache keyed on mtime and size would go stale.
    write(tmp_path, "models/silver/orders.py", body.replace("{value}", "2"))
    second = load_models(tmp_path)[T("silver.orders")].function
    assert first is not None
    assert second is not None
    assert (first(), second()) == (1, 2)
    assert not (tmp_path / "models" / "silver" / "__pycache__").exists()


def test_settings_file_beside_a_python_model(tmp_path: Path) -> None:
    write(
        tmp_path,
        "models/silver/orders.py",
        """
        from lakebed.transform import model

        @model(inputs=["bronze.orders"], frame="polars")
        def orders(raw):
            return raw
        """,
    )
    write(tmp_path, "models/silver/orders.yml", "materialized: view\ntags: [hourly]\n")
    built = load_models(tmp_path)[T("silver.orders")]
    assert built.frame == "polars"
    assert built.config.materialized == "view"
    assert built.config.tags == ["hourly"]


def test_settings_in_both_places_is_an_error(tmp_path: Path) -> None:
    write(
        tmp_path,
        "models/silver/orders.py",
        """
        from lakebed.transform import model

        @model(inputs=["bronze.orders"], materialized="table", owner="me")
        def orders(raw):
            return raw
        """,
    )
    settings = write(tmp_path, "models/silver/orders.yml", "materialized: view\n")
    error = load_error(tmp_path)
    assert error.file == str(settings)
    message = str(error)
    assert "both here and in the @model decorator of orders()" in message
    assert "orders.py:3: materialized, owner" in message
    assert "keep the settings in one place" in message


def test_python_model_without_a_decorated_function(tmp_path: Path) -> None:
    path = write(tmp_path, "models/silver/orders.py", "def orders(raw):\n    return raw\n")
    error = load_error(tmp_path)
    assert error.file == str(path)
    assert "has no function decorated with @model" in str(error)


def test_python_model_with_two_decorated_functions(tmp_path: Path) -> None:
    write(
        tmp_path,
        "models/silver/orders.py",
        """
        from lakebed.transform import model

        @model(inputs=["bronze.orders"])
        def first(raw):
            return raw

        @model(inputs=["bronze.orders"])
        def second(raw):
            return raw
        """,
    )
    assert "has 2 functions decorated with @model (first, second)" in str(load_error(tmp_path))


def test_decorated_function_imported_from_elsewhere_does_not_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path,
        "shared_models.py",
        """
        from lakebed.transform import model

        @model(inputs=["silver.orders"])
        def base(table):
            return table
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    write(
        tmp_path,
        "models/gold/orders.py",
        """
        from shared_models import base
        from lakebed.transform import model

        @model(inputs=["silver.orders"])
        def orders(table):
            return base(table)
        """,
    )
    try:
        built = load_models(tmp_path)[T("gold.orders")]
    finally:
        sys.modules.pop("shared_models", None)
    assert built.function is not None
    assert built.function.__name__ == "orders"


@pytest.mark.parametrize(
    ("source", "line", "text"),
    [
        ("x = 1\ndef broken(:\n    pass\n", 2, "not valid Python"),
        ("import json\n\nraise RuntimeError('no config')\n", 3, "RuntimeError: no config"),
        ("import no_such_module_here\n", 1, "ModuleNotFoundError"),
    ],
    ids=["syntax error", "raises at import", "missing import"],
)
def test_python_import_errors_name_the_line(
    tmp_path: Path, source: str, line: int, text: str
) -> None:
    path = write(tmp_path, "models/silver/orders.py", source)
    error = load_error(tmp_path)
    assert error.file == str(path)
    assert error.line == line
    assert text in str(error)
    assert "lakebed_models.silver.orders" not in sys.modules


# -- the decorator ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decorator", "key", "text"),
    [
        ('@model(inputs=["orders"])', "inputs", "must be layer.name"),
        ('@model(inputs=["staging.orders"])', "inputs", "unknown layer 'staging'"),
        ('@model(inputs="silver.orders")', "inputs", "must be a list of table names"),
        ('@model(inputs=["silver.a", "silver.a"])', "inputs", "silver.a is listed twice"),
        ('@model(inputs=["silver.a"], frame="spark")', "frame", "unknown frame 'spark'"),
        ('@model(inputs=["silver.a"], materialised="view")', "materialised", "unknown setting"),
        ('@model(inputs=["silver.a"], materialized="tabel")', "materialized", "'view'"),
        ('@model(inputs=["silver.a"], materialized="scd2")', None, "needs a unique_key"),
        ('@model(inputs=["silver.a", "silver.b"])', None, "takes 1 parameter but declares 2"),
    ],
)
def test_decorator_errors_name_the_function_at_import(
    tmp_path: Path, decorator: str, key: str | None, text: str
) -> None:
    source = f"from lakebed.transform import model\n\n\n{decorator}\ndef orders(a):\n    return a\n"
    path = write(tmp_path, "models/silver/orders.py", source)
    error = load_error(tmp_path)
    assert error.file == str(path)
    assert error.line == 4
    assert error.key == key
    assert "@model of orders()" in str(error)
    assert text in str(error)


def test_decorator_returns_the_function_unchanged() -> None:
    def build(orders: Any, customers: Any) -> Any:
        return orders

    decorated = model(inputs=["silver.orders", "silver.customers"], owner="me")(build)
    assert decorated is build
    spec = spec_of(build)
    assert spec is not None
    assert spec.inputs == (T("silver.orders"), T("silver.customers"))
    assert spec.frame == "arrow"
    assert spec.config == ModelConfig(owner="me")
    assert spec.settings == frozenset({"owner"})
    assert spec.function_name.endswith("build")


def test_bare_decorator_declares_no_inputs() -> None:
    @model
    def calendar() -> int:
        return 1

    spec = spec_of(calendar)
    assert spec is not None
    assert spec.inputs == ()
    assert spec.settings == frozenset()
    assert calendar() == 1


@pytest.mark.parametrize(
    "signature",
    [
        "def f(a, b)",
        "def f(a, b, c=None)",
        "def f(*frames)",
        "def f(a, *rest)",
        "def f(a, b, *, c=1)",
    ],
)
def test_decorator_accepts_one_argument_per_input(signature: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"{signature}:\n    return None\n", namespace)
    model(inputs=["silver.a", "silver.b"])(namespace["f"])
    assert spec_of(namespace["f"]) is not None


@pytest.mark.parametrize(
    ("signature", "text"),
    [
        ("def f(a)", "takes 1 parameter but declares 2 inputs"),
        ("def f(a, b, c)", "takes 3 parameters but declares 2 inputs"),
        ("def f(a, b, *, c)", "keyword-only parameter 'c'"),
    ],
)
def test_decorator_rejects_other_signatures(signature: str, text: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"{signature}:\n    return None\n", namespace)
    with pytest.raises(ModelError, match=text):
        model(inputs=["silver.a", "silver.b"])(namespace["f"])
