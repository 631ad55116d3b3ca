"""The files connector against real remote servers: an OpenSSH sshd (SFTP) and moto's S3
server, both on loopback: listing by glob, reading, the manifest, and what happens when
the server refuses the login or cannot be reached."""

from __future__ import annotations

import gzip
import hashlib
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lakebed.errors import IngestError, SourceAuthError, SourceUnavailableError
from lakebed.ingest.connectors import file_systems
from services.s3 import S3Server
from services.sshd import SshdServer

RunFiles = Callable[..., Any]  # the `run_files` fixture (tests/ingest/conftest.py)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> tuple[float, ...]:
    delays = (0.1, 0.2, 0.3)
    monkeypatch.setattr(file_systems, "RETRY_DELAYS", delays)
    return delays


@pytest.fixture
def slow_retries(monkeypatch: pytest.MonkeyPatch) -> tuple[float, ...]:
    """Retry delays long enough that a test notices any retry at all."""
    delays = (10.0, 10.0, 10.0)
    monkeypatch.setattr(file_systems, "RETRY_DELAYS", delays)
    return delays


# -- SFTP ------------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A folder the SFTP tests put files in (sshd serves the whole file system)."""
    folder = tmp_path / "served"
    folder.mkdir()
    return folder


def _sftp_options(server: SshdServer, path: str, **sftp: Any) -> dict[str, Any]:
    login = {"private_key_file": str(server.private_key), "known_hosts": str(server.known_hosts)}
    return {"path": server.url(path), "sftp": {**login, **sftp}}


@pytest.mark.sftp
def test_sftp_glob_loads_each_matching_file_with_an_sftp_key(
    sftp_server: SshdServer, served: Path, run_files: RunFiles
) -> None:
    (served / "b.csv").write_bytes(b"id,v\n2,b\n")
    (served / "a.csv").write_bytes(b"id,v\n1,a\n")
    (served / "skip.json").write_bytes(b"[]")
    (served / ".hidden.csv").write_bytes(b"id,v\n9,z\n")
    run = run_files(_sftp_options(sftp_server, f"{served}/*.csv"))
    key_a = f"sftp://127.0.0.1:{sftp_server.port}{served}/a.csv"
    key_b = f"sftp://127.0.0.1:{sftp_server.port}{served}/b.csv"
    assert [b.label for b in run.batches] == [key_a, key_b]
    assert run.rows == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]
    assert run.origins == [(key_a, 2), (key_b, 2)]
    entry = run.state["files"][key_a]
    assert entry["sha256"] == hashlib.sha256(b"id,v\n1,a\n").hexdigest()
    assert entry["size"] == len(b"id,v\n1,a\n")
    assert entry["mtime"] == int((served / "a.csv").stat().st_mtime)


@pytest.mark.sftp
def test_sftp_recursive_glob_and_compressed_files(
    sftp_server: SshdServer, served: Path, run_files: RunFiles
) -> None:
    (served / "2024" / "01").mkdir(parents=True)
    (served / "2024" / "01" / "events.ndjson.gz").write_bytes(gzip.compress(b'{"n": 1}\n'))
    (served / "top.ndjson.gz").write_bytes(gzip.compress(b'{"n": 0}\n'))
    run = run_files(_sftp_options(sftp_server, f"{served}/**/*.ndjson.gz"))
    assert [b.label.rsplit("/served/", 1)[1] for b in run.batches] == [
        "2024/01/events.ndjson.gz",
        "top.ndjson.gz",
    ]
    assert run.rows == [{"n": 1}, {"n": 0}]


@pytest.mark.sftp
def test_sftp_manifest_skips_loaded_files_and_reloads_changed_ones(
    sftp_server: SshdServer, served: Path, run_files: RunFiles
) -> None:
    (served / "a.csv").write_bytes(b"id\n1\n")
    options = _sftp_options(sftp_server, f"{served}/*.csv")
    first = run_files(options)
    assert run_files(options, first.state).batches == []
    (served / "a.csv").write_bytes(b"id\n1\n2\n")
    (served / "b.csv").write_bytes(b"id\n3\n")
    third = run_files(options, first.state)
    changed, new = third.batches
    assert changed.replace_predicate is not None
    assert changed.data.to_pylist() == [{"id": 1}, {"id": 2}]
    assert new.replace_predicate is None
    assert new.data.to_pylist() == [{"id": 3}]


