"""Reading a table's checks from YAML (compact `- not_null: customer_id` or full
`- range: {column: amount, min: 0, severity: drop}` forms) into `Check` objects: errors
name the table, the check and the fix. `Spec` reads one check's options for its kind.
"""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import date, timedelta
from difflib import get_close_matches
from typing import Any

from lakebed.errors import CheckConfigError
from lakebed.govern.check_kinds import (
    CHECK_KINDS,
    KINDS,
    SEVERITIES,
    Bound,
    Check,
    RowCheck,
    Scalar,
    Tolerance,
)

__all__ = ["Spec", "parse_checks", "parse_duration"]


# -- configuration ------------------------------------------------------------------------


def parse_checks(raw: list[dict[str, Any]], *, table: str, file: str | None = None) -> list[Check]:
    """The checks of `table` from their configuration; `CheckConfigError` says what is wrong."""
    if not isinstance(raw, list):
        raise CheckConfigError(
            f"`checks` must be a list, got {type(raw).__name__}",
            table=table,
            check="checks",
            file=file,
            hint="write one check per item: `checks: [{not_null: customer_id}]`",
        )
    checks: list[Check] = []
    seen: set[str] = set()
    for position, entry in enumerate(raw, 1):
        check = _parse_one(entry, position, table=table, file=file)
        if check.name in seen:
            raise CheckConfigError(
                "two checks have this name",
                table=table,
                check=check.name,
                file=file,
                hint="give one of them a distinct `name:`",
            )
        seen.add(check.name)
        checks.append(check)
    return checks


def _parse_one(entry: Any, position: int, *, table: str, file: str | None) -> Check:
    def error(label: str, message: str, hint: str | None = None) -> CheckConfigError:
        return CheckConfigError(message, table=table, check=label, file=file, hint=hint)

    label = f"#{position}"
    if not isinstance(entry, dict) or not entry:
        raise error(label, f"expected a mapping such as `- not_null: customer_id`, got {entry!r}")
    kinds = [key for key in entry if key in KINDS]
    if len(kinds) != 1:
        if kinds:
            raise error(label, f"names {len(kinds)} kinds ({', '.join(kinds)}); write one each")
        unknown = ", ".join(str(key) for key in entry)
        close = {m for key in entry for m in get_close_matches(str(key), CHECK_KINDS, n=1)}
        guess = f"did you mean {', '.join(sorted(close))}? " if close else ""
        raise error(
            label,
            f"unknown check kind {unknown}",
            hint=f"{guess}kinds are {', '.join(CHECK_KINDS)}",
        )
    kind = kinds[0]
    cls = KINDS[kind]
    value = entry[kind]
    rest = {key: v for key, v in entry.items() if key != kind}
    if isinstance(value, dict):
        both = sorted(set(value) & set(rest))
        if both:
            raise error(f"{kind} {label}", f"sets {', '.join(both)} twice")
        options: dict[str, Any] = {**value, **rest}
    elif value is None:
        options = rest
    elif cls.primary is None:
        raise error(
            f"{kind} {label}",
            f"{kind} takes options, not a single value ({value!r})",
            hint=cls.example,
        )
    else:
        key = "columns" if isinstance(value, list) and "columns" in cls.options else cls.primary
        options = {key: value, **rest}

    name = options.pop("name", None)
    column = options.get("column")
    label = name if isinstance(name, str) else f"{kind}({column})" if column else kind
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise error(label, f"`name` must be a non-empty string, got {name!r}")
    severity = options.pop("severity", "fail")
    if severity not in SEVERITIES:
        raise error(
            label,
            f"`severity` must be warn, drop or fail, got {severity!r}",
            hint="warn: record and publish; drop: quarantine failing rows; fail: publish nothing",
        )
    if severity == "drop" and cls.no_drop is not None:
        raise error(label, f"severity drop is not allowed: {cls.no_drop}", "use warn or fail")
    raw_tolerance = options.pop("max_failing", None)
    spec = Spec(options, kind=kind, table=table, label=label, file=file)
    check = cls.read(spec, name=name.strip() if name else None, severity=severity)
    if raw_tolerance is None:
        return check
    if not isinstance(check, RowCheck):
        raise error(
            label,
            "`max_failing` applies to row checks (a table check has no failing rows to count)",
            hint="set bounds in the check itself, e.g. row_count's min",
        )
    return dataclasses.replace(check, max_failing=_tolerance(raw_tolerance, spec))


