"""A throwaway Apache Kafka broker for tests and benchmarks: the real broker from Maven Central.

    broker = start_kafka()          # format + start one KRaft node on free loopback ports
    broker.bootstrap                # "127.0.0.1:PORT", for confluent-kafka and kafka:// URLs
    broker.kill(); broker.start()   # crash and recover on the same data folder and ports
    broker.remove()                 # stop and delete the broker folder

`scripts/install-kafka.sh` (run by `make services`) resolves the broker jars into
${LAKEBED_CACHE:-~/.cache/lakebed}/kafka-<version>/libs. One JVM is broker and controller at
once (KRaft, no ZooKeeper), with replication factors of 1 and no rebalance delay so tests do
not wait on settings meant for clusters.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from services.ports import free_port

__all__ = [
    "INSTALL_HINT",
    "KAFKA_VERSION",
    "KafkaBroker",
    "KafkaNotInstalledError",
    "find_kafka",
    "start_kafka",
]

KAFKA_VERSION = os.environ.get("KAFKA_VERSION", "4.1.1")
INSTALL_HINT = (
    "install it with `make services` (scripts/install-kafka.sh resolves "
    f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION} with Maven)"
)
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

_SETTINGS = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",  # the default 50 slows down the first group join
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # After a kill the controller keeps the dead broker's registration for the session timeout
    # (9 s by default) and refuses the restarted broker until then.
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "auto.create.topics.enable": "true",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
}

# Log to a file only; INFO keeps startup and recovery visible when a start fails.
_LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
"""

