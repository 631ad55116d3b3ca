"""Find a project's models: `models/<layer>/<name>.sql` or `.py`, with an optional `<name>.yml`.

A SQL model's inputs are read from its query (sqlglot, DuckDB dialect): every `layer.name`
table reference, minus the names of CTEs. A Python model's inputs are declared in its
`@model` decorator. Every problem is a `ModelError` naming the file, the line and the fix.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError
from sqlglot import Token, TokenType, exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError

from lakebed.config import config_error, load_yaml
from lakebed.errors import ConfigError, InvalidTableNameError, ModelError
from lakebed.process.pruning import table_name_of
from lakebed.storage import LAYERS, TableName
from lakebed.transform.decorator import spec_of
from lakebed.transform.definition import Model, ModelConfig

MODELS_DIR = "models"
# Layers a model may build; quarantine tables are written by checks, not by models.
MODEL_LAYERS = ("bronze", "silver", "gold")
MODEL_SUFFIXES = (".sql", ".py")
SETTINGS_SUFFIX = ".yml"
DIALECT = "duckdb"

# Table functions that generate rows instead of reading them.
_GENERATORS = (exp.GenerateSeries, exp.ExplodingGenerateSeries)

_ONE_SELECT_HINT = (
    "write the query that produces the table; lakebed creates, replaces or merges into "
    "the table itself"
)


@dataclass(frozen=True)
class SqlModel:
    """What the text of a SQL model holds: its query and the tables it reads."""

    sql: str  # the query as written, without a trailing `;`
    inputs: tuple[TableName, ...]  # in order of first appearance
    input_lines: dict[TableName, int]  # 1-based line of each input's first reference


# Problems across settings (ModelConfig's own checks): a word of the message, the setting
# whose line the error points at, the fix.
_ACROSS_SETTINGS = [
    ("unique_key", "materialized", "add `unique_key: [column, ...]`"),
    ("properties", "materialized", "remove `properties`, or make the model a table"),
    ("full_refresh", "full_refresh", "remove `full_refresh`, or make the model incremental"),
    ("set one", "updated_at", "keep updated_at (timestamps) or check_cols (values), not both"),
    ("scd2 model's keys", "materialized", "remove them, or make the model `materialized: scd2`"),
    ("", "materialized", "see the model settings in the README"),
]


def load_models(project_dir: Path) -> dict[TableName, Model]:
    """Every model under `project_dir/models`, by output table name (sorted)."""
    files: dict[TableName, dict[str, Path]] = {}
    for path, relative, root in _model_files(project_dir):
        files.setdefault(_table_of(path, relative, root), {})[path.suffix.lower()] = path
    models: dict[TableName, Model] = {}
    for name, found in sorted(files.items()):
        settings = found.get(SETTINGS_SUFFIX)
        sql_path, py_path = found.get(".sql"), found.get(".py")
        if sql_path is not None and py_path is not None:
            raise ModelError(
                f"two models build {name}: {sql_path.name} and {py_path.name}",
                file=str(py_path),
                model=str(name),
                hint="keep one of them",
            )
        if sql_path is not None:
            models[name] = _load_sql(sql_path, name, settings)
        elif py_path is not None:
            models[name] = _load_python(py_path, name, settings)
        elif settings is not None:
            raise ModelError(
                f"settings without a model: there is no {name.name}.sql or {name.name}.py "
                "beside this file",
                file=str(settings),
                model=str(name),
                hint="rename it after its model, or delete it",
            )
    return models


def model_tables(project_dir: Path) -> dict[TableName, Path]:
    """The table each model file under `project_dir/models` builds, told by its path alone
    (nothing parsed; misplaced files are left for `load_models` to report): the tables
    ingestion and streams must not write."""
    tables: dict[TableName, Path] = {}
    for path, relative, root in _model_files(project_dir):
        if path.suffix.lower() in MODEL_SUFFIXES:
            with contextlib.suppress(ModelError):
                tables[_table_of(path, relative, root)] = path
    return tables


def _model_files(project_dir: Path) -> Iterator[tuple[Path, Path, Path]]:
    """Each file under models/ that may be a model or its settings: its path, its path
    relative to models/, and models/."""
    root = project_dir / MODELS_DIR
    if not root.is_dir():
        return
    found: list[tuple[str, str]] = []  # (folder relative to models/, file name)
    # os.walk rather than Path.rglob: a run lists the models every time.
    for folder, folders, names in os.walk(root):
        folders[:] = [f for f in folders if not f.startswith(".") and f != "__pycache__"]
        within = os.path.relpath(folder, root)
        for name in names:
            if name.startswith(".") or name == "__init__.py":
                continue
            if os.path.splitext(name)[1].lower() in (*MODEL_SUFFIXES, SETTINGS_SUFFIX, ".yaml"):
                found.append(("" if within == "." else within, name))  # not READMEs, notes
    for within, name in sorted(found, key=lambda f: [*f[0].split(os.sep), f[1]]):
        relative = Path(within, name)
        path = root / relative
        if path.is_file():  # not a broken link
            yield path, relative, root


def _table_of(path: Path, relative: Path, root: Path) -> TableName:
    """The output table of a file at `models/<layer>/<name>.<suffix>`, or a ModelError."""
    layers = ", ".join(MODEL_LAYERS)
    example = root / "silver" / path.name
    if path.suffix != path.suffix.lower() or path.suffix == ".yaml":
        fixed = path.with_suffix(".yml" if path.suffix.lower() == ".yaml" else path.suffix.lower())
        raise ModelError(
            f"model files end in .sql, .py or .yml, not {path.suffix}",
            file=str(path),
            hint=f"rename it to {fixed.name}",
        )
    if len(relative.parts) == 1:
        raise ModelError(
            "a model file sits in a layer folder, not in models/ itself",
            file=str(path),
            hint=f"move it to {example} (layer folders: {layers})",
        )
    layer = relative.parts[0]
    if layer not in MODEL_LAYERS:
        close = _suggest_name(layer)
        hint = f"layer folders are {layers}"
        if close in MODEL_LAYERS and close != layer:
            hint = f"rename the folder to {close} ({hint})"
        raise ModelError(f"unknown layer folder {layer!r}", file=str(path), hint=hint)
    if len(relative.parts) > 2:
        raise ModelError(
            "a model file sits directly in its layer folder, not in a sub-folder",
            file=str(path),
            hint=f"move it to {root / layer / path.name}",
        )
    try:
        if path.stem != path.stem.lower():
            raise InvalidTableNameError("table names are lower-case", table=path.stem)
        return TableName.parse(f"{layer}.{path.stem}")
    except InvalidTableNameError as exc:
        raise ModelError(
            f"{path.stem!r} is not a table name",
            file=str(path),
            hint=f"rename it to {_suggest_name(path.stem)}{path.suffix}: lower-case letters, "
            "digits and underscores, starting with a letter",
        ) from exc


def _suggest_name(stem: str) -> str:
    """A valid table name close to `stem`: dailyRevenue, Daily-Revenue → daily_revenue."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", stem).lower()
    snake = re.sub(r"[^a-z0-9_]+", "_", snake).strip("_") or "model"
    return f"m_{snake}" if snake[0].isdigit() else snake


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read the file: {exc}", file=str(path)) from exc