def _tolerance(value: Any, spec: Spec) -> Tolerance:
    """`max_failing: 10` (rows) or `max_failing: 2.5%` (of the rows judged)."""
    text = str(value).strip()
    try:
        if isinstance(value, str) and text.endswith("%"):
            share = float(text[:-1]) / 100
            if 0 <= share <= 1:
                return Tolerance(share=share)
        elif not isinstance(value, bool | float) and int(text) >= 0:
            return Tolerance(rows=int(text))
    except ValueError:
        pass
    raise spec.error(
        f"`max_failing` must be a whole number of rows ≥ 0 or a percentage, got {value!r}",
        hint="for example max_failing: 10 or max_failing: 0.5%",
    )


# -- reading one check's options ------------------------------------------------------------


class Spec:
    """One check's options as written, read key by key; errors name the table and check."""

    def __init__(
        self,
        options: dict[str, Any],
        *,
        kind: str,
        table: str,
        label: str,
        file: str | None,
    ) -> None:
        self.kind = kind
        self.table = table
        self.label = label
        self.file = file
        self._options = dict(options)
        taken = KINDS[kind].options
        unknown = sorted(set(self._options) - set(taken))
        if unknown:
            guesses = {m for k in unknown for m in get_close_matches(k, taken, n=1)}
            guess = f"did you mean {', '.join(sorted(guesses))}? " if guesses else ""
            raise self.error(
                f"{kind} does not take {', '.join(f'`{k}`' for k in unknown)}",
                hint=f"{guess}{kind} takes {', '.join(taken)}, name and severity",
            )

    def error(self, message: str, hint: str | None = None) -> CheckConfigError:
        return CheckConfigError(
            message, table=self.table, check=self.label, file=self.file, hint=hint
        )

    def get(self, key: str, required: bool) -> Any:
        """The option as written (None when absent and not `required`)."""
        value = self._options.get(key)
        if value is None and required:
            raise self.error(f"{self.kind} needs `{key}`", hint=KINDS[self.kind].example)
        return value

    def text(self, key: str, *, required: bool = True) -> str | None:
        value = self.get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"`{key}` must be a non-empty string, got {value!r}")
        return value.strip()

    def column(self, key: str = "column") -> str:
        value = self.text(key)
        assert value is not None
        return value

    def columns(self) -> tuple[str, ...]:
        """`column: a` or `columns: [a, b]` (one of them)."""
        one, many = self.get("column", False), self.get("columns", False)
        if (one is None) == (many is None):
            raise self.error(
                f"{self.kind} needs `column` or `columns` (one of them)",
                hint=KINDS[self.kind].example,
            )
        names = [one] if one is not None else many
        if not isinstance(names, list) or not names:
            raise self.error(f"`columns` must be a non-empty list of names, got {many!r}")
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise self.error(f"column names must be non-empty strings, got {name!r}")
        if len({n.strip().lower() for n in names}) != len(names):
            raise self.error(f"`columns` names a column twice: {names!r}")
        return tuple(n.strip() for n in names)

    def bound(self, key: str) -> Bound | None:
        value = self.get(key, False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | str | date):
            raise self.error(f"`{key}` must be a number, date or time, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(f"`{key}` must be a finite number, got {value!r}")
        return value

    def count(self, key: str) -> int | None:
        value = self.get(key, False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(f"`{key}` must be a whole number ≥ 0, got {value!r}")
        return value

    def values(self, key: str) -> tuple[Scalar, ...]:
        value = self.get(key, True)
        if not isinstance(value, list) or not value:
            raise self.error(f"`{key}` must be a non-empty list, got {value!r}")
        for item in value:
            if item is None:
                raise self.error(
                    f"`{key}` cannot hold null: NULL never equals a value",
                    hint="NULLs pass accepted_values; add a not_null check to reject them",
                )
            if not isinstance(item, str | int | float | bool):
                raise self.error(f"`{key}` items must be strings, numbers or booleans: {item!r}")
        return tuple(value)

    def duration(self, key: str) -> timedelta:
        value = self.get(key, True)
        parsed = parse_duration(value) if isinstance(value, str) else None
        if parsed is None:
            raise self.error(
                f"`{key}` must be a duration such as `2 days`, `36 hours` or `90 minutes`, "
                f"got {value!r}"
            )
        return parsed


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")
_UNITS = {
    "second": timedelta(seconds=1),
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
}
_UNIT_ALIASES = {"s": "second", "sec": "second", "m": "minute", "min": "minute"}
_UNIT_ALIASES |= {"h": "hour", "hr": "hour", "d": "day", "w": "week"}


def parse_duration(text: str) -> timedelta | None:
    """`2 days`, `36 hours`, `90 minutes`, `1.5h`... as a timedelta; None if unreadable."""
    match = _DURATION.match(text.lower())
    if match is None:
        return None
    amount, unit = float(match.group(1)), match.group(2)
    unit = _UNIT_ALIASES.get(unit, unit.removesuffix("s"))
    step = _UNITS.get(unit)
    return None if step is None or amount <= 0 else amount * step
