"""A throwaway S3-compatible server for tests: moto's standalone server, as a child process.

    server = start_s3()                         # moto.server on a free loopback port
    server.create_bucket("landing")
    server.put("landing", "orders/a.csv", b"...")
    server.options()                            # endpoint and keys for the connector's s3:
    server.stop()

The server checks signatures: the harness creates an IAM user with a key and then turns
authentication on (moto's `reset-auth`), so a wrong secret is refused as it would be by S3.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import httpx

from services.ports import free_port

__all__ = ["INSTALL_HINT", "S3Server", "moto_installed", "start_s3"]

INSTALL_HINT = "install the dev dependencies with `make install` (PyPI package `moto[server]`)"
REGION = "us-east-1"


def moto_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("moto", "flask"))


def start_s3() -> S3Server:
    server = S3Server()
    server.start()
    return server


class S3Server:
    """moto's server on 127.0.0.1:`port`, with one IAM user whose key the tests use."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log_file = Path(tempfile.mkstemp(prefix="lakebed-moto-", suffix=".log")[1])
        self.access_key_id = ""
        self.secret_access_key = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
            self._create_user()
        except BaseException:
            self.stop()
            raise

    def _create_user(self) -> None:
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="lakebed")
        allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        policy = {"Version": "2012-10-17", "Statement": [allow_all]}
        iam.put_user_policy(UserName="lakebed", PolicyName="all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="lakebed")["AccessKey"]
        self.access_key_id = key["AccessKeyId"]
        self.secret_access_key = key["SecretAccessKey"]
        # From here on every request must be signed with a known key.
        httpx.post(f"{self.endpoint_url}/moto-api/reset-auth", content=b"0").raise_for_status()

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
        self.log_file.unlink(missing_ok=True)

    def options(self, **overrides: Any) -> dict[str, Any]:
        """The connector's `s3:` options for this server."""
        return {
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            **overrides,
        }

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=body)

    def delete(self, bucket: str, key: str) -> None:
        self.client().delete_object(Bucket=bucket, Key=key)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"{self.endpoint_url}/moto-api/", timeout=2)
                return
            except httpx.HTTPError:
                exited = self._process is not None and self._process.poll() is not None
                if exited or time.monotonic() > deadline:
                    log = self.log_file.read_text(errors="replace")[-4000:]
                    message = f"moto server did not start; {self.log_file}:\n{log}"
                    raise RuntimeError(message) from None
                time.sleep(0.1)
