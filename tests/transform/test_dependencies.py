"""Dependency parsing: golden files of model SQL and the tables it reads (or the error)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from lakebed.errors import ModelError
from lakebed.transform.discover import parse_sql_model

FIXTURES = Path(__file__).parent.parent / "fixtures" / "dependencies"


@dataclass(frozen=True)
class Case:
    title: str
    sql: str
    expect: list[str] | None  # the inputs, or None for an error case
    error_line: int | None = None
    error_text: str | None = None


def load_cases(path: Path) -> list[Case]:
    """Each case: `-- case: title`, the SQL, then `-- expect: a, b` or `-- error: LINE: TEXT`."""
    cases: list[Case] = []
    title: str | None = None
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("-- case:"):
            assert title is None, f"{path.name}: case {title!r} has no expectation"
            title, lines = line.removeprefix("-- case:").strip(), []
        elif title is None:
            continue  # the header
        elif line.startswith("-- expect:"):
            listed = line.removeprefix("-- expect:").strip()
            expect = [] if listed == "(none)" else [t.strip() for t in listed.split(",")]
            cases.append(Case(title, "\n".join(lines).strip("\n"), expect))
            title = None
        elif line.startswith("-- error:"):
            at, text = line.removeprefix("-- error:").split(":", 1)
            sql = "\n".join(lines).strip("\n")
            cases.append(Case(title, sql, None, int(at), text.strip()))
            title = None
        else:
            lines.append(line)
    assert title is None, f"{path.name}: case {title!r} has no expectation"
    return cases


CASES = [
    pytest.param(case, id=f"{path.stem}: {case.title}")
    for path in sorted(FIXTURES.glob("*.sql"))
    for case in load_cases(path)
]
INPUT_CASES = [p for p in CASES if p.values[0].expect is not None]  # type: ignore[union-attr]
ERROR_CASES = [p for p in CASES if p.values[0].expect is None]  # type: ignore[union-attr]


def test_golden_files_hold_cases() -> None:
    assert len(INPUT_CASES) >= 60
    assert len(ERROR_CASES) >= 15


@pytest.mark.parametrize("case", INPUT_CASES)
def test_inputs(case: Case) -> None:
    parsed = parse_sql_model(case.sql, file="model.sql")
    assert [str(name) for name in parsed.inputs] == case.expect


@pytest.mark.parametrize("case", INPUT_CASES)
def test_input_lines_point_at_the_reference(case: Case) -> None:
    parsed = parse_sql_model(case.sql, file="model.sql")
    assert set(parsed.input_lines) == set(parsed.inputs)
    sql_lines = case.sql.splitlines()
    for name, line in parsed.input_lines.items():
        written = re.sub(r'["\s]', "", sql_lines[line - 1]).lower()
        assert str(name) in written, (name, line)


@pytest.mark.parametrize("case", ERROR_CASES)
def test_errors_name_the_line(case: Case) -> None:
    with pytest.raises(ModelError) as raised:
        parse_sql_model(case.sql, file="model.sql")
    assert raised.value.file == "model.sql"
    assert raised.value.line == case.error_line
    assert case.error_text is not None
    assert case.error_text in raised.value.message
