"""Where a files source's files live: a local folder, an SFTP server or S3-compatible storage.

Each file system lists the files a glob matches (with size and modification time) and
reads one file into memory with the SHA-256 of its bytes. Remote calls are retried on
connection failures (`RETRY_DELAYS`), then fail with `SourceUnavailableError` naming the
host and the path; a failed login fails at once.

Globs: `*` and `?` match within one path segment, `[abc]` a character class, and a `**`
segment any number of folders; names starting with a dot are skipped unless the pattern
spells the dot.
"""

from __future__ import annotations

import getpass
import glob
import hashlib
import io
import os
import posixpath
import re
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, SecretStr

from lakebed.errors import IngestError, SourceAuthError, SourceUnavailableError
from lakebed.ingest.base import secret

__all__ = [
    "RETRY_DELAYS",
    "Fetched",
    "FileSystem",
    "FoundFile",
    "S3Options",
    "SftpOptions",
    "glob_regex",
    "open_file_system",
]

# Seconds to wait before each retry of a remote call that failed to connect.
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0)
_MAGIC = re.compile(r"[*?\[]")
_CHUNK = 1 << 20
_T = TypeVar("_T")


class SftpOptions(BaseModel):
    """How to log in to the SFTP server of an `sftp://user@host:port/...` path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    password: SecretStr | None = None
    private_key_file: str | None = None
    known_hosts: str | None = None
    timeout: float = 30.0


class S3Options(BaseModel):
    """How to reach the S3-compatible storage of an `s3://bucket/...` path; credentials left
    out come from boto3's usual chain (environment, ~/.aws, instance role)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    timeout: float = 60.0


@dataclass(frozen=True)
class FoundFile:
    """A file a glob matched. `key` names it in the manifest and in origins: its path
    relative to the project folder (absolute when outside it), `sftp://host[:port]/path`
    or `s3://bucket/key`."""

    key: str
    size: int
    mtime: float
    location: str


class Fetched:
    """A file's bytes as stored, and their SHA-256 (computed beside the caller's parsing
    when the bytes were read locally).

    Local files are read into Arrow's memory pool (`buffer`), which reuses its memory
    from one file to the next; `data` is the same bytes as a `bytes` object (a copy, made
    on first use when the file was read into the pool).
    """

    def __init__(self, content: bytes | pa.Buffer, digest: str | Future[str]) -> None:
        self._content = content
        self._digest = digest

    @property
    def buffer(self) -> pa.Buffer:
        content = self._content
        return content if isinstance(content, pa.Buffer) else pa.py_buffer(content)

    @property
    def data(self) -> bytes:
        if isinstance(self._content, pa.Buffer):
            self._content = self._content.to_pybytes()
        return self._content

    @property
    def size(self) -> int:
        return len(self._content)

    def sha256(self) -> str:
        return self._digest if isinstance(self._digest, str) else self._digest.result()


