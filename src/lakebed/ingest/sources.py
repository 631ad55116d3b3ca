"""The `sources:` section of lakebed.yml, validated per connector kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lakebed.config import CONFIG_FILE, config_error, key_line, undeclared
from lakebed.errors import ConfigError, StorageError
from lakebed.ingest.base import (
    Connector,
    ConnectorOptions,
    SourceConfig,
    connector_for,
    connector_kinds,
)
from lakebed.storage import TableName

# Keys every source has; the rest belong to the connector kind.
COMMON_KEYS = frozenset({"kind", "target", "write_disposition", "primary_key", "schema"})
# Keys other tools name a source's kind with (dlt, Airbyte, Meltano configs).
_KIND_LOOKALIKES = ("type", "kind_", "source_type", "connector", "knd")
COMMON_KEYS |= frozenset({"description", "owner", "domain"})


@dataclass(frozen=True)
class SourceSpec:
    """One declared source: its common settings, connector class and validated options."""

    name: str
    config: SourceConfig
    connector: type[Connector]
    options: ConnectorOptions
    target: TableName

    @property
    def quarantine(self) -> TableName:
        return TableName("quarantine", self.name)

    @property
    def app_id(self) -> str:
        """The Delta application-transaction id under which this source commits."""
        return f"lakebed-ingest:{self.name}"


def source_named(sources: dict[str, SourceSpec], name: str) -> SourceSpec:
    """The source `name`, or a ConfigError listing the declared ones and close matches."""
    if name not in sources:
        raise undeclared("source", name, sources)
    return sources[name]


def load_sources(raw: dict[str, dict[str, Any]], project_dir: Path) -> dict[str, SourceSpec]:
    """Validate every source; errors name lakebed.yml, the line and the key."""
    path = project_dir / CONFIG_FILE
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    specs: dict[str, SourceSpec] = {}
    for name, body in raw.items():
        prefix = ("sources", name)
        if not isinstance(body, dict):
            raise ConfigError(
                f"expected a mapping with `kind:` and options, got {type(body).__name__}",
                file=str(path),
                key=".".join(prefix),
            )
        try:
            TableName.parse(f"bronze.{name}")
        except StorageError as exc:
            raise ConfigError(
                f"source name {name!r} must be a plain lower-case identifier",
                file=str(path),
                key=".".join(prefix),
            ) from exc
        if "kind" not in body:
            kinds = ", ".join(sorted(connector_kinds()))
            meant = [k for k in body if k in _KIND_LOOKALIKES and isinstance(body[k], str)]
            raise ConfigError(
                f"a source needs `kind:` ({kinds})",
                file=str(path),
                line=key_line(text, *prefix),
                key=".".join(prefix),
                hint=f"write `kind: {body[meant[0]]}` instead of `{meant[0]}:`"
                if meant
                else f"for example `kind: files` with `path:`; kinds are {kinds}",
            )
        try:
            common = SourceConfig.model_validate(
                {k: v for k, v in body.items() if k in COMMON_KEYS}
            )
        except ValidationError as exc:
            raise config_error(
                exc, file=str(path), text=text, model=SourceConfig, loc_prefix=prefix
            ) from exc
        try:
            connector = connector_for(common.kind)
        except ConfigError as exc:
            raise ConfigError(
                exc.message, file=str(path), key=".".join((*prefix, "kind")), hint=exc.hint
            ) from exc
        own = {k: v for k, v in body.items() if k not in COMMON_KEYS}
        try:
            options = connector.options_model.model_validate(own)
        except ValidationError as exc:
            raise config_error(
                exc, file=str(path), text=text, model=connector.options_model, loc_prefix=prefix
            ) from exc
        target_text = common.target or f"bronze.{name}"
        try:
            target = TableName.parse(target_text)
        except StorageError as exc:
            raise ConfigError(
                exc.message, file=str(path), key=".".join((*prefix, "target"))
            ) from exc
        if common.write_disposition == "merge" and not common.primary_key:
            raise ConfigError(
                "write_disposition merge needs a primary_key",
                file=str(path),
                key=".".join((*prefix, "primary_key")),
                hint="list the key columns, e.g. primary_key: [id]",
            )
        specs[name] = SourceSpec(name, common, connector, options, target)
    return specs