def _load_settings(path: Path, name: TableName) -> ModelConfig:
    """The model settings of a `<name>.yml`."""
    return _settings_of(_read(path), path, name)


@lru_cache(maxsize=1024)
def _settings_of(text: str, path: Path, name: TableName) -> ModelConfig:
    """The settings `text` holds (validated once per text: every run reads them all)."""
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ModelError(
            f"not valid YAML: {problem}",
            file=str(path),
            line=mark.line + 1 if mark is not None else None,
            model=str(name),
            hint="check indentation and quoting",
        ) from exc
    if raw is None:
        return ModelConfig()
    if not isinstance(raw, dict):
        raise ModelError(
            f"expected a mapping of settings, got {type(raw).__name__}",
            file=str(path),
            line=1,
            model=str(name),
            hint="for example `materialized: table` "
            f"(settings: {', '.join(ModelConfig.model_fields)})",
        )
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:
            # A check across settings: point at the setting the message is about.
            message = first["msg"].removeprefix("Value error, ")
            key, hint = next((key, hint) for word, key, hint in _ACROSS_SETTINGS if word in message)
            found = re.search(rf"^{key}\s*:", text, flags=re.MULTILINE)
            raise ModelError(
                message,
                file=str(path),
                line=text.count("\n", 0, found.start()) + 1 if found else None,
                model=str(name),
                hint=hint,
            ) from exc
        error = config_error(exc, file=str(path), text=text, model=ModelConfig)
        raise _model_error(error, name) from exc