@pytest.mark.sftp
def test_sftp_literal_file_path_loads_that_file(
    sftp_server: SshdServer, served: Path, run_files: RunFiles
) -> None:
    (served / "only.csv").write_bytes(b"id\n7\n")
    assert run_files(_sftp_options(sftp_server, f"{served}/only.csv")).rows == [{"id": 7}]


@pytest.mark.sftp
def test_sftp_wrong_password_fails_at_once_as_authentication(
    sftp_server: SshdServer, served: Path, run_files: RunFiles, slow_retries: tuple[float, ...]
) -> None:
    options = {
        "path": sftp_server.url(f"{served}/*.csv"),
        "sftp": {"password": "not-the-password", "known_hosts": str(sftp_server.known_hosts)},
    }
    started = time.monotonic()
    with pytest.raises(SourceAuthError, match="authentication failed") as error:
        run_files(options)
    assert time.monotonic() - started < slow_retries[0]  # no retry
    assert f"127.0.0.1:{sftp_server.port}" in str(error.value)
    assert error.value.hint is not None
    assert "sftp.password" in error.value.hint
    assert "not-the-password" not in str(error.value)


@pytest.mark.sftp
def test_sftp_unauthorized_key_fails_as_authentication(
    sftp_server: SshdServer, served: Path, run_files: RunFiles, slow_retries: tuple[float, ...]
) -> None:
    options = _sftp_options(
        sftp_server, f"{served}/*.csv", private_key_file=str(sftp_server.other_key)
    )
    with pytest.raises(SourceAuthError, match="authentication failed"):
        run_files(options)


@pytest.mark.sftp
def test_sftp_unknown_host_key_is_refused(
    sftp_server: SshdServer, served: Path, tmp_path: Path, run_files: RunFiles
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    options = _sftp_options(sftp_server, f"{served}/*.csv", known_hosts=str(empty))
    with pytest.raises(IngestError, match="not in known_hosts") as error:
        run_files(options)
    assert not isinstance(error.value, SourceUnavailableError)


@pytest.mark.sftp
def test_sftp_missing_folder_is_an_ingest_error_naming_it(
    sftp_server: SshdServer, served: Path, run_files: RunFiles
) -> None:
    with pytest.raises(IngestError, match=r"cannot list .*/nowhere"):
        run_files(_sftp_options(sftp_server, f"{served}/nowhere/*.csv"))


def test_sftp_unreachable_server_is_retried_then_names_host_and_path(
    tmp_path: Path, run_files: RunFiles, quick_retries: tuple[float, ...]
) -> None:
    port = _closed_port()
    options = {"path": f"sftp://me@127.0.0.1:{port}/in/*.csv", "sftp": {"password": "x"}}
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError) as error:
        run_files(options)
    assert time.monotonic() - started >= sum(quick_retries)  # every retry waited
    message = str(error.value)
    assert f"SFTP server 127.0.0.1:{port}" in message
    assert "/in/*.csv" in message
    assert f"after {len(quick_retries) + 1} attempts" in message
    assert error.value.source == "orders"


# -- S3 --------------------------------------------------------------------------------------


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    name = f"landing-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name


