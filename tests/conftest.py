"""Session-wide services: PostgreSQL and Kafka fixtures live here; the rest sit in sub-folders."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from services.kafka import INSTALL_HINT as KAFKA_INSTALL_HINT
from services.kafka import KafkaBroker, find_kafka, start_kafka
from services.postgres import INSTALL_HINT, PostgresServer, find_postgres_bin, start_postgres
from services.required import service_missing

_database_ids = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL cluster for the whole test session, deleted at its end."""
    if find_postgres_bin() is None:
        service_missing(f"PostgreSQL binaries not found under /usr/lib/postgresql; {INSTALL_HINT}")
    # Not under tmp_path: the server user could not reach it (see services/postgres.py).
    server = start_postgres()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of a fresh, empty database on the session's server."""
    return postgres_server.create_database(f"test_{os.getpid()}_{next(_database_ids)}")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One real Apache Kafka broker (KRaft, single node) for the whole session, deleted at its
    end. Tests that kill or restart it must leave it running on the same ports."""
    if find_kafka() is None:
        service_missing(f"Apache Kafka broker (or java) not found; {KAFKA_INSTALL_HINT}")
    broker = start_kafka()
    try:
        yield broker
    finally:
        broker.remove()