def _model_error(error: ConfigError, name: TableName) -> ModelError:
    """The same problem as a ModelError (the message without ConfigError's location prefix)."""
    where = ""
    if error.file is not None:
        where = error.file if error.line is None else f"{error.file}:{error.line}"
        where += ": "
    if error.key is not None:
        where += f"`{error.key}`: "
    return ModelError(
        error.message.removeprefix(where),
        file=error.file,
        line=error.line,
        key=error.key,
        model=str(name),
        hint=error.hint,
    )


# -- SQL models ------------------------------------------------------------------------------


def _load_sql(path: Path, name: TableName, settings: Path | None) -> Model:
    parsed = _parsed(_read(path), str(path))
    config = _load_settings(settings, name) if settings is not None else ModelConfig()
    return Model(
        name=name,
        path=path,
        kind="sql",
        inputs=parsed.inputs,
        config=config,
        sql=parsed.sql,
        input_lines=parsed.input_lines,
    )


@lru_cache(maxsize=1024)
def _parsed(text: str, file: str) -> SqlModel:
    """`parse_sql_model`, once per text: a scheduler or server loads the same models again
    and again (errors are not kept, so a broken model is reported every time)."""
    return parse_sql_model(text, file=file)


def parse_sql_model(text: str, *, file: str = "<sql>") -> SqlModel:
    """The query of a SQL model and the `layer.name` tables it reads; raise `ModelError`
    when the text is not exactly one SELECT or refers to a table not as `layer.name`."""
    dialect = Dialect.get_or_raise(DIALECT)
    tokenizer = dialect.tokenizer()
    try:
        tokens = tokenizer.tokenize(text)
    except TokenError as exc:
        # What failed to tokenize starts right after the last token read.
        read = tokenizer.tokens
        offset = read[-1].end + 1 if read else 0
        offset += len(text[offset:]) - len(text[offset:].lstrip())
        opened = text[offset : offset + 2]
        what = "/* comment" if opened == "/*" else f"quote {opened[:1]}" if opened else "text"
        raise ModelError(
            f"SQL does not parse: unterminated {what}",
            file=file,
            line=text.count("\n", 0, offset) + 1,
            hint="close every quoted string, quoted identifier and /* comment */",
        ) from exc
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    chunks = [chunk for chunk in statements if chunk]
    if not chunks:
        raise ModelError(
            "the file holds no query: a model is one SELECT",
            file=file,
            line=1,
            hint=_ONE_SELECT_HINT,
        )
    if len(chunks) > 1:
        raise ModelError(
            f"a model is one SELECT, but this file holds {len(chunks)} statements",
            file=file,
            line=chunks[1][0].line,
            hint="put each query in a model of its own, or combine them with WITH",
        )
    (chunk,) = chunks
    try:
        parsed = dialect.parser().parse(chunk, text)
    except ParseError as exc:
        detail = exc.errors[0] if exc.errors else {}
        near = str(detail.get("highlight") or "").strip()
        hint = "a model is one SELECT in DuckDB SQL that refers to tables as layer.name"
        if "{{" in text or "{%" in text:
            hint = "models are plain SQL without templating; refer to tables as layer.name"
        raise ModelError(
            f"SQL does not parse: {_readable(str(detail.get('description') or exc))}"
            + (f" (near {near!r})" if near else ""),
            file=file,
            line=detail.get("line"),
            hint=hint,
        ) from exc
    queries = [node for node in parsed if node is not None and not isinstance(node, exp.Semicolon)]
    if len(queries) != 1 or not isinstance(queries[0], exp.Query):
        raise ModelError(
            f"a model is one SELECT, not {chunk[0].text.upper()}",
            file=file,
            line=chunk[0].line,
            hint=_ONE_SELECT_HINT,
        )
    inputs, lines = _table_references(queries[0], text, file)
    # Leading comments stay with the query; anything before a stray `;` does not.
    start = 0 if tokens[0] is chunk[0] else chunk[0].start
    return SqlModel(sql=text[start : chunk[-1].end + 1].strip(), inputs=inputs, input_lines=lines)


