"""Tables two writers of a project would both write: refused before either writes.

A model's table is its own (ingestion or a stream writing it would be overwritten by its
next full build), and so is the quarantine table of a model's drop checks (a full build
replaces it). Sources and pipelines sharing a quarantine table are refused by the config.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lakebed.config import CONFIG_FILE, ProjectConfig
from lakebed.errors import ConfigError
from lakebed.storage import TableName
from lakebed.transform import Model, model_tables
from lakebed.transform.graph import close_matches

__all__ = ["refuse_model_table", "refuse_shared_quarantine"]


def refuse_shared_quarantine(config: ProjectConfig, models: Iterable[Model]) -> None:
    """A ConfigError when a model's drop checks would keep their rows in the quarantine
    table of a source or pipeline (`quarantine.<name>`)."""
    for model in models:
        owner = model.quarantine.name
        if not model.drops_rows or (owner not in config.sources and owner not in config.pipelines):
            continue
        kind = "source" if owner in config.sources else "pipeline"
        raise ConfigError(
            f"{model.name}'s drop checks and {kind} {owner!r} would keep their rows in the "
            f"same table, {model.quarantine}",
            file=str(model.path),
            hint=f"rename the {kind} in {CONFIG_FILE}",
        )


def refuse_unknown_domains(config: ProjectConfig, models: Iterable[Model]) -> None:
    """A ConfigError when a project that declares its domains has a model in another one
    (a misspelt domain would leave the table without its owner, unseen by the domain)."""
    if not config.domains:
        return  # no domains declared: a model's domain is a free label
    for model in models:
        domain = model.config.domain
        if domain is None or domain in config.domains:
            continue
        close = close_matches(domain, config.domains)
        raise ConfigError(
            f"{model.name} is in domain {domain!r}, which {CONFIG_FILE} does not declare",
            file=str(model.path.with_suffix(".yml")),
            key="domain",
            hint=f"did you mean {', '.join(close)}?"
            if close
            else f"declared domains: {', '.join(sorted(config.domains))}",
        )


def refuse_model_table(root: Path, target: TableName, writer: str) -> None:
    """A ConfigError when `target`, which `writer` (`source 'x'`) writes, is a model's."""
    path = model_tables(root).get(target)
    if path is not None:
        raise ConfigError(
            f"{writer} writes {target}, which the model {path.relative_to(root)} builds: "
            "the model's next full build would replace what it wrote",
            file=str(root / CONFIG_FILE),
            hint="point its target at another table (bronze.*), or rename the model",
        )
