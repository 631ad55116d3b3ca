"""The `files` connector: CSV, JSON, NDJSON and Parquet files (plain, gzip or zstd) from a
local folder, an SFTP server or S3-compatible storage, loaded incrementally.

    sources:
      orders:
        kind: files
        path: data/orders/*.csv     # or sftp://user@host:port/dir/*.csv, s3://bucket/prefix/*.csv
        csv: {delimiter: ";", encoding: latin-1}
        on_change: reload

The source's state is a manifest of the files loaded, `{"files": {key: {"size", "mtime",
"sha256"}}}`. A run reads each file the manifest lacks, one batch per file. A file whose
size and modification time are as recorded is skipped unread; one whose size or time moved
is read and hashed: the same bytes only update its entry, new bytes are reloaded (its rows
replace the rows it loaded before) or, with `on_change: ignore`, left as loaded. A file
that disappears keeps its entry and its rows.

A new CSV file of 16 MB or more (uncompressed, UTF-8) is handed to the runner as a
`StreamedBatch` when the runner can take one (append sources): its rows are written while
the rest of the file is parsed (`csv_pieces`), with the same result as reading it whole,
which is what happens to any file that turns out to need it (a malformed record, a column
whose type only the whole file settles).

Each row's origin is the file's key (bronze `_origin`) and its position in the file
(`_origin_row`): the 1-based line of the record for CSV (the header is line 1) and NDJSON,
the 0-based record index for JSON arrays and Parquet (see `file_formats`); a rejected
record's origin is `<key>:<position>`. A reload replaces the rows whose `_origin` is the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, cast

import pyarrow as pa
from pydantic import Field, model_validator

from lakebed.ingest.base import (
    Batch,
    Connector,
    ConnectorOptions,
    IngestProgress,
    Reject,
    RowOrigins,
    StreamedBatch,
    register_connector,
)
from lakebed.ingest.connectors.csv_pieces import csv_pieces, streamable
from lakebed.ingest.connectors.file_formats import (
    Compression,
    CsvOptions,
    FileFormat,
    JsonOptions,
    ParsedFile,
    compression_from_name,
    decompress,
    format_from_name,
    parse_file,
)
from lakebed.ingest.connectors.file_systems import (
    Fetched,
    FoundFile,
    S3Options,
    SftpOptions,
    open_file_system,
)

__all__ = ["FilesConnector", "FilesOptions", "origin_predicate"]

_MAGIC = re.compile(r"[*?\[]")


class FilesOptions(ConnectorOptions):
    """The keys of a `kind: files` source (besides the runner's common keys)."""

    path: str = Field(
        description="local path or glob (relative to the project folder), "
        "sftp://user@host[:port]/dir/*.csv or s3://bucket/prefix/*.csv"
    )
    format: FileFormat | None = Field(
        default=None,
        description="default: from the extension (.csv, .json, .ndjson/.jsonl, "
        ".parquet; looking through .gz/.zst)",
    )
    compression: Literal["auto", "gzip", "zstd", "none"] = Field(
        default="auto", description="auto: by extension (.gz, .zst, .zstd)"
    )
    csv: CsvOptions = Field(default_factory=CsvOptions)
    json_options: JsonOptions = Field(default_factory=JsonOptions, alias="json")
    on_change: Literal["reload", "ignore"] = Field(
        default="reload",
        description="a loaded file whose bytes changed: reload (replace its rows) or ignore",
    )
    sftp: SftpOptions | None = None
    s3: S3Options | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FilesOptions:
        scheme = self.path.split("://", 1)[0] if "://" in self.path else "file"
        if scheme not in ("file", "sftp", "s3"):
            raise ValueError(f"path {self.path!r}: use a local path, sftp:// or s3://")
        if scheme == "file" and self.path.startswith("file://"):
            raise ValueError(f"path {self.path!r}: write a local path without file://")
        if self.sftp is not None and scheme != "sftp":
            raise ValueError("`sftp` options are given but `path` is not an sftp:// URL")
        if self.s3 is not None and scheme != "s3":
            raise ValueError("`s3` options are given but `path` is not an s3:// URL")
        if scheme != "file":
            authority, slash, _ = self.path.split("://", 1)[1].partition("/")
            user_info, _, host = authority.rpartition("@")
            if not host or not slash:
                place = "host" if scheme == "sftp" else "bucket"
                raise ValueError(f"path {self.path!r}: write {scheme}://{place}/path")
            if ":" in user_info:
                raise ValueError("put the SFTP password in sftp.password, not in the URL")
        last = self.path.rstrip("/").rsplit("/", 1)[-1]
        suffix = last.rsplit(".", 1)[1] if "." in last else "*"
        if self.format is None and format_from_name(last) is None and not _MAGIC.search(suffix):
            # A glob like `in/*` may match several formats: each file's extension decides.
            raise ValueError(
                f"cannot tell the format of {self.path!r} from its extension; "
                "set `format` to csv, json, ndjson or parquet"
            )
        return self


def origin_predicate(key: str) -> str:
    """delta-rs SQL matching the bronze rows loaded from the file `key`."""
    return "_origin = '" + key.replace("'", "''") + "'"


@register_connector
class FilesConnector(Connector):
    """Loads the files a path or glob matches, one batch per new or changed file."""

    kind = "files"
    options_model = FilesOptions

    @property
    def files_options(self) -> FilesOptions:
        return cast(FilesOptions, self.options)

    def batches(
        self, state: Mapping[str, Any], progress: IngestProgress
    ) -> Iterator[Batch | StreamedBatch]:
        options = self.files_options
        loaded: Mapping[str, Mapping[str, Any]] = state.get("files", {})
        with open_file_system(
            options.path,
            project_dir=self.context.project_dir,
            source=self.context.name,
            sftp=options.sftp,
            s3=options.s3,
        ) as files:
            todo = [
                found
                for found in files.list_files()
                if not _unchanged(loaded.get(found.key), found)
            ]
            progress.total("files", len(todo))
            for found in todo:
                previous = loaded.get(found.key)
                if previous is not None and options.on_change == "ignore":
                    # The rows stay as loaded; so does the hash, which is of those bytes.
                    yield _bookkeeping(found, str(previous.get("sha256", "")), bytes_read=0)
                    progress.advance("files")
                    continue
                fetched = files.read(found)
                if fetched is None:  # gone since it was listed
                    progress.advance("files")
                    continue
                if previous is not None and fetched.sha256() == previous.get("sha256"):
                    yield _bookkeeping(found, fetched.sha256(), bytes_read=fetched.size)
                    progress.advance("files")
                    continue
                if previous is None and self.context.streaming:
                    streamed = self._read_new(found, fetched)
                    del fetched
                    yield streamed
                    progress.advance("files")
                    progress.advance("rows", streamed.rows)
                    progress.advance("bytes", streamed.bytes_read)
                    del streamed  # nor while the next file is read
                    continue
                batch = self._parse(found, fetched.data, fetched.sha256)
                del fetched  # the file's bytes need not live while the runner writes
                if previous is not None:
                    batch.replace_predicate = origin_predicate(found.key)
                yield batch
                progress.advance("files")
                progress.advance("rows", batch.rows)
                progress.advance("bytes", batch.bytes_read)

    def _parse(
        self,
        found: FoundFile,
        raw: bytes,
        sha256: Callable[[], str],
        *,
        decompressed: bool = False,
        bytes_read: int | None = None,
    ) -> Batch:
        """The file's records, read whole; `raw` as stored, or already `decompressed`."""
        options = self.files_options
        compression = "none" if decompressed else self._compression(found)
        file_format = options.format or format_from_name(found.key)
        if file_format is None:
            error = f"cannot tell the format of {found.key} from its extension; set `format`"
            parsed = ParsedFile.empty([Reject(raw=raw[:1024], error=error, origin=found.key)])
        else:
            parsed = parse_file(
                raw,
                file_format=file_format,
                compression=compression,
                origin=found.key,
                csv_options=options.csv,
                json_options=options.json_options,
            )
        return Batch(
            data=parsed.table,
            origins=RowOrigins(found.key, pa.array(parsed.positions, pa.int64())),
            state_delta={"files": {found.key: _entry(found, sha256())}},
            rejects=parsed.rejects,
            bytes_read=len(raw) if bytes_read is None else bytes_read,
            label=found.key,
        )

    def _compression(self, found: FoundFile) -> Compression:
        compression = self.files_options.compression
        return compression_from_name(found.key) if compression == "auto" else compression

    def _read_new(self, found: FoundFile, fetched: Fetched) -> Batch | StreamedBatch:
        """A new file for a runner that takes streamed batches: a large CSV file as one it
        writes while the file is parsed, anything else read whole."""
        options = self.files_options
        if (options.format or format_from_name(found.key)) != "csv":
            return self._parse(found, fetched.data, fetched.sha256)
        content = fetched.buffer
        compression = self._compression(found)
        if compression != "none":
            try:
                plain = decompress(fetched.data, compression)
            except (OSError, pa.ArrowException):  # the whole read rejects the file
                return self._parse(found, fetched.data, fetched.sha256)
            content = pa.py_buffer(plain)
        sha256 = fetched.sha256

        def whole() -> Batch:
            if compression == "none":
                return self._parse(found, fetched.data, sha256)
            return self._parse(found, plain, sha256, decompressed=True, bytes_read=fetched.size)

        if not streamable(options.csv, content.size):
            return whole()
        return StreamedBatch(
            location=found.key,
            pieces=lambda: csv_pieces(content, options.csv),
            whole=whole,
            state_delta=lambda: {"files": {found.key: _entry(found, sha256())}},
            bytes_read=fetched.size,
            label=found.key,
        )

    def describe_state(self, state: Mapping[str, Any]) -> str:
        manifest: Mapping[str, Mapping[str, Any]] = state.get("files", {})
        if not manifest:
            return "nothing loaded yet"
        newest = max(float(entry.get("mtime", 0)) for entry in manifest.values())
        when = datetime.fromtimestamp(newest, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        count = len(manifest)
        return f"{count} file{'s' if count != 1 else ''} loaded, last {when}"


def _unchanged(entry: Mapping[str, Any] | None, found: FoundFile) -> bool:
    return (
        entry is not None and entry.get("size") == found.size and entry.get("mtime") == found.mtime
    )


def _entry(found: FoundFile, sha256: str) -> dict[str, Any]:
    return {"size": found.size, "mtime": found.mtime, "sha256": sha256}


def _bookkeeping(found: FoundFile, sha256: str, *, bytes_read: int) -> Batch:
    """A batch with no rows that only moves the file's manifest entry forward."""
    return Batch(
        data=pa.table({}),
        origins=[],
        state_delta={"files": {found.key: _entry(found, sha256)}},
        bytes_read=bytes_read,
        label=found.key,
    )