def _readable(description: str) -> str:
    """sqlglot's parse error without Python reprs of its tokens and classes."""
    description = re.sub(
        r"<Token token_type: [\w.]+, text: (.*?), line: .*?>", r"'\1'", description
    )
    description = re.sub(r"<class '[\w.]*\.(\w+)'>", lambda m: m.group(1).upper(), description)
    return description.replace("keyword: 'this' missing for", "expression missing after")


def _table_references(
    query: exp.Expr, text: str, file: str
) -> tuple[tuple[TableName, ...], dict[TableName, int]]:
    """Every `layer.name` the query reads, in order of first appearance, with its line."""
    found: list[tuple[int, int, TableName]] = []
    # In text order, so that of several problems the first one written is reported.
    tables = sorted(
        ((_position(table, text), table) for table in query.find_all(exp.Table)),
        key=lambda item: item[0],
    )
    for (offset, line), table in tables:
        if isinstance(table.this, _GENERATORS):
            continue  # range(...) and generate_series(...) read nothing
        if not isinstance(table.this, exp.Identifier):
            raise ModelError(
                f"{table.this.sql(DIALECT)} reads outside the lakehouse: models read "
                "tables as layer.name",
                file=file,
                line=line,
                hint="bring files and databases in through an ingestion source in lakebed.yml, "
                "then read its bronze table",
            )
        if _written_as_string(table, text):
            raise ModelError(
                f"'{table.name}' reads a file: models read tables as layer.name",
                file=file,
                line=line,
                hint="bring files in through an ingestion source in lakebed.yml, "
                "then read its bronze table",
            )
        name = table_name_of(table)
        if name is None:
            if not table.db and not table.catalog and _is_cte(table):
                continue
            raise _reference_error(table, file, line)
        found.append((offset, line, name))
    lines: dict[TableName, int] = {}
    for _, line, name in found:
        lines.setdefault(name, line)
    return tuple(lines), lines


def _written_as_string(table: exp.Table, text: str) -> bool:
    """`FROM 'data.csv'`: DuckDB reads a file named by a string literal."""
    start = table.this.meta.get("start")
    return not table.db and isinstance(start, int) and text[start : start + 1] == "'"


def _position(table: exp.Table, text: str) -> tuple[int, int]:
    """Offset and 1-based line where a table reference starts."""
    for part in table.parts:
        meta = part.meta
        if "start" in meta and "line" in meta:
            return int(meta["start"]), int(meta["line"])
    if isinstance(table.this, exp.Identifier):
        return _position_of(table.name, text)
    return _position_of(table.this.sql(DIALECT).split("(")[0], text)  # a table function


def _position_of(word: str, text: str) -> tuple[int, int]:
    match = re.search(re.escape(word), text, flags=re.IGNORECASE)
    offset = match.start() if match else 0
    return offset, text.count("\n", 0, offset) + 1


