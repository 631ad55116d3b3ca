"""JSON events to bus records: from Python mappings or NDJSON lines, keyed by a field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from lakebed.bus.base import Record
from lakebed.errors import RecordError

_SHOWN = 10


def _key_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


def encode_records(records: Iterable[Mapping[str, Any]], key: str | None = None) -> list[Record]:
    """JSON-encode mappings; `key` names the field whose value becomes the record key."""
    encoded = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise RecordError(
                f"record {index} is a {type(record).__name__}, not a mapping",
                hint="produce dicts (JSON objects)",
            )
        if key is not None and record.get(key) is None:
            raise RecordError(f"record {index} has no value for the key field {key!r}")
        value = json.dumps(record, default=str, separators=(",", ":")).encode()
        encoded.append(Record(value, key=_key_bytes(record.get(key)) if key else None))
    return encoded


def ndjson_records(
    stream: IO[bytes], *, key: str | None = None, chunk: int = 10_000
) -> Iterator[tuple[list[Record], list[tuple[int, str]]]]:
    """Chunks of (records, [(line number, error)]) read from NDJSON; blank lines skipped.

    Each line is checked to be one JSON object (with the key field, if one is named) and is
    passed on as it was written, so producing does not re-encode what was already JSON.
    """
    records: list[Record] = []
    bad: list[tuple[int, str]] = []
    for number, raw in enumerate(stream, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            parsed = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            bad.append((number, f"not JSON: {exc}"))
            continue
        if not isinstance(parsed, dict):
            bad.append((number, f"expected a JSON object, got {type(parsed).__name__}"))
            continue
        record_key = None
        if key is not None:
            if parsed.get(key) is None:
                bad.append((number, f"no value for the key field {key!r}"))
                continue
            record_key = _key_bytes(parsed[key])
        records.append(Record(line, key=record_key))
        if len(records) >= chunk:
            yield records, bad
            records, bad = [], []
    if records or bad:
        yield records, bad


def rejected_lines_error(source: str, bad: list[tuple[int, str]], produced: int) -> RecordError:
    """One error listing the first rejected lines by number."""
    shown = "\n".join(f"  {source}:{line}: {error}" for line, error in bad[:_SHOWN])
    more = f"\n  ... and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    return RecordError(
        f"{len(bad)} line(s) rejected, {produced} produced:\n{shown}{more}",
        hint="each line must be one JSON object; fix the lines above and produce them again",
    )
