"""Typed project configuration, loaded from `lakebed.yml` plus `LAKEBED_*` environment overrides.

A project is a folder holding `lakebed.yml`. Every key is validated on load; an error names the
file, the line, the key and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from datetime import UTC, datetime
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal

import yaml
from croniter import croniter
from croniter.croniter import CroniterError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lakebed.errors import ConfigError

CONFIG_FILE = "lakebed.yml"
STATE_DIR = ".lakebed"
DEFAULT_STORAGE = "lakehouse"

# Environment variables that override keys of lakebed.yml (12-factor style deployment).
ENV_OVERRIDES = {
    "LAKEBED_STORAGE": "storage",
    "LAKEBED_METASTORE": "metastore",
    "LAKEBED_ENGINE": "engine",
    "LAKEBED_BUS": "bus",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DomainConfig(_Model):
    """A data-mesh domain: who owns its tables and what they are for."""

    owner: str | None = None
    description: str | None = None


class ProjectConfig(_Model):
    """The contents of `lakebed.yml`."""

    name: str = "lakebed"
    storage: str = DEFAULT_STORAGE
    metastore: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is a SQLite file at .lakebed/metastore.db",
    )
    engine: Literal["duckdb"] = "duckdb"
    bus: str = "local"
    domains: dict[str, DomainConfig] = Field(default_factory=dict)
    # Later layers (ingest, transform, ...) own these sections; kept as plain data until then.
    sources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Quality checks of tables no model builds (bronze, stream outputs): table → checks.
    checks: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section left empty (`sources:` with every entry commented out) has none."""
        if isinstance(data, dict):
            empty = ("domains", "sources", "pipelines", "checks")
            return {k: v for k, v in data.items() if not (k in empty and v is None)}
        return data

    @model_validator(mode="after")
    def _one_quarantine_each(self) -> ProjectConfig:
        shared = sorted(set(self.sources) & set(self.pipelines))
        if shared:
            raise ValueError(
                f"source and pipeline {shared[0]!r} would keep their bad records in the same "
                f"table, quarantine.{shared[0]}: rename one of them"
            )
        return self

    @field_validator("bus")
    @classmethod
    def _check_bus(cls, url: str) -> str:
        if url != "local" and not url.startswith("kafka://"):
            raise ValueError("expected `local` (the embedded log) or kafka://host:port")
        return url

    @field_validator("metastore")
    @classmethod
    def _check_metastore(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("sqlite", "postgresql")):
            raise ValueError("expected a sqlite:/// or postgresql:// URL")
        return url


def default_config_text(name: str) -> str:
    """The `lakebed.yml` written by `lakebed init`."""
    return (
        f"# lakebed project configuration: every key is optional.\n"
        f"name: {name}\n"
        f"# folder (relative to this file) holding the Delta tables\n"
        f"storage: {DEFAULT_STORAGE}\n"
        f"# metastore: postgresql://user:pass@host/db  (default: SQLite in .lakebed/)\n"
        f"engine: duckdb\n"
        f"# bus: kafka://localhost:9092  (default: the embedded log in .lakebed/bus)\n"
        f"domains: {{}}\n"
    )


def _mask_secrets(value: Any) -> Any:
    """A URL's password replaced by *** so errors can be shown and logged."""
    if isinstance(value, str):
        return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", value)
    return value


def key_line(text: str, *path: str) -> int | None:
    """The 1-based line of the key at `path` in a YAML document, if it is there."""
    return _key_lines(text).get(path)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML document to its 1-based line, for error messages."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key_path = (*path, str(key_node.value))
                lines[key_path] = key_node.start_mark.line + 1
                walk(value_node, key_path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*path, str(index))] = item.start_mark.line + 1
                walk(item, (*path, str(index)))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _model_at(loc: tuple[str, ...], root: type[BaseModel]) -> type[BaseModel]:
    """The config model that holds the key at `loc` (to list its valid keys)."""
    model: type[BaseModel] = root
    expect_mapping_key = False
    for part in loc:
        if expect_mapping_key:
            expect_mapping_key = False
            continue
        field = model.model_fields.get(part)
        if field is None:
            break
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        inner = args[-1] if args else annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            model = inner
            expect_mapping_key = bool(args)
    return model


# libyaml's loader where PyYAML was built with it: the pure-Python one takes a millisecond or
# more per small file, and a run reads every model's settings.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, through libyaml when it is there (`yaml.YAMLError` on bad input)."""
    return yaml.load(text, Loader=_YAML_LOADER)