_JVM_OPTIONS = [
    "-Xmx512m",
    "-Xms128m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]


class KafkaNotInstalledError(RuntimeError):
    """The broker jars (or java) are not on this machine."""


def find_kafka() -> Path | None:
    """The folder of broker jars left by scripts/install-kafka.sh, or None (also without java)."""
    cache = Path(os.environ.get("LAKEBED_CACHE") or Path.home() / ".cache" / "lakebed")
    home = cache / f"kafka-{KAFKA_VERSION}"
    if not (home / ".complete").exists() or shutil.which("java") is None:
        return None
    return home / "libs"


def start_kafka(base_dir: Path | None = None) -> KafkaBroker:
    """Format a single-node KRaft broker in `base_dir` (default: a new temp folder), start it."""
    broker = KafkaBroker(base_dir)
    broker.start()
    return broker


def _cluster_id() -> str:
    """A random cluster id as Kafka writes one: 16 bytes in unpadded URL-safe base64."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka's Uuid.randomUuid avoids these too
            return text


def _java_id() -> str:
    """Names the JDK in use: a class archive only maps into the JVM that dumped it."""
    java = os.path.realpath(shutil.which("java") or "java")
    stamp = os.stat(java).st_mtime_ns if os.path.exists(java) else 0
    return hashlib.sha1(f"{java}:{stamp}".encode()).hexdigest()[:12]


class KafkaBroker:
    """One KRaft node in `base_dir` (server.properties, data/, kafka.log) on loopback ports."""

    def __init__(self, base_dir: Path | None = None, *, libs: Path | None = None) -> None:
        found = libs or find_kafka()
        if found is None:
            raise KafkaNotInstalledError(f"Apache Kafka broker not found; {INSTALL_HINT}")
        self.libs = found
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="lakebed-kafka-"))
        self.base_dir = base_dir.resolve()
        self.data_dir = self.base_dir / "data"
        self.config_file = self.base_dir / "server.properties"
        self.log_file = self.base_dir / "kafka.log"
        self.port, self.controller_port = self._configured_ports() or (
            free_port(),
            free_port(),
        )
        # Class data sharing: an archive of the broker's loaded classes, dumped at the first
        # clean exit and mapped by every later JVM, halves the start time (see _java).
        self.class_archive = self.libs.parent / f"kafka-classes-{_java_id()}.jsa"
        self._dumping: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The client listener, as `bootstrap.servers` wants it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The lakebed bus URL of this broker."""
        return f"kafka://{self.bootstrap}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start the broker (formatting its storage the first time); wait until it serves."""
        if self.is_running():
            return
        if not (self.data_dir / "meta.properties").exists():
            self._format()
        command = self._java(MAIN_CLASS, str(self.config_file))
        if not self.class_archive.exists():
            # Each JVM dumps to its own file, renamed when it exits: concurrent runs never
            # map a half-written archive.
            self._dumping = self.class_archive.with_name(
                f"{self.class_archive.name}.{uuid.uuid4().hex}"
            )
            command.insert(1, f"-XX:ArchiveClassesAtExit={self._dumping}")
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=True,  # Ctrl-C in the terminal goes to pytest, not here
            )
        self._wait_ready(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: a controlled shutdown that flushes the logs. SIGKILL after `timeout`."""
        if self._process is None:
            return
        clean = True
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                clean = False
                self._process.kill()
                self._process.wait(10)
        self._process = None
        self._keep_class_archive(clean)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would: the next start recovers the logs."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self._process.wait(10)
        self._process = None
        self._keep_class_archive(False)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop and start on the same ports and data folder: everything acknowledged remains."""
        self.stop()
        self.start(timeout)

    def remove(self) -> None:
        """Stop the broker and delete its folder (config, data, log)."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.is_running() and self._process else None

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------

    def _keep_class_archive(self, clean_exit: bool) -> None:
        """Publish the archive the JVM dumped at exit; a killed JVM's may be half-written."""
        dumped, self._dumping = self._dumping, None
        if dumped is None:
            return
        if clean_exit and dumped.exists() and dumped.stat().st_size > 0:
            os.replace(dumped, self.class_archive)
        else:
            dumped.unlink(missing_ok=True)

    def _java(self, main_class: str, *args: str) -> list[str]:
        log4j = self.base_dir / "log4j2.properties"
        # An archive the JVM cannot use (a broken file) is ignored, with a warning turned off.
        archive = [f"-XX:SharedArchiveFile={self.class_archive}", "-Xlog:cds=off"]
        return [
            "java",
            *(archive if self.class_archive.exists() else []),
            *_JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.base_dir}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def _format(self) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)  # a half-finished format from an earlier failure
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        (self.base_dir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_file))
        settings = {
            **_SETTINGS,
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.data_dir),
        }
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        command = self._java(
            STORAGE_TOOL, "format", "-c", str(self.config_file), "-t", _cluster_id()
        )
        command.insert(1, "-XX:TieredStopAtLevel=1")  # short-lived: the JIT's C1 tier is enough
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"formatting Kafka storage in {self.data_dir} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}"
            )

    def _configured_ports(self) -> tuple[int, int] | None:
        """The ports of an existing broker folder, so a restart keeps the bootstrap valid."""
        try:
            lines = self.config_file.read_text().splitlines()
        except FileNotFoundError:
            return None
        settings = dict(line.split("=", 1) for line in lines if "=" in line)
        listeners = dict(
            item.split("://", 1) for item in settings.get("listeners", "").split(",") if item
        )
        try:
            return (
                int(listeners["PLAINTEXT"].rsplit(":", 1)[1]),
                int(listeners["CONTROLLER"].rsplit(":", 1)[1]),
            )
        except (KeyError, ValueError):
            return None

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def _wait_ready(self, timeout: float) -> None:
        """Until the broker answers a metadata request that lists itself."""
        # Short backoffs: librdkafka otherwise waits up to 10 s between connection attempts.
        admin = AdminClient(
            {
                "bootstrap.servers": self.bootstrap,
                "reconnect.backoff.ms": 20,
                "reconnect.backoff.max.ms": 100,
                "socket.connection.setup.timeout.ms": 1000,
                "log_level": 0,
                "logger": _silent,
            }
        )
        deadline = time.monotonic() + timeout
        while True:
            exited = self._process is None or self._process.poll() is not None
            if exited or time.monotonic() > deadline:
                why = "exited" if exited else f"did not answer within {timeout:.0f} s"
                self.kill()
                raise RuntimeError(
                    f"Kafka broker on {self.bootstrap} {why}; {self.log_file}:\n{self._log_tail()}"
                )
            try:
                metadata = admin.list_topics(timeout=0.5)
            except KafkaException:
                continue
            if metadata.brokers:
                return


class _Silent:
    """A logger for the readiness probe: connection refusals before the broker listens."""

    def log(self, *args: object, **kwargs: object) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        return self.log


_silent = _Silent()
