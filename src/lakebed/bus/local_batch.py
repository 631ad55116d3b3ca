"""The record batch of the embedded bus's log: how records are laid out in a segment file,
encoded by producers and turned back into Arrow columns by consumers.

A batch is a 48-byte header and a columnar body, padded to a multiple of 8 bytes so every
column sits 8-byte aligned in the file and in the buffer it is read into::

    header (little-endian)  magic "LKB1" | header_crc u32 | length u32 (whole batch)
                            | count u32 | base_offset i64 | min_ts i64 | max_ts i64
                            | flags u32 | body_crc u32
    body                    timestamps  int64[count]                        (ms since epoch)
                            keys        int32 offsets[count + 1] | validity bitmap if some
                                        are null | bytes               (only if flag KEYS)
                            values      int32 offsets[count + 1] | validity bitmap if some
                                        are null | bytes
                            (each part padded to 8 bytes)

`header_crc` covers header bytes 8..48 and `body_crc` the rest of the batch, so a reader
trusts a batch only when both match: a batch torn by a crash (short, or garbage) is never
returned. The body is laid out as Arrow buffers: `pa.Array.from_buffers` turns a batch into
columns without copying, so consuming does no per-record Python work.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from lakebed.errors import RecordError

MAGIC = b"LKB1"
HEADER = struct.Struct("<4sIIIqqqII")
HEADER_SIZE = HEADER.size  # 48
FLAG_KEYS = 1
FLAG_KEY_NULLS = 2
FLAG_VALUE_NULLS = 4
BATCH_RECORDS = 32_768
BATCH_BYTES = 8 * 1024 * 1024
READ_BYTES = 8 * 1024 * 1024
TIMESTAMP_TYPE = pa.timestamp("ms", tz="UTC")
_MAX_BINARY = 2**31 - 1
_ZEROS = bytes(8)


def _pad(n: int) -> int:
    return -n % 8


# ---------------------------------------------------------------------------------------------
# Encoding


@dataclass(slots=True)
class EncodedBatch:
    """A batch body ready to append; the header (offsets, crc) is made under the lock."""

    count: int
    min_ts: int
    max_ts: int
    flags: int
    parts: list[bytes]
    length: int  # header + body, padded
    body_crc: int


def _binary_column(items: list[Any], what: str) -> tuple[list[Any], np.ndarray, np.ndarray | None]:
    """(the items with None as b"", their int64 cumulative lengths, validity mask or None)."""
    valid = None
    if None in items:
        valid = np.fromiter((i is not None for i in items), dtype=bool, count=len(items))
        items = [b"" if item is None else item for item in items]
    try:
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    except TypeError as exc:
        raise _not_bytes(items, what) from exc
    return items, np.cumsum(lengths), valid


def _not_bytes(items: list[Any], what: str) -> RecordError:
    bad = next((i for i in items if not isinstance(i, bytes | bytearray)), None)
    return RecordError(
        f"a record {what} is {type(bad).__name__}, not bytes: {bad!r:.60}",
        hint=f"encode {what}s to bytes (for example `json.dumps(x).encode()`)",
    )


def _binary_parts(
    items: list[Any], ends: np.ndarray, valid: np.ndarray | None, start: int, stop: int, what: str
) -> tuple[list[bytes], bool]:
    """The offsets, validity bitmap (if a record in the range is null) and data of a range."""
    first = int(ends[start - 1]) if start else 0
    offsets = np.empty(stop - start + 1, dtype="<i4")
    offsets[0] = 0
    offsets[1:] = ends[start:stop] - first
    try:
        data = b"".join(items[start:stop])
    except TypeError as exc:
        raise _not_bytes(items[start:stop], what) from exc
    if len(data) != int(offsets[-1]):
        raise _not_bytes(items[start:stop], what)
    parts = [offsets.tobytes(), _ZEROS[: _pad(offsets.nbytes)]]
    has_nulls = valid is not None and not bool(valid[start:stop].all())
    if has_nulls:
        assert valid is not None
        bitmap = np.packbits(valid[start:stop], bitorder="little").tobytes()
        parts += [bitmap, _ZEROS[: _pad(len(bitmap))]]
    parts += [data, _ZEROS[: _pad(len(data))]]
    return parts, has_nulls


def encode_batches(
    values: list[Any],
    keys: list[Any] | None,
    timestamps: np.ndarray,
    *,
    max_records: int = BATCH_RECORDS,
    max_bytes: int = BATCH_BYTES,
) -> list[EncodedBatch]:
    """Split records into batches of at most `max_records` / about `max_bytes` and encode
    them; `keys` is None when every key is null."""
    n = len(values)
    values, value_ends, value_valid = _binary_column(values, "value")
    key_ends = np.zeros(n, dtype=np.int64)
    key_valid = None
    if keys is not None:
        keys, key_ends, key_valid = _binary_column(keys, "key")
    sizes = value_ends + key_ends  # cumulative bytes of keys and values
    batches: list[EncodedBatch] = []
    start = 0
    while start < n:
        before = int(sizes[start - 1]) if start else 0
        stop = int(np.searchsorted(sizes, before + max_bytes, side="right"))
        stop = min(max(stop, start + 1), start + max_records, n)
        # Offsets are int32: a batch's bytes must stay below 2 GiB.
        while stop - start > 1 and int(sizes[stop - 1]) - before > _MAX_BINARY:
            stop = start + (stop - start) // 2
        if int(sizes[stop - 1]) - before > _MAX_BINARY:
            raise RecordError("a record is larger than 2 GiB", hint="split it into smaller ones")
        ts = np.ascontiguousarray(timestamps[start:stop], dtype="<i8")
        flags = 0
        parts: list[bytes] = [ts.tobytes()]
        if keys is not None:
            key_parts, key_nulls = _binary_parts(keys, key_ends, key_valid, start, stop, "key")
            flags |= FLAG_KEYS | (FLAG_KEY_NULLS if key_nulls else 0)
            parts += key_parts
        value_parts, value_nulls = _binary_parts(
            values, value_ends, value_valid, start, stop, "value"
        )
        flags |= FLAG_VALUE_NULLS if value_nulls else 0
        parts += value_parts
        crc = 0
        body = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
            body += len(part)
        batches.append(
            EncodedBatch(
                count=stop - start,
                min_ts=int(ts.min()),
                max_ts=int(ts.max()),
                flags=flags,
                parts=parts,
                length=HEADER_SIZE + body,
                body_crc=crc,
            )
        )
        start = stop
    return batches


def batch_header(batch: EncodedBatch, base: int) -> bytes:
    """The header of `batch` written at offset `base`."""
    rest = HEADER.pack(
        MAGIC,
        0,
        batch.length,
        batch.count,
        base,
        batch.min_ts,
        batch.max_ts,
        batch.flags,
        batch.body_crc,
    )[8:]
    return MAGIC + struct.pack("<I", zlib.crc32(rest)) + rest


# ---------------------------------------------------------------------------------------------
# Decoding


@dataclass(slots=True)
class Batch:
    """A complete, crc-checked batch read from a segment; columns are decoded on demand."""

    base: int
    count: int
    min_ts: int
    max_ts: int
    flags: int
    position: int  # in the segment file
    length: int
    buffer: pa.Buffer  # the bytes read, holding this batch at `start`
    start: int
    _columns: tuple[pa.Array, pa.Array, pa.Array] | None = field(default=None, repr=False)

    @property
    def end(self) -> int:
        return self.base + self.count

    def timestamps(self) -> np.ndarray:
        return np.frombuffer(
            self.buffer, dtype="<i8", count=self.count, offset=self.start + HEADER_SIZE
        )

    def columns(self) -> tuple[pa.Array, pa.Array, pa.Array]:
        """(timestamp, key, value) Arrow arrays over the read buffer, without copying."""
        if self._columns is None:
            self._columns = self._decode()
        return self._columns

    def _decode(self) -> tuple[pa.Array, pa.Array, pa.Array]:
        n = self.count
        buf = self.buffer
        at = self.start + HEADER_SIZE
        timestamps = pa.Array.from_buffers(TIMESTAMP_TYPE, n, [None, buf.slice(at, 8 * n)])
        at += 8 * n
        if self.flags & FLAG_KEYS:
            keys, at = self._binary(at, bool(self.flags & FLAG_KEY_NULLS))
        else:
            keys = pa.nulls(n, pa.binary())
        values, at = self._binary(at, bool(self.flags & FLAG_VALUE_NULLS))
        return timestamps, keys, values

    def _binary(self, at: int, has_nulls: bool) -> tuple[pa.Array, int]:
        n = self.count
        buf = self.buffer
        offsets = buf.slice(at, 4 * (n + 1))
        size = int(np.frombuffer(buf, dtype="<i4", count=1, offset=at + 4 * n)[0])
        at += 4 * (n + 1) + _pad(4 * (n + 1))
        validity = None
        null_count = 0
        if has_nulls:
            width = (n + 7) // 8
            validity = buf.slice(at, width)
            bits = np.unpackbits(
                np.frombuffer(buf, dtype=np.uint8, count=width, offset=at),
                count=n,
                bitorder="little",
            )
            null_count = n - int(bits.sum())
            at += width + _pad(width)
        data = buf.slice(at, size)
        at += size + _pad(size)
        array = pa.Array.from_buffers(
            pa.binary(), n, [validity, offsets, data], null_count=null_count
        )
        return array, at


def parse_header(data: bytes, at: int) -> tuple[int, int, int, int, int, int, int] | None:
    """(length, count, base, min_ts, max_ts, flags, body_crc), or None if not a valid header."""
    if data[at : at + 4] != MAGIC:
        return None
    _, crc, length, count, base, min_ts, max_ts, flags, body_crc = HEADER.unpack_from(data, at)
    if zlib.crc32(memoryview(data)[at + 8 : at + HEADER_SIZE]) != crc:
        return None
    if length < HEADER_SIZE + 8 * count or length % 8 or count == 0:
        return None
    return length, count, base, min_ts, max_ts, flags, body_crc


def read_batches(
    fd: int, position: int, size: int, expected_base: int, max_bytes: int = READ_BYTES
) -> tuple[list[Batch], int]:
    """The complete, crc-valid batches from `position` (whose first must start at offset
    `expected_base`), reading about `max_bytes` (more if one batch is larger), up to `size`.
    Stops at the first incomplete or invalid batch: (batches, position after the last)."""
    available = size - position
    if available < HEADER_SIZE:
        return [], position
    data = os.pread(fd, min(available, max(max_bytes, HEADER_SIZE)), position)
    batches: list[Batch] = []
    at = 0
    buffer: pa.Buffer | None = None
    while at + HEADER_SIZE <= len(data):
        header = parse_header(data, at)
        if header is None:
            break
        length, count, base, min_ts, max_ts, flags, body_crc = header
        if base != expected_base:
            break
        if at + length > len(data):
            if batches or position + length > size:
                break  # the rest is for the next read, or still being written (or torn)
            data = os.pread(fd, length, position)  # one batch larger than a read
            if len(data) < length:
                break
        if zlib.crc32(memoryview(data)[at + HEADER_SIZE : at + length]) != body_crc:
            break
        if buffer is None:
            buffer = pa.py_buffer(data)
        batches.append(Batch(base, count, min_ts, max_ts, flags, position + at, length, buffer, at))
        expected_base += count
        at += length
    return batches, position + at
