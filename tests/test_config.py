from __future__ import annotations

from pathlib import Path

import pytest

from lakebed.config import (
    CONFIG_FILE,
    DEFAULT_STORAGE,
    ENV_OVERRIDES,
    DomainConfig,
    ProjectConfig,
    default_config_text,
    load_config,
    parse_config,
    undeclared,
)
from lakebed.errors import ConfigError, Terminal

FILE = "proj/lakebed.yml"


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ENV_OVERRIDES:
        monkeypatch.delenv(env, raising=False)


def config_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file=FILE)
    return info.value


def test_valid_file_is_parsed_into_typed_config() -> None:
    config = parse_config(
        "name: shop\n"
        "storage: s3://bucket/lake\n"
        "metastore: postgresql://lake@db/lake\n"
        "engine: duckdb\n"
        "domains:\n"
        "  sales:\n"
        "    owner: ana@example.com\n"
        "    description: orders and refunds\n"
        "sources:\n"
        "  shopify:\n"
        "    kind: http\n",
        file=FILE,
    )
    assert config.name == "shop"
    assert config.storage == "s3://bucket/lake"
    assert config.metastore == "postgresql://lake@db/lake"
    assert config.domains == {
        "sales": DomainConfig(owner="ana@example.com", description="orders and refunds")
    }
    assert config.sources == {"shopify": {"kind": "http"}}


def test_a_source_and_a_pipeline_may_not_share_a_quarantine_table() -> None:
    error = config_error(
        "sources:\n  orders: {kind: files, path: x.csv, target: bronze.orders}\n"
        "pipelines:\n  orders: {topic: orders, target: bronze.order_events}\n"
    )
    assert "quarantine.orders" in str(error)
    assert "rename one of them" in str(error)


def test_empty_text_gives_the_defaults() -> None:
    config = parse_config("", file=FILE)
    assert config == ProjectConfig()
    assert config.storage == DEFAULT_STORAGE
    assert config.metastore is None
    assert config.engine == "duckdb"


def test_a_section_left_empty_has_none() -> None:
    text = "sources:\n  # orders: {kind: files, path: x.csv}\nchecks:\npipelines:\ndomains:\n"
    assert parse_config(text, file=FILE) == ProjectConfig()


def test_config_is_frozen() -> None:
    config = parse_config("name: a\n")
    with pytest.raises(ValueError, match="frozen"):
        config.name = "b"  # type: ignore[misc]


def test_default_config_text_round_trips() -> None:
    config = parse_config(default_config_text("demo"))
    assert config.name == "demo"
    assert config.storage == DEFAULT_STORAGE


def test_unknown_top_level_key_names_file_line_key_and_the_valid_keys() -> None:
    error = config_error("name: shop\n\nstorag: lake\n")
    assert (error.file, error.line, error.key) == (FILE, 3, "storag")
    assert str(error).startswith(f"{FILE}:3: `storag`: unknown key (did you mean storage?")
    for key in ("name", "storage", "metastore", "engine", "bus", "domains", "sources"):
        assert key in error.message
    assert isinstance(error, Terminal)


def test_unknown_nested_key_lists_the_keys_of_its_own_section() -> None:
    error = config_error("domains:\n  sales:\n    owner: ana\n    colour: red\n")
    assert (error.line, error.key) == (4, "domains.sales.colour")
    assert "unknown key (known keys: owner, description)" in error.message
    assert "storage" not in error.message


def test_wrong_type_shows_the_value_it_got() -> None:
    error = config_error("name: shop\ndomains:\n  sales: 3\n")
    assert (error.line, error.key) == (3, "domains.sales")
    assert "(got 3)" in error.message


def test_wrong_literal_value_names_the_allowed_one() -> None:
    error = config_error("engine: spark\n")
    assert (error.line, error.key) == (1, "engine")
    assert "'duckdb'" in error.message
    assert "(got 'spark')" in error.message


def test_bad_metastore_url_is_rejected() -> None:
    error = config_error("name: a\nmetastore: mysql://lake@db/lake\n")
    assert (error.line, error.key) == (2, "metastore")
    assert "expected a sqlite:/// or postgresql:// URL" in error.message


def test_bad_metastore_url_error_does_not_echo_the_password() -> None:
    error = config_error("metastore: mysql://lake:s3cr3t-pw@db/lake\n")
    assert error.key == "metastore"
    assert "s3cr3t-pw" not in str(error)


def test_several_problems_are_counted() -> None:
    error = config_error("nme: a\nengine: spark\nbus: [1]\n")
    assert "(and 2 more problems)" in error.message


def test_yaml_syntax_error_names_the_line_with_a_hint() -> None:
    error = config_error("name: shop\nstorage: lake\n  metastore: : [\n")
    assert error.file == FILE
    assert error.line == 3
    assert error.key is None
    assert "not valid YAML" in error.message
    assert error.hint == "check indentation and quoting"


def test_top_level_must_be_a_mapping() -> None:
    error = config_error("- name\n- storage\n")
    assert error.line == 1
    assert "expected a mapping of keys at the top level, got list" in error.message


@pytest.mark.parametrize(
    ("env", "value", "attribute"),
    [
        ("LAKEBED_STORAGE", "/data/lake", "storage"),
        ("LAKEBED_METASTORE", "postgresql://u@h/db", "metastore"),
        ("LAKEBED_ENGINE", "duckdb", "engine"),
    ],
)
def test_environment_overrides_the_file(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, attribute: str
) -> None:
    monkeypatch.setenv(env, value)
    config = parse_config("storage: lake\nmetastore: sqlite:///x.db\nengine: duckdb\n")
    assert getattr(config, attribute) == value


def test_empty_environment_variable_does_not_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKEBED_STORAGE", "")
    assert parse_config("storage: lake\n").storage == "lake"


def test_invalid_environment_override_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKEBED_METASTORE", "mysql://h/db")
    error = config_error("name: a\n")
    assert error.key == "metastore"
    assert "expected a sqlite:/// or postgresql:// URL" in error.message


def test_invalid_environment_override_is_blamed_on_the_variable_not_a_file_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The value came from $LAKEBED_METASTORE; pointing at line 2 of the file misleads.
    monkeypatch.setenv("LAKEBED_METASTORE", "mysql://h/db")
    error = config_error("name: a\nmetastore: sqlite:///ok.db\n")
    assert "LAKEBED_METASTORE" in str(error)
    assert error.line is None


def test_load_config_reads_lakebed_yml(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("name: shop\nstorage: tables\n", encoding="utf-8")
    config = load_config(tmp_path)
    assert (config.name, config.storage) == ("shop", "tables")


def test_load_config_without_a_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path) == ProjectConfig()


def test_load_config_errors_name_the_full_path(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_FILE
    path.write_text("name: shop\nsurprise: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.file == str(path)
    assert str(info.value).startswith(f"{path}:2: `surprise`: unknown key")


def test_load_config_reports_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_an_undeclared_source_or_pipeline_is_named_with_close_matches() -> None:
    error = undeclared("source", "ordres", ["orders", "customers"])
    assert error.message == "no source named 'ordres' in lakebed.yml (sources: customers, orders)"
    assert error.hint == "did you mean orders?"
    error = undeclared("pipeline", "clicks", [])
    assert "(pipelines: none are declared)" in error.message
    assert error.hint == "declare it under `pipelines:` in lakebed.yml"
