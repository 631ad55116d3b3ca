"""The model graph: build order, parallel layers, up/downstream, selectors and validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lakebed.errors import CycleError, ModelError, TransformError
from lakebed.storage import TableName
from lakebed.transform import Model, ModelConfig, ModelGraph

T = TableName.parse


def make(name: str, *inputs: str, tags: tuple[str, ...] = ()) -> Model:
    """A SQL model reading `inputs`, the i-th of them on line i + 1 of its file."""
    table = T(name)
    return Model(
        name=table,
        path=Path("models") / table.layer / f"{table.name}.sql",
        kind="sql",
        inputs=tuple(T(i) for i in inputs),
        config=ModelConfig(tags=list(tags)),
        sql="SELECT 1",
        input_lines={T(i): index + 2 for index, i in enumerate(inputs)},
    )


def graph_of(
    *models: Model,
    sources: tuple[str, ...] = (),
    targets: dict[str, str] | None = None,
) -> ModelGraph:
    return ModelGraph(
        {m.name: m for m in models},
        {T(s) for s in sources},
        source_targets={k: T(v) for k, v in (targets or {}).items()},
    )


MEDALLION = (
    make("silver.orders", "bronze.orders"),
    make("silver.customers", "bronze.customers"),
    make("silver.fx", "bronze.fx"),
    make("silver.audit"),
    make("gold.revenue", "silver.orders", "silver.customers", "silver.fx", tags=("daily",)),
    make("gold.top_customers", "gold.revenue", tags=("daily", "vip")),
    make("gold.customer_count", "silver.customers"),
)
TARGETS = {"shop_orders": "bronze.orders", "crm": "bronze.customers"}


@pytest.fixture
def graph() -> ModelGraph:
    return graph_of(*MEDALLION, sources=("bronze.fx",), targets=TARGETS)


def names(tables: list[TableName]) -> list[str]:
    return [str(t) for t in tables]


# -- order and layers ------------------------------------------------------------------------


def test_order_puts_inputs_first_and_breaks_ties_by_name(graph: ModelGraph) -> None:
    assert names(graph.order()) == [
        "silver.audit",
        "silver.customers",
        "gold.customer_count",
        "silver.fx",
        "silver.orders",
        "gold.revenue",
        "gold.top_customers",
    ]


def test_order_does_not_depend_on_the_order_models_are_given(graph: ModelGraph) -> None:
    shuffled = graph_of(*reversed(MEDALLION), sources=("bronze.fx",), targets=TARGETS)
    assert shuffled.order() == graph.order()


def test_order_of_a_subset(graph: ModelGraph) -> None:
    subset = ["gold.top_customers", "silver.orders", T("gold.revenue"), "bronze.orders"]
    assert names(graph.order(subset)) == ["silver.orders", "gold.revenue", "gold.top_customers"]


def test_layers_group_models_that_can_build_in_parallel(graph: ModelGraph) -> None:
    assert [names(step) for step in graph.layers()] == [
        ["silver.audit", "silver.customers", "silver.fx", "silver.orders"],
        ["gold.customer_count", "gold.revenue"],
        ["gold.top_customers"],
    ]


def test_layers_of_a_subset_treat_other_inputs_as_built(graph: ModelGraph) -> None:
    steps = graph.layers(["gold.top_customers", "gold.revenue", "gold.customer_count"])
    assert [names(step) for step in steps] == [
        ["gold.customer_count", "gold.revenue"],
        ["gold.top_customers"],
    ]


def test_empty_graph() -> None:
    empty = graph_of()
    assert empty.order() == []
    assert empty.layers() == []


# -- upstream and downstream -----------------------------------------------------------------


def test_upstream_is_transitive_and_in_build_order(graph: ModelGraph) -> None:
    assert names(graph.upstream("gold.top_customers")) == [
        "silver.customers",
        "silver.fx",
        "silver.orders",
        "gold.revenue",
    ]
    assert names(graph.upstream(T("gold.top_customers"), transitive=False)) == ["gold.revenue"]


def test_upstream_holds_only_models(graph: ModelGraph) -> None:
    assert graph.upstream("silver.orders") == []
    assert graph.upstream("bronze.orders") == []


def test_downstream_of_a_model_and_of_a_source(graph: ModelGraph) -> None:
    assert names(graph.downstream("silver.customers")) == [
        "gold.customer_count",
        "gold.revenue",
        "gold.top_customers",
    ]
    assert names(graph.downstream("silver.customers", transitive=False)) == [
        "gold.customer_count",
        "gold.revenue",
    ]
    assert names(graph.downstream("bronze.fx")) == [
        "silver.fx",
        "gold.revenue",
        "gold.top_customers",
    ]


def test_unknown_table_names_close_matches(graph: ModelGraph) -> None:
    with pytest.raises(
        TransformError, match=re.escape("gold.revenu is neither a model nor a source")
    ) as raised:
        graph.downstream("gold.revenu")
    assert raised.value.hint == "did you mean gold.revenue?"


def test_sources_hold_catalog_tables_and_ingestion_targets(graph: ModelGraph) -> None:
    assert graph.sources == {T("bronze.fx"), T("bronze.orders"), T("bronze.customers")}


def test_a_catalog_table_built_by_a_model_is_a_model_not_a_source() -> None:
    built = graph_of(
        make("silver.orders", "bronze.orders"), sources=("bronze.orders", "silver.orders")
    )
    assert built.sources == {T("bronze.orders")}
    assert names(built.order()) == ["silver.orders"]


# -- selectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("gold.revenue", ["gold.revenue"]),
        ("revenue", ["gold.revenue"]),
        ("Gold.Revenue", ["gold.revenue"]),
        ("+gold.revenue", ["silver.customers", "silver.fx", "silver.orders", "gold.revenue"]),
        (
            "silver.customers+",
            ["silver.customers", "gold.customer_count", "gold.revenue", "gold.top_customers"],
        ),
        (
            "+revenue+",
            [
                "silver.customers",
                "silver.fx",
                "silver.orders",
                "gold.revenue",
                "gold.top_customers",
            ],
        ),
        ("tag:daily", ["gold.revenue", "gold.top_customers"]),
        ("layer:silver", ["silver.audit", "silver.customers", "silver.fx", "silver.orders"]),
        ("layer:bronze", []),
        (
            "source:crm",
            ["silver.customers", "gold.customer_count", "gold.revenue", "gold.top_customers"],
        ),
        ("bronze.orders+", ["silver.orders", "gold.revenue", "gold.top_customers"]),
        ("fx+", ["silver.fx", "gold.revenue", "gold.top_customers"]),
        ("tag:vip silver.audit", ["silver.audit", "gold.top_customers"]),
        ("  gold.revenue   gold.revenue  ", ["gold.revenue"]),
        (
            "customer_count silver.orders+",
            ["gold.customer_count", "silver.orders", "gold.revenue", "gold.top_customers"],
        ),
        (
            "+tag:vip",
            [
                "silver.customers",
                "silver.fx",
                "silver.orders",
                "gold.revenue",
                "gold.top_customers",
            ],
        ),
        ("1+gold.top_customers", ["gold.revenue", "gold.top_customers"]),
        ("silver.customers+1", ["silver.customers", "gold.customer_count", "gold.revenue"]),
        (
            "2+gold.top_customers+1",
            [
                "silver.customers",
                "silver.fx",
                "silver.orders",
                "gold.revenue",
                "gold.top_customers",
            ],
        ),
        (
            "@silver.fx",  # what fx feeds, and everything those read
            [
                "silver.customers",
                "silver.fx",
                "silver.orders",
                "gold.revenue",
                "gold.top_customers",
            ],
        ),
        ("silver.*", ["silver.audit", "silver.customers", "silver.fx", "silver.orders"]),
        ("*customer*", ["silver.customers", "gold.customer_count", "gold.top_customers"]),
        ("layer:silver,+gold.revenue", ["silver.customers", "silver.fx", "silver.orders"]),
        ("tag:daily,tag:vip silver.audit", ["silver.audit", "gold.top_customers"]),
        (
            "materialized:table,layer:gold",
            ["gold.customer_count", "gold.revenue", "gold.top_customers"],
        ),
    ],
)
def test_select(graph: ModelGraph, expression: str, expected: list[str]) -> None:
    assert names(graph.select(expression)) == expected


@pytest.mark.parametrize(
    ("expression", "message", "hint"),
    [
        ("gold.revenu", "gold.revenu is neither a model nor a source table", "gold.revenue"),
        ("revenu", "no model or source table is called revenu", "revenue"),
        ("platinum.x", "unknown layer 'platinum'", "layers are"),
        ("tag:dayly", "no model has tag 'dayly'", "did you mean tag:daily?"),
        ("tag:nightly", "no model has tag 'nightly'", "known: tag:daily, tag:vip"),
        ("layer:platinum", "unknown layer 'platinum'", "layer:bronze, layer:silver, layer:gold"),
        ("source:shop_order", "unknown ingestion source", "did you mean source:shop_orders?"),
        ("source:erp", "unknown ingestion source 'erp'", "known: source:crm, source:shop_orders"),
        ("owner:me", "unknown selector method 'owner'", "tag:, layer:, materialized:, source:"),
        ("materialized:scd2", "no model is materialized as 'scd2'", "materialized:table"),
        ("0+gold.revenue", "goes 0 steps", "1+name"),
        ("@+gold.revenue", "puts @ and + before a name", "@name already"),
        ("gold.rev*x", "no model matches 'gold.rev*x'", "did you mean gold.revenue?"),
        ("bronze.orders", "bronze.orders is a source table, not a model", "`bronze.orders+`"),
        ("+bronze.fx", "bronze.fx is a source table, not a model", "`bronze.fx+`"),
        ("+", "names nothing", "selectors are"),
        ("", "empty selector", "gold.revenue"),
        ("gold.revenue tag:nope", "no model has tag 'nope'", "known:"),
    ],
)
def test_select_errors_say_what_is_wrong(
    graph: ModelGraph, expression: str, message: str, hint: str
) -> None:
    with pytest.raises(TransformError) as raised:
        graph.select(expression)
    assert message in raised.value.message
    assert raised.value.hint is not None
    assert hint in raised.value.hint


def test_state_selects_models_new_or_changed_since_their_last_build() -> None:
    states = {"silver.orders": "modified", "silver.fx": "new", "gold.revenue": "unchanged"}
    graph = ModelGraph(
        {m.name: m for m in MEDALLION},
        {T("bronze.fx")},
        source_targets={k: T(v) for k, v in TARGETS.items()},
        state=lambda model: states.get(str(model.name), "unchanged"),
    )
    assert names(graph.select("state:new")) == ["silver.fx"]
    assert names(graph.select("state:modified")) == ["silver.fx", "silver.orders"]
    assert names(graph.select("state:modified+,layer:gold")) == [
        "gold.revenue",
        "gold.top_customers",
    ]
    with pytest.raises(TransformError, match="unknown state 'changed'") as raised:
        graph.select("state:changed")
    assert "state:modified" in (raised.value.hint or "")


def test_state_and_result_need_the_lakehouse(graph: ModelGraph) -> None:
    with pytest.raises(TransformError, match="needs the lakehouse"):
        graph.select("state:modified")
    with pytest.raises(TransformError, match="needs the lakehouse"):
        graph.select("result:failed")


def test_result_selects_by_how_models_ended_in_the_last_run() -> None:
    ended = {"silver.orders": "failed", "gold.revenue": "skipped", "silver.fx": "success"}
    graph = ModelGraph(
        {m.name: m for m in MEDALLION},
        {T("bronze.fx")},
        source_targets={k: T(v) for k, v in TARGETS.items()},
        results=lambda: ended,
    )
    assert names(graph.select("result:failed")) == ["silver.orders"]
    assert names(graph.select("result:failed+")) == [
        "silver.orders",
        "gold.revenue",
        "gold.top_customers",
    ]
    assert names(graph.select("result:failed result:skipped")) == [
        "silver.orders",
        "gold.revenue",
    ]


def test_bare_name_in_two_layers_is_ambiguous() -> None:
    graph = graph_of(
        make("silver.customers", "bronze.customers"),
        make("gold.customers", "silver.customers"),
        sources=("bronze.customers",),
    )
    with pytest.raises(
        TransformError, match=re.escape("customers is ambiguous: gold.customers, silver.customers")
    ):
        graph.select("customers")
    assert names(graph.select("silver.customers+")) == ["silver.customers", "gold.customers"]


def test_bare_name_prefers_a_model_over_a_source(graph: ModelGraph) -> None:
    assert names(graph.select("orders")) == ["silver.orders"]


# -- validation ------------------------------------------------------------------------------


def test_unknown_input_names_file_line_and_close_matches() -> None:
    with pytest.raises(ModelError) as raised:
        graph_of(
            make("silver.orders", "bronze.orders"),
            make("gold.revenue", "silver.fx", "silver.order"),
            sources=("bronze.orders", "silver.fx"),
        )
    error = raised.value
    assert not isinstance(error, CycleError)
    assert error.file == str(Path("models/gold/revenue.sql"))
    assert error.line == 3
    assert error.model == "gold.revenue"
    assert "gold.revenue reads silver.order, which is neither a model nor a source table" in str(
        error
    )
    assert error.hint == "did you mean silver.orders?"


def test_unknown_input_without_close_matches() -> None:
    with pytest.raises(ModelError) as raised:
        graph_of(make("gold.revenue", "silver.zzz_unrelated"))
    assert raised.value.hint is not None
    assert "add a model or an ingestion source" in raised.value.hint


def test_two_model_cycle_prints_the_cycle() -> None:
    with pytest.raises(CycleError) as raised:
        graph_of(
            make("silver.a", "bronze.x", "silver.b"),
            make("silver.b", "silver.a"),
            sources=("bronze.x",),
        )
    error = raised.value
    assert error.cycle == ["silver.a", "silver.b", "silver.a"]
    assert "models depend on each other in a cycle: silver.a → silver.b → silver.a" in str(error)
    # silver.a's reference to silver.b closes the cycle: its file, on the line of that input.
    assert error.file == str(Path("models/silver/a.sql"))
    assert error.line == 3
    assert isinstance(error, ModelError)
    assert isinstance(error, TransformError)


def test_longer_cycle_is_printed_in_data_flow_order() -> None:
    models = [
        make("silver.a", "silver.c"),
        make("silver.b", "silver.a"),
        make("silver.c", "silver.b"),
        make("gold.report", "silver.a"),  # downstream of the cycle, not on it
        make("gold.other", "gold.report"),
    ]
    for ordering in (models, list(reversed(models))):
        with pytest.raises(CycleError) as raised:
            graph_of(*ordering)
        assert raised.value.cycle == ["silver.a", "silver.b", "silver.c", "silver.a"]
        assert "silver.a → silver.b → silver.c → silver.a" in str(raised.value)


def test_model_reading_its_own_table_is_a_cycle() -> None:
    with pytest.raises(CycleError, match=re.escape("silver.a → silver.a")) as raised:
        graph_of(make("silver.a", "bronze.x", "silver.a"), sources=("bronze.x",))
    assert raised.value.line == 3


def test_model_that_is_also_an_ingestion_target() -> None:
    with pytest.raises(ModelError) as raised:
        graph_of(make("bronze.orders"), targets={"shop_orders": "bronze.orders"})
    assert "bronze.orders is both a model and the target of ingestion source 'shop_orders'" in str(
        raised.value
    )
    assert raised.value.file == str(Path("models/bronze/orders.sql"))


def test_models_must_be_keyed_by_their_own_name() -> None:
    model = make("silver.a")
    with pytest.raises(
        TransformError, match=re.escape("model silver.a is registered under silver.b")
    ):
        ModelGraph({T("silver.b"): model})