def _is_cte(table: exp.Table) -> bool:
    """Whether an unqualified name refers to a CTE of an enclosing WITH."""
    name = table.name.lower()
    node = table.parent
    while node is not None:
        with_ = node.args.get("with_") or node.args.get("with")
        if isinstance(with_, exp.With) and any(
            cte.alias_or_name.lower() == name for cte in with_.expressions
        ):
            return True
        node = node.parent
    return False


def _reference_error(table: exp.Table, file: str, line: int) -> ModelError:
    written = ".".join(part.name for part in table.parts)
    layers = ", ".join(LAYERS)
    if table.catalog:
        message = f"{written}: refer to tables as layer.name, without a catalog"
        hint = f"write {table.db}.{table.name}"
    elif not table.db:
        message = f"{written} is neither a CTE nor a table: refer to tables as layer.name"
        hint = f"for example silver.{table.name} (layers: {layers}); CTE names need no layer"
    else:
        try:
            TableName.parse(f"{table.db}.{table.name}")
            problem = "is not a lakehouse table"
        except InvalidTableNameError as exc:
            problem = f"is not a table name ({exc.message})"
        message = f"{written} {problem}: refer to tables as layer.name"
        hint = f"layers are {layers}; names are lower-case letters, digits and underscores"
    return ModelError(message, file=file, line=line, hint=hint)


# -- Python models ---------------------------------------------------------------------------


def _load_python(path: Path, name: TableName, settings: Path | None) -> Model:
    source = _read(path)
    module_name = f"lakebed_models.{name.layer}.{name.name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None:
        raise ModelError("cannot be imported as a Python module", file=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up here
    try:
        # Compiled from the text just read: no bytecode cache in the project to go stale.
        exec(compile(source, str(path), "exec"), module.__dict__)
    except ModelError:
        sys.modules.pop(module_name, None)
        raise
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise ModelError(f"not valid Python: {exc.msg}", file=str(path), line=exc.lineno) from exc
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ModelError(
            f"importing the model failed: {type(exc).__name__}: {exc}",
            file=str(path),
            line=_traceback_line(exc, path),
            model=str(name),
        ) from exc
    functions = {
        id(value): value
        for value in vars(module).values()
        if spec_of(value) is not None and getattr(value, "__module__", None) == module_name
    }
    if len(functions) != 1:
        names = ", ".join(sorted(getattr(f, "__name__", "?") for f in functions.values()))
        problem = (
            "has no function decorated with @model"
            if not functions
            else f"has {len(functions)} functions decorated with @model ({names})"
        )
        raise ModelError(
            f"a Python model {problem}",
            file=str(path),
            model=str(name),
            hint="decorate the one function that builds the table with "
            '@lakebed.transform.model(inputs=["layer.name", ...])',
        )
    (function,) = functions.values()
    declared = spec_of(function)
    assert declared is not None
    config = declared.config
    if settings is not None:
        if declared.settings:
            given = ", ".join(sorted(declared.settings))
            raise ModelError(
                f"settings of {name} are given both here and in the @model decorator of "
                f"{declared.function_name}() ({path.name}:{declared.line}: {given})",
                file=str(settings),
                model=str(name),
                hint="keep the settings in one place: this file, or the decorator",
            )
        config = _load_settings(settings, name)
    return Model(
        name=name,
        path=path,
        kind="python",
        inputs=declared.inputs,
        config=config,
        function=function,
        frame=declared.frame,
        input_lines={
            table: _literal_line(source, str(table)) or declared.line for table in declared.inputs
        },
    )


def _traceback_line(exc: BaseException, path: Path) -> int | None:
    """The deepest line of the model file in the traceback of an import error."""
    line = None
    target = str(path)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == target:
            line = frame.lineno
    return line


def _literal_line(source: str, table: str) -> int | None:
    match = re.search(r"""["']""" + re.escape(table) + r"""["']""", source)
    return source.count("\n", 0, match.start()) + 1 if match else None