class FileSystem(ABC):
    """Lists and reads the files of one source; a context manager that closes connections."""

    def __init__(self, source: str) -> None:
        self.source = source

    @abstractmethod
    def list_files(self) -> list[FoundFile]:
        """The files the source's path matches, sorted by key."""

    @abstractmethod
    def read(self, found: FoundFile) -> Fetched | None:
        """The file's bytes, or None when it has gone since it was listed."""

    def close(self) -> None:  # noqa: B027 - most file systems hold no connection
        """Release connections (none by default)."""

    def __enter__(self) -> FileSystem:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_file_system(
    path: str,
    *,
    project_dir: Path,
    source: str,
    sftp: SftpOptions | None = None,
    s3: S3Options | None = None,
) -> FileSystem:
    """The file system a source's `path` names: `sftp://`, `s3://` or a local path/glob."""
    if path.startswith("sftp://"):
        return SftpFiles(path, sftp or SftpOptions(), project_dir=project_dir, source=source)
    if path.startswith("s3://"):
        return S3Files(path, s3 or S3Options(), source=source)
    return LocalFiles(path, project_dir=project_dir, source=source)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex that fully matches the paths `pattern` matches (see the module docstring)."""
    parts = pattern.split("/")
    out = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]*/)*")
        else:
            out.append(_segment_regex(part) + ("" if last else "/"))
    return re.compile("".join(out))


def _segment_regex(part: str) -> str:
    out = []
    index = 0
    while index < len(part):
        char = part[index]
        close = part.find("]", index + 2) if char == "[" else -1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif close != -1:
            body = part[index + 1 : close]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            index = close
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


def _split_static(pattern: str) -> tuple[str, str]:
    """(the folder before the first segment with a wildcard, the rest); ("", pattern) when
    the first segment has one, (pattern, "") when none has."""
    parts = pattern.split("/")
    for index, part in enumerate(parts):
        if part == "**" or _MAGIC.search(part):
            return "/".join(parts[:index]), "/".join(parts[index:])
    return pattern, ""


def _hidden(relative: str, rest_pattern: str) -> bool:
    """Whether a matched path has a dot-name the pattern did not spell."""
    spelled = ("/" + rest_pattern).count("/.")
    return ("/" + relative).count("/.") > spelled


# -- local -----------------------------------------------------------------------------------

# One thread, so that the pieces of a file are hashed in order.
_hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lakebed-sha256")
_READ_PIECE = 8 << 20


def _read_hashing(file: io.FileIO) -> Fetched:
    """The whole file, read into Arrow's memory pool a piece at a time while the pieces
    read so far are hashed on another thread (hashlib releases the GIL): the checksum is
    ready about when the last byte is read."""
    size = os.fstat(file.fileno()).st_size
    buffer = pa.allocate_buffer(size)
    view = memoryview(buffer)
    digest = hashlib.sha256()
    done = 0
    while done < size:
        count = file.readinto(view[done : done + _READ_PIECE])
        if not count:
            break
        _hasher.submit(digest.update, view[done : done + count])
        done += count
    if done != size or file.read(1):
        # The file changed size while it was read: read it again, whole.
        _hasher.submit(lambda: None).result()  # the hasher lets go of the buffer
        file.seek(0)
        data = file.read()
        return Fetched(data, _hasher.submit(lambda: hashlib.sha256(data).hexdigest()))
    return Fetched(buffer, _hasher.submit(digest.hexdigest))


class LocalFiles(FileSystem):
    """Files on this machine; a relative pattern is relative to the project folder."""

    def __init__(self, pattern: str, *, project_dir: Path, source: str) -> None:
        super().__init__(source)
        self.pattern = pattern
        self.project_dir = project_dir

    def list_files(self) -> list[FoundFile]:
        full = (
            Path(self.pattern) if os.path.isabs(self.pattern) else self.project_dir / self.pattern
        )
        static, rest = _split_static(full.as_posix())
        hint = f"check `path` (relative paths start at {self.project_dir})"
        if not rest and Path(static).is_dir():
            rest = "*"
        if not rest:
            if not Path(static).is_file():
                raise IngestError(f"no such file {self.pattern}", source=self.source, hint=hint)
            pattern = static
        else:
            static = static or ("/" if full.is_absolute() else ".")
            if not Path(static).is_dir():
                raise IngestError(
                    f"no such folder {static} for {self.pattern}", source=self.source, hint=hint
                )
            pattern = f"{static.rstrip('/')}/{rest}"
        found = []
        for name in glob.glob(pattern, recursive=True):
            try:
                info = os.stat(name)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            found.append(FoundFile(self._key(name), info.st_size, info.st_mtime, name))
        return sorted(found, key=lambda f: f.key)

    def _key(self, name: str) -> str:
        if os.path.isabs(self.pattern):
            return Path(name).as_posix()
        return Path(os.path.relpath(name, self.project_dir)).as_posix()

    def read(self, found: FoundFile) -> Fetched | None:
        try:
            with open(found.location, "rb", buffering=0) as file:
                return _read_hashing(file)
        except FileNotFoundError:
            return None


# -- remote ----------------------------------------------------------------------------------


class _AuthFailedError(Exception):
    """A remote refused our credentials (never retried)."""


class _TransientError(Exception):
    """A remote call failed in a way another attempt may not."""


class _RemoteFiles(FileSystem):
    """Retries around every remote call; subclasses say which failures are which."""

    where: str  # e.g. "SFTP server host:22", for messages

    def _call(self, doing: str, target: str, action: Callable[[], _T]) -> _T:
        attempts = len(RETRY_DELAYS) + 1
        for attempt in range(attempts):
            try:
                return action()
            except _AuthFailedError as exc:
                raise SourceAuthError(
                    f"authentication failed at {self.where} ({doing} {target}): {exc}",
                    source=self.source,
                    hint=self._auth_hint(),
                ) from exc.__cause__
            except _TransientError as exc:
                self._reset()
                if attempt + 1 == attempts:
                    raise SourceUnavailableError(
                        f"cannot reach {self.where} to {doing} {target} after {attempts} "
                        f"attempts: {exc}",
                        source=self.source,
                        hint="check that the server is up and reachable from this machine",
                    ) from exc.__cause__
                time.sleep(RETRY_DELAYS[attempt])
        raise AssertionError("unreachable")

    def _auth_hint(self) -> str:
        return "check the source's credentials"

    def _reset(self) -> None:
        """Drop the connection so that the next attempt opens a new one."""


class SftpFiles(_RemoteFiles):
    """Files on an SFTP server (paramiko); host keys are checked against `known_hosts`
    (default: ~/.ssh/known_hosts) and an unknown host is refused."""

    def __init__(self, url: str, options: SftpOptions, *, project_dir: Path, source: str) -> None:
        super().__init__(source)
        self.options = options
        self.project_dir = project_dir
        netloc, _, path = url.removeprefix("sftp://").partition("/")
        user, _, hostport = netloc.rpartition("@")
        host, _, port = hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
        self.user = user or getpass.getuser()
        self.host = host.strip("[]")
        self.port = int(port) if port else 22
        self.pattern = "/" + path
        self.where = f"SFTP server {self.host}:{self.port}"
        self._ssh: Any = None
        self._sftp: Any = None

    def _key(self, path: str) -> str:
        port = "" if self.port == 22 else f":{self.port}"
        return f"sftp://{self.host}{port}{path}"

    def _client(self) -> Any:
        if self._sftp is None:
            import paramiko

            ssh = paramiko.SSHClient()
            if self.options.known_hosts:
                ssh.load_host_keys(str(self.project_dir / self.options.known_hosts))
            else:
                ssh.load_system_host_keys()
            ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
            key_file = self.options.private_key_file
            explicit = self.options.password is not None or key_file is not None
            try:
                ssh.connect(
                    self.host,
                    port=self.port,
                    username=self.user,
                    password=secret(self.options.password),
                    key_filename=str(self.project_dir / key_file) if key_file else None,
                    timeout=self.options.timeout,
                    banner_timeout=self.options.timeout,
                    auth_timeout=self.options.timeout,
                    allow_agent=not explicit,
                    look_for_keys=not explicit,
                )
                sftp = ssh.open_sftp()
                sftp.get_channel().settimeout(self.options.timeout)
            except BaseException:
                ssh.close()
                raise
            self._ssh, self._sftp = ssh, sftp
        return self._sftp

    def _reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
        self._ssh = self._sftp = None

    def _auth_hint(self) -> str:
        return f"check sftp.password or sftp.private_key_file for user {self.user}"

    def _sftp_call(self, doing: str, target: str, action: Callable[[Any], _T]) -> _T:
        import paramiko

        def attempt() -> _T:
            try:
                return action(self._client())
            except paramiko.AuthenticationException as exc:
                raise _AuthFailedError(str(exc) or type(exc).__name__) from exc
            except paramiko.BadHostKeyException as exc:
                raise IngestError(
                    f"{self.where} presented a different host key than known_hosts records",
                    source=self.source,
                    hint="if the server's key really changed, update its known_hosts entry",
                ) from exc
            except (FileNotFoundError, PermissionError):
                raise
            except paramiko.SSHException as exc:
                if "known_hosts" in str(exc):
                    raise IngestError(
                        f"{self.where} is not in known_hosts",
                        source=self.source,
                        hint="add its key with `ssh-keyscan -p PORT HOST >> known_hosts` and "
                        "set sftp.known_hosts to that file",
                    ) from exc
                raise _TransientError(str(exc) or type(exc).__name__) from exc
            except (OSError, EOFError) as exc:
                raise _TransientError(str(exc) or type(exc).__name__) from exc

        return self._call(doing, target, attempt)

    def list_files(self) -> list[FoundFile]:
        static, rest = _split_static(self.pattern)
        static = static or "/"
        regex = glob_regex(self.pattern)
        depth = None if "**" in rest.split("/") else len(rest.split("/"))

        def listing(sftp: Any) -> list[FoundFile]:
            if not rest:
                attrs = sftp.stat(static)
                return [FoundFile(self._key(static), attrs.st_size, float(attrs.st_mtime), static)]
            found = []
            for path, attrs in self._walk(sftp, static, depth):
                relative = path[len(static) :].lstrip("/")
                if regex.fullmatch(path) and not _hidden(relative, rest):
                    found.append(
                        FoundFile(self._key(path), attrs.st_size, float(attrs.st_mtime), path)
                    )
            return sorted(found, key=lambda f: f.key)

        try:
            return self._sftp_call("list", self.pattern, listing)
        except (FileNotFoundError, PermissionError) as exc:
            raise IngestError(
                f"cannot list {static} on {self.where}: {exc}",
                source=self.source,
                hint="check the folder in `path` and that the user may read it",
            ) from exc

    def _walk(self, sftp: Any, folder: str, depth: int | None) -> Iterator[tuple[str, Any]]:
        for attrs in sftp.listdir_attr(folder):
            path = posixpath.join(folder, attrs.filename)
            mode = attrs.st_mode or 0
            if stat.S_ISLNK(mode):
                attrs = sftp.stat(
                    path
                )  # a link to a file counts; links to folders are not followed
                if stat.S_ISREG(attrs.st_mode or 0):
                    yield path, attrs
            elif stat.S_ISDIR(mode):
                if depth is None or depth > 1:
                    yield from self._walk(sftp, path, None if depth is None else depth - 1)
            elif stat.S_ISREG(mode):
                yield path, attrs

    def read(self, found: FoundFile) -> Fetched | None:
        def download(sftp: Any) -> Fetched:
            digest = hashlib.sha256()
            chunks = []
            with sftp.open(found.location, "rb") as handle:
                handle.prefetch(found.size)
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    chunks.append(chunk)
            return Fetched(b"".join(chunks), digest.hexdigest())

        try:
            return self._sftp_call("read", found.key, download)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise IngestError(
                f"cannot read {found.location} on {self.where}: {exc}", source=self.source
            ) from exc


_S3_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AuthorizationHeaderMalformed",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "SignatureDoesNotMatch",
    }
)
_S3_RETRY_CODES = frozenset(
    {"InternalError", "RequestTimeout", "ServiceUnavailable", "SlowDown", "Throttling"}
)


class _MissingError(Exception):
    """The bucket or object does not exist."""


class S3Files(_RemoteFiles):
    """Objects in S3-compatible storage (boto3), listed with `list_objects_v2` under the
    pattern's fixed prefix."""

    def __init__(self, url: str, options: S3Options, *, source: str) -> None:
        super().__init__(source)
        self.options = options
        self.bucket, _, self.pattern = url.removeprefix("s3://").partition("/")
        self.where = f"S3 endpoint {options.endpoint_url or 'AWS'} (bucket {self.bucket})"
        self._s3: Any = None

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            region = self.options.region or ("us-east-1" if self.options.endpoint_url else None)
            self._s3 = boto3.session.Session().client(
                "s3",
                endpoint_url=self.options.endpoint_url,
                region_name=region,
                aws_access_key_id=self.options.access_key_id,
                aws_secret_access_key=secret(self.options.secret_access_key),
                aws_session_token=secret(self.options.session_token),
                config=Config(
                    retries={"max_attempts": 1},  # our own retries, with our own messages
                    connect_timeout=self.options.timeout,
                    read_timeout=self.options.timeout,
                ),
            )
        return self._s3

    def _auth_hint(self) -> str:
        return "check s3.access_key_id and s3.secret_access_key (and that they may read the bucket)"

    def _s3_call(self, doing: str, target: str, action: Callable[[Any], _T]) -> _T:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        def attempt() -> _T:
            try:
                return action(self._client())
            except (NoCredentialsError, PartialCredentialsError) as exc:
                raise _AuthFailedError(str(exc)) from exc
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", ""))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                if code in _S3_AUTH_CODES or status in (401, 403):
                    raise _AuthFailedError(f"{code}: {error.get('Message', '')}") from exc
                if code in ("NoSuchBucket", "NoSuchKey", "404") or status == 404:
                    raise _MissingError(code) from exc
                if code in _S3_RETRY_CODES or status >= 500:
                    raise _TransientError(f"{code}: {error.get('Message', '')}") from exc
                raise IngestError(
                    f"{self.where} refused to {doing} {target}: {code}: {error.get('Message')}",
                    source=self.source,
                ) from exc
            except (BotoCoreError, OSError) as exc:
                raise _TransientError(str(exc)) from exc

        return self._call(doing, target, attempt)

    def list_files(self) -> list[FoundFile]:
        static, rest = _split_static(self.pattern)
        prefix = f"{static}/" if static and rest else static
        regex = glob_regex(self.pattern)

        def listing(s3: Any) -> list[FoundFile]:
            found = []
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key.endswith("/") or not regex.fullmatch(key):
                        continue
                    if _hidden(key[len(prefix) :], rest):
                        continue
                    mtime = item["LastModified"].timestamp()
                    found.append(FoundFile(f"s3://{self.bucket}/{key}", item["Size"], mtime, key))
            return sorted(found, key=lambda f: f.key)

        try:
            return self._s3_call("list", f"s3://{self.bucket}/{prefix}", listing)
        except _MissingError as exc:
            raise IngestError(
                f"bucket {self.bucket} does not exist at {self.where}",
                source=self.source,
                hint="check the bucket in `path` and s3.endpoint_url",
            ) from exc

    def read(self, found: FoundFile) -> Fetched | None:
        def download(s3: Any) -> Fetched:
            body = s3.get_object(Bucket=self.bucket, Key=found.location)["Body"]
            digest = hashlib.sha256()
            chunks = []
            for chunk in body.iter_chunks(_CHUNK):
                digest.update(chunk)
                chunks.append(chunk)
            return Fetched(b"".join(chunks), digest.hexdigest())

        try:
            return self._s3_call("read", found.key, download)
        except _MissingError:
            return None
