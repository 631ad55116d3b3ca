"""Deletion vectors: the rows of a data file a commit marks deleted without rewriting it.

Delta keeps them as a 64-bit RoaringBitmap ("portable" serialisation, a magic number in
front), either in a file or, as lakebed writes them, inline in the log encoded with Z85.
Reading goes through delta-rs (`DeltaTable.deletion_vectors`), which knows every form.
"""

from __future__ import annotations

import os
import struct
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

_MAGIC = 1681511377
_NO_RUN_COOKIE = 12346
_ARRAY_LIMIT = 4096  # a container with more values is stored as a 65536-bit bitmap
_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_POWERS = np.array([85**4, 85**3, 85**2, 85, 1], dtype=np.uint64)
_Z85_TABLE = np.frombuffer(_Z85.encode(), dtype=np.uint8)


def z85(data: bytes) -> str:
    """Z85 text of `data`, zero-padded to a multiple of four bytes (the descriptor's
    `sizeInBytes` says how many are real)."""
    padded = data + b"\0" * (-len(data) % 4)
    words = np.frombuffer(padded, dtype=">u4").astype(np.uint64)
    digits = (words[:, None] // _Z85_POWERS) % 85
    return bytes(_Z85_TABLE[digits.astype(np.intp)].ravel()).decode()


def _roaring32(values: np.ndarray) -> bytes:
    """The portable RoaringBitmap serialisation of sorted, distinct 32-bit values."""
    highs = (values >> 16).astype(np.uint16)
    keys, starts = np.unique(highs, return_index=True)
    ends = np.append(starts[1:], len(values))
    count = len(keys)
    header = [struct.pack("<II", _NO_RUN_COOKIE, count)]
    header += [
        struct.pack("<HH", int(k), int(e - s - 1))
        for k, s, e in zip(keys, starts, ends, strict=True)
    ]
    bodies: list[bytes] = []
    offsets: list[bytes] = []
    offset = 8 + 8 * count
    for start, end in zip(starts, ends, strict=True):
        lows = (values[start:end] & 0xFFFF).astype("<u2")
        if end - start <= _ARRAY_LIMIT:
            body = lows.tobytes()
        else:
            bits = np.zeros(65536, dtype=bool)
            bits[lows] = True
            body = np.packbits(bits, bitorder="little").tobytes()
        offsets.append(struct.pack("<I", offset))
        offset += len(body)
        bodies.append(body)
    return b"".join(header + offsets + bodies)


def serialise(positions: np.ndarray) -> bytes:
    """Delta's deletion vector bytes for row positions (any order; repeats ignored)."""
    values = np.unique(np.asarray(positions, dtype=np.uint64))
    highs = (values >> np.uint64(32)).astype(np.uint32)
    buckets = np.unique(highs)
    parts = [struct.pack("<IQ", _MAGIC, len(buckets))]
    for bucket in buckets:
        lows = (values[highs == bucket] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        parts.append(struct.pack("<I", int(bucket)) + _roaring32(lows))
    return b"".join(parts)


def inline_descriptor(positions: np.ndarray) -> dict[str, object]:
    """The `deletionVector` of an add action deleting `positions`, stored in the log."""
    raw = serialise(positions)
    return {
        "storageType": "i",
        "pathOrInlineDv": z85(raw),
        "sizeInBytes": len(raw),
        "cardinality": len(np.unique(positions)),
    }


def supported(dt: DeltaTable) -> bool:
    """True when the table's protocol lets files carry deletion vectors."""
    protocol = dt.protocol()
    return "deletionVectors" in (protocol.reader_features or [])


def enabled(dt: DeltaTable) -> bool:
    """True when writers may add deletion vectors (feature on and property set)."""
    configuration = dt.metadata().configuration
    return supported(dt) and configuration.get("delta.enableDeletionVectors") == "true"


def _local_path(uri: str) -> str:
    if uri.startswith("file://"):
        return unquote(urlparse(uri).path)
    return uri


# Past this many commits, reading the log to learn that no file ever had a deletion vector
# costs about what delta-rs takes to hand them out.
_LOG_SCAN_LIMIT = 16


def never_in_log(path: str, version: int) -> bool:
    """True when the commits of a local table up to `version` never gave a file a deletion
    vector (read from its JSON commits: a short log without a checkpoint); False when they
    did, or the log is not of that kind."""
    log = f"{path}/_delta_log"
    if "://" in path or version >= _LOG_SCAN_LIMIT or os.path.exists(f"{log}/_last_checkpoint"):
        return False
    for commit in range(version + 1):
        try:
            with open(f"{log}/{commit:020d}.json", encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            return False
        if '"deletionVector":{' in text.replace(" ", ""):
            return False
    return True


def deleted_rows(dt: DeltaTable, path: str | None = None) -> dict[str, pa.Array]:
    """Per data file (absolute path, as `Snapshot.paths` spells it) the deleted row positions
    (int64, ascending); only files that have a deletion vector appear. `path`: the table's
    location, for a local table whose short log tells there are none."""
    if not supported(dt):
        return {}
    if path is not None and never_in_log(path, int(dt.version())):
        return {}  # delta-rs takes milliseconds to say so
    vectors = pa.table(dt.deletion_vectors())
    found: dict[str, pa.Array] = {}
    keeps = vectors.column(1)
    for index, path in enumerate(vectors.column(0).to_pylist()):
        mask = keeps[index].values
        found[_local_path(str(path))] = pc.indices_nonzero(pc.invert(mask)).cast(pa.int64())
    return found