@pytest.mark.s3
def test_s3_glob_loads_matching_objects_with_s3_keys(
    s3_server: S3Server, bucket: str, run_files: RunFiles
) -> None:
    s3_server.put(bucket, "orders/2024/b.csv", b"id\n2\n")
    s3_server.put(bucket, "orders/2024/a.csv", b"id\n1\n")
    s3_server.put(bucket, "orders/2024/deeper/c.csv", b"id\n3\n")
    s3_server.put(bucket, "orders/2024/a.json", b"[]")
    s3_server.put(bucket, "orders/2024/.tmp.csv", b"id\n9\n")
    run = run_files({"path": f"s3://{bucket}/orders/*/*.csv", "s3": s3_server.options()})
    assert [b.label for b in run.batches] == [
        f"s3://{bucket}/orders/2024/a.csv",
        f"s3://{bucket}/orders/2024/b.csv",
    ]
    assert run.rows == [{"id": 1}, {"id": 2}]
    assert run.origins == [
        (f"s3://{bucket}/orders/2024/a.csv", 2),
        (f"s3://{bucket}/orders/2024/b.csv", 2),
    ]
    entry = run.state["files"][f"s3://{bucket}/orders/2024/a.csv"]
    assert entry["sha256"] == hashlib.sha256(b"id\n1\n").hexdigest()
    assert entry["size"] == 5
    deep = run_files({"path": f"s3://{bucket}/orders/**/*.csv", "s3": s3_server.options()})
    assert len(deep.batches) == 3


@pytest.mark.s3
def test_s3_compressed_parquet_and_ndjson_objects(
    s3_server: S3Server, bucket: str, run_files: RunFiles
) -> None:
    s3_server.put(bucket, "e/1.ndjson.gz", gzip.compress(b'{"n": 1}\n{"n": 2}\n'))
    run = run_files({"path": f"s3://{bucket}/e/*.ndjson.gz", "s3": s3_server.options()})
    assert run.rows == [{"n": 1}, {"n": 2}]
    assert run.batches[0].bytes_read == len(gzip.compress(b'{"n": 1}\n{"n": 2}\n'))


@pytest.mark.s3
def test_s3_manifest_skips_loaded_objects_and_reloads_changed_ones(
    s3_server: S3Server, bucket: str, run_files: RunFiles
) -> None:
    s3_server.put(bucket, "in/a.csv", b"id\n1\n")
    options = {"path": f"s3://{bucket}/in/*.csv", "s3": s3_server.options()}
    first = run_files(options)
    assert run_files(options, first.state).batches == []
    s3_server.put(bucket, "in/a.csv", b"id\n1\n2\n")
    (changed,) = run_files(options, first.state).batches
    assert changed.replace_predicate == f"_origin = 's3://{bucket}/in/a.csv'"
    assert changed.data.to_pylist() == [{"id": 1}, {"id": 2}]


@pytest.mark.s3
def test_s3_wrong_secret_fails_at_once_as_authentication(
    s3_server: S3Server, bucket: str, run_files: RunFiles, slow_retries: tuple[float, ...]
) -> None:
    s3_server.put(bucket, "in/a.csv", b"id\n1\n")
    options = {
        "path": f"s3://{bucket}/in/*.csv",
        "s3": s3_server.options(secret_access_key="wrong-secret"),
    }
    started = time.monotonic()
    with pytest.raises(SourceAuthError, match="authentication failed") as error:
        run_files(options)
    assert time.monotonic() - started < slow_retries[0]
    assert "SignatureDoesNotMatch" in str(error.value)
    assert s3_server.endpoint_url in str(error.value)
    assert "wrong-secret" not in str(error.value)


@pytest.mark.s3
def test_s3_missing_bucket_is_an_ingest_error_naming_it(
    s3_server: S3Server, run_files: RunFiles
) -> None:
    options = {"path": "s3://no-such-bucket-here/in/*.csv", "s3": s3_server.options()}
    with pytest.raises(IngestError, match="bucket no-such-bucket-here does not exist") as error:
        run_files(options)
    assert not isinstance(error.value, SourceUnavailableError)


def test_s3_unreachable_endpoint_is_retried_then_names_endpoint_and_path(
    run_files: RunFiles, quick_retries: tuple[float, ...]
) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    options = {
        "path": "s3://landing/in/*.csv",
        "s3": {"endpoint_url": endpoint, "access_key_id": "a", "secret_access_key": "b"},
    }
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError) as error:
        run_files(options)
    assert time.monotonic() - started >= sum(quick_retries)
    message = str(error.value)
    assert endpoint in message
    assert "s3://landing/in/" in message
    assert f"after {len(quick_retries) + 1} attempts" in message
