"""Fixtures of the ingest tests: a real sshd and moto's S3 server for the files connector's
remote tests (one each per session), and `run_files` to run a files source once."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lakebed.ingest.base import (
    Batch,
    IngestProgress,
    Reject,
    SourceContext,
    connector_for,
    deep_merge,
)
from services.required import service_missing
from services.s3 import INSTALL_HINT as S3_INSTALL_HINT
from services.s3 import S3Server, moto_installed, start_s3
from services.sshd import INSTALL_HINT as SSHD_INSTALL_HINT
from services.sshd import SSHD, SshdServer, sshd_installed, start_sshd


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SshdServer]:
    """One real OpenSSH server (key login, internal SFTP) for the whole session."""
    if not sshd_installed():
        service_missing(f"OpenSSH server not found at {SSHD}; {SSHD_INSTALL_HINT}")
    server = start_sshd()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server (signatures checked) for the whole session."""
    if not moto_installed():
        service_missing(f"moto's server is not installed; {S3_INSTALL_HINT}")
    server = start_s3()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class FilesRun:
    """What one run of a files source yielded, with the state the runner would keep."""

    batches: list[Batch]
    state: dict[str, Any]
    progress: IngestProgress

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [row for batch in self.batches for row in batch.data.to_pylist()]

    @property
    def origins(self) -> list[tuple[str, int]]:
        """(location, position) of each row, in order."""
        pairs: list[tuple[str, int]] = []
        for batch in self.batches:
            location, position = batch.origin_columns()
            pairs.extend(zip(location.to_pylist(), position.to_pylist(), strict=True))
        return pairs

    @property
    def rejects(self) -> list[Reject]:
        return [reject for batch in self.batches for reject in batch.rejects]


RunFiles = Callable[..., FilesRun]


@pytest.fixture
def run_files(tmp_path: Path) -> RunFiles:
    """Run a `kind: files` source once: `run_files(options, state=None, project_dir=tmp_path)`.

    Calls the connector directly (as the runner would) and folds each batch's state delta
    into the state with `deep_merge`.
    """

    def run(
        options: Mapping[str, Any],
        state: Mapping[str, Any] | None = None,
        project_dir: Path | None = None,
    ) -> FilesRun:
        connector_class = connector_for("files")
        connector = connector_class(
            connector_class.options_model.model_validate(options),
            SourceContext("orders", project_dir or tmp_path),
        )
        progress = IngestProgress()
        new_state = dict(state or {})
        batches = []
        for batch in connector.batches(state or {}, progress):
            batches.append(batch)
            new_state = deep_merge(new_state, batch.state_delta)
        return FilesRun(batches, new_state, progress)

    return run
