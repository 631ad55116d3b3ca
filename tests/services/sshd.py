"""A throwaway OpenSSH server for tests: the real sshd from Debian's `openssh-server`.

    server = start_sshd()                       # keys, config and log in a new temp folder
    server.url("/srv/in/*.csv")                 # sftp://USER@127.0.0.1:PORT/srv/in/*.csv
    server.private_key, server.known_hosts      # files for the connector's sftp: options
    server.stop()                               # stop sshd and delete the folder

sshd runs in the foreground as our child (`sshd -D -e -f CONFIG`) on a free loopback port,
with its own host key, an authorized client key and the internal SFTP subsystem. Users log
in as the user running the tests, by key only: password logins are offered so that a wrong
password is refused as such, but no test user has a password.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from services.ports import free_port

__all__ = ["SSHD", "SshdNotInstalledError", "SshdServer", "start_sshd"]

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
INSTALL_HINT = "install it with `make services` (Debian package `openssh-server`)"
_PRIVSEP_DIR = Path("/run/sshd")  # sshd checks for it when started as root


class SshdNotInstalledError(RuntimeError):
    """sshd or ssh-keygen is not on this machine."""


def sshd_installed() -> bool:
    return SSHD.exists() and shutil.which(SSH_KEYGEN) is not None


def start_sshd(base_dir: Path | None = None) -> SshdServer:
    server = SshdServer(base_dir)
    server.start()
    return server


class SshdServer:
    """One sshd with its files in `base_dir`: host key, client keys, config, log."""

    def __init__(self, base_dir: Path | None = None) -> None:
        if not sshd_installed():
            raise SshdNotInstalledError(f"{SSHD} or {SSH_KEYGEN} not found; {INSTALL_HINT}")
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="lakebed-sshd-")).resolve()
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = self.base_dir / "ssh_host_ed25519_key"
        self.private_key = self.base_dir / "client_ed25519_key"
        self.other_key = self.base_dir / "unauthorized_ed25519_key"
        self.known_hosts = self.base_dir / "known_hosts"
        self.config = self.base_dir / "sshd_config"
        self.log_file = self.base_dir / "sshd.log"
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        """An sftp:// URL of `path` (absolute) on this server."""
        return f"sftp://{self.user}@127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 20.0) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for key in (self.host_key, self.private_key, self.other_key):
            if not key.exists():
                _run(SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key))
        (self.base_dir / "authorized_keys").write_text(Path(f"{self.private_key}.pub").read_text())
        host_public = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_public[0]} {host_public[1]}\n")
        self.config.write_text(
            f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {self.base_dir / "sshd.pid"}
AuthorizedKeysFile {self.base_dir / "authorized_keys"}
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""
        )
        if os.geteuid() == 0:
            _PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to pytest, not here
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        self._process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            exited = self._process is not None and self._process.poll() is not None
            if exited or time.monotonic() > deadline:
                log = self.log_file.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"sshd did not start; {self.log_file}:\n{log}")
            time.sleep(0.05)


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}: {done.stderr}")
