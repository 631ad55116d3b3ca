"""The `@model` decorator that marks the function of a Python model::

    from lakebed import model

    @model(inputs=["silver.orders", "silver.customers"], frame="polars", materialized="table")
    def revenue(orders, customers):
        return orders.join(customers, on="customer_id")

The function is called with one frame per input, in declared order, and returns Arrow, Polars
or pandas. Keyword arguments other than `inputs` and `frame` are the model's settings
(`ModelConfig` fields); a model sets them here or in its `<name>.yml`, not both.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_args, overload

from pydantic import ValidationError

from lakebed.errors import InvalidTableNameError, ModelError
from lakebed.storage import TableName
from lakebed.transform.definition import FrameKind, ModelConfig

SPEC_ATTRIBUTE = "__lakebed_model__"
FRAME_KINDS: tuple[str, ...] = get_args(FrameKind)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ModelSpec:
    """What `@model` declared on a function: its inputs, frame kind and settings."""

    inputs: tuple[TableName, ...]
    frame: FrameKind
    config: ModelConfig
    # The settings the decorator set explicitly (empty: the defaults, or the `.yml`).
    settings: frozenset[str]
    function_name: str
    file: str
    line: int  # 1-based line of the decorator


def spec_of(obj: object) -> ModelSpec | None:
    """The `@model` declaration of a function, or None if it has none."""
    spec = getattr(obj, SPEC_ATTRIBUTE, None)
    return spec if isinstance(spec, ModelSpec) else None


@overload
def model(function: F, /) -> F: ...


@overload
def model(
    *, inputs: Sequence[str] = (), frame: FrameKind = "arrow", **config: Any
) -> Callable[[F], F]: ...


def model(
    function: F | None = None,
    /,
    *,
    inputs: Sequence[str] = (),
    frame: FrameKind = "arrow",
    **config: Any,
) -> F | Callable[[F], F]:
    """Mark `function` as the builder of a Python model; return it unchanged.

    Raise `ModelError` (at import time, naming the function) when an input is not
    `layer.name`, the frame kind or a setting is invalid, or the function cannot take one
    argument per input.
    """

    def decorate(fn: F) -> F:
        setattr(fn, SPEC_ATTRIBUTE, _spec(fn, inputs, frame, config))
        return fn

    if function is not None:
        return decorate(function)
    return decorate


def _spec(
    fn: Callable[..., Any], inputs: Sequence[str], frame: str, config: dict[str, Any]
) -> ModelSpec:
    code = getattr(fn, "__code__", None)
    file = code.co_filename if code is not None else "<unknown>"
    line = code.co_firstlineno if code is not None else 0
    name = getattr(fn, "__qualname__", repr(fn))

    def error(message: str, hint: str | None = None, key: str | None = None) -> ModelError:
        return ModelError(
            f"@model of {name}(): {message}", file=file, line=line, key=key, hint=hint
        )

    if not callable(fn):
        raise error("decorates something that is not a function")
    if isinstance(inputs, str):
        raise error(
            "inputs must be a list of table names", hint=f'write inputs=["{inputs}"]', key="inputs"
        )
    parsed: list[TableName] = []
    for text in inputs:
        try:
            table = TableName.parse(str(text))
        except InvalidTableNameError as exc:
            raise error(f"input {text!r}: {exc.message}", hint=exc.hint, key="inputs") from exc
        if table in parsed:
            raise error(f"input {table} is listed twice", key="inputs")
        parsed.append(table)
    if frame not in FRAME_KINDS:
        raise error(
            f"unknown frame {frame!r}",
            hint=f"frame is one of {', '.join(FRAME_KINDS)}",
            key="frame",
        )
    try:
        model_config = ModelConfig.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "extra_forbidden":
            known = ", ".join(["inputs", "frame", *ModelConfig.model_fields])
            raise error("unknown setting", hint=f"known settings: {known}", key=key) from exc
        raise error(first["msg"].removeprefix("Value error, "), key=key) from exc
    _check_parameters(fn, len(parsed), error)
    return ModelSpec(
        inputs=tuple(parsed),
        frame=frame,  # type: ignore[arg-type]  # checked against FRAME_KINDS above
        config=model_config,
        settings=frozenset(config),
        function_name=name,
        file=file,
        line=line,
    )


def _check_parameters(
    fn: Callable[..., Any], count: int, error: Callable[[str, str | None], ModelError]
) -> None:
    """The function must accept exactly one positional argument per input."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return  # builtins and C callables: nothing to check
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    keyword_only = [
        p.name
        for p in parameters
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    hint = "the function is called with one frame per input, in declared order"
    if keyword_only:
        raise error(f"required keyword-only parameter {keyword_only[0]!r} gets no value", hint)
    if len(required) > count or (len(positional) < count and not variadic):
        raise error(
            f"takes {_count(len(positional), 'parameter')} but declares {_count(count, 'input')}",
            hint,
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