def parse_config(text: str, *, file: str = CONFIG_FILE) -> ProjectConfig:
    """Validate the text of a `lakebed.yml`; raise `ConfigError` naming file, line and key."""
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"not valid YAML: {problem}", file=file, line=line, hint="check indentation and quoting"
        ) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"expected a mapping of keys at the top level, got {type(raw).__name__}",
            file=file,
            line=1,
        )
    from_env: dict[str, str] = {}
    for env, key in ENV_OVERRIDES.items():
        if os.environ.get(env):
            raw[key] = os.environ[env]
            from_env[key] = env
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        variable = from_env.get(str(loc[0])) if loc else None
        raise config_error(
            exc, file=file, text=text, model=ProjectConfig, env_variable=variable
        ) from exc


def undeclared(kind: str, name: str, declared: Collection[str]) -> ConfigError:
    """The error for a source or pipeline (`kind`) that lakebed.yml does not declare: what
    it does declare, and the close matches."""
    close = get_close_matches(name, list(declared), n=3)
    known = ", ".join(sorted(declared)) or "none are declared"
    return ConfigError(
        f"no {kind} named {name!r} in {CONFIG_FILE} ({kind}s: {known})",
        hint=f"did you mean {', '.join(close)}?"
        if close
        else f"declare it under `{kind}s:` in {CONFIG_FILE}",
    )


def config_error(
    exc: ValidationError,
    *,
    file: str,
    text: str,
    model: type[BaseModel],
    loc_prefix: tuple[str, ...] = (),
    env_variable: str | None = None,
) -> ConfigError:
    """A `ConfigError` naming the file, line and key of the first problem pydantic found.

    `loc_prefix` is where `model` sits in the file (e.g. ("sources", "orders")), for
    sections that later layers validate with their own models.
    """
    lines = _key_lines(text)
    errors = exc.errors()
    first = errors[0]
    missing = {str(e["loc"][-1]) for e in errors if e["type"] == "missing" and e["loc"]}
    for error in errors:
        # `pth: x` beside a missing `path`: the misspelt key is the one problem to tell.
        key = str(error["loc"][-1]) if error["loc"] else ""
        if error["type"] == "extra_forbidden" and get_close_matches(key, missing, n=1):
            first = error
            break
    loc = loc_prefix + tuple(str(part) for part in first["loc"])
    line = None
    for depth in range(len(loc), 0, -1):
        line = lines.get(loc[:depth])
        if line is not None:
            break
    message = first["msg"].removeprefix("Value error, ")  # pydantic's own wording
    if first["type"] == "extra_forbidden":
        inner = _model_at(tuple(str(p) for p in first["loc"][:-1]), model)
        known = ", ".join(inner.model_fields)
        close = get_close_matches(str(first["loc"][-1]), list(inner.model_fields), n=1)
        guess = f"did you mean {close[0]}? " if close else ""
        message = f"unknown key ({guess}known keys: {known})"
    elif "input" in first and first["type"] != "missing":
        message = f"{message} (got {_mask_secrets(first['input'])!r})"
    more = len(errors) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    if env_variable is not None:
        # The bad value came from the environment, not from a line of the file.
        return ConfigError(
            message,
            key=".".join(loc),
            file=f"${env_variable}",
            hint=f"fix or unset the environment variable {env_variable}",
        )
    return ConfigError(message, file=file, line=line, key=".".join(loc))


def load_config(project_dir: Path) -> ProjectConfig:
    """Load `lakebed.yml` from a project folder; a folder without one gets the defaults."""
    path = project_dir / CONFIG_FILE
    if not path.exists():
        return parse_config("", file=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from exc
    return parse_config(text, file=str(path))


# -- cron ----------------------------------------------------------------------------------

_CRON_FIELDS = "minute hour day-of-month month day-of-week"
_CRON_MACROS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")


def parse_cron(expression: str) -> str:
    """`expression` with its fields separated by single spaces, or a ValueError saying
    what is wrong (wrong number of fields, a value out of range, a date that never comes)."""
    text = " ".join(str(expression).split())
    if text.startswith("@"):
        if text.lower() not in _CRON_MACROS:
            raise ValueError(f"unknown cron macro {text!r} (known: {', '.join(_CRON_MACROS)})")
        return text.lower()
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        raise ValueError(
            f"a cron expression has 5 fields ({_CRON_FIELDS}), {text!r} has {len(fields)}; "
            "for example '0 * * * *' for every hour"
        )
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValueError(f"invalid cron expression {text!r}: {exc}") from None
    return text
