"""A fake JSON REST API for the `http` connector's tests: a real HTTP server on loopback.

    with FakeApi() as api:                       # 250 records, on a free 127.0.0.1 port
        api.url("/page")                         # http://127.0.0.1:PORT/page
        api.require_bearer("s3cret")             # wrong or missing credentials → 401
        api.inject(Fault(status=429, headers={"Retry-After": "1"}, times=2))
        api.add(updated_at="...")                # data changes between runs
        api.requests                             # every request it got, in order

Endpoints (GET), each filtering by `?updated_since=` (inclusive) when it is given:

    /page    ?page=N (from 1) &per_page=K     {"data": [...], "page": N, "total_pages": T}
    /offset  ?offset=N &limit=K               {"items": [...], "total": T}
    /cursor  ?cursor=C &limit=K               {"results": [...], "meta": {"next_cursor": C|null}}
    /next    ?after=N &limit=K                {"data": [...], "links": {"next": URL|null}}
    /link    ?page=N &per_page=K              [...]  with  Link: <URL>; rel="next"
    /all                                      {"data": {"items": [...]}}

Records are `{"id", "name", "updated_at", "owner": {...}, "tags": [...]}`; two records share
each `updated_at`, so the largest value is held by two records. Tests may put anything in
`api.records`, including items that are not objects (they are served as they are).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["FakeApi", "Fault", "RecordedRequest", "timestamp"]

DEFAULT_PAGE_SIZE = 25
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def timestamp(minutes: int) -> str:
    """The `updated_at` text `minutes` after 2024-01-01T00:00:00Z."""
    return (_EPOCH + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RecordedRequest:
    """A request as the server got it, and what it answered."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    at: float  # time.monotonic() on arrival
    status: int = 0
    response_bytes: int = 0


@dataclass
class Fault:
    """What to do instead of (or before) answering a request that `when` matches.

    `delay` sleeps first (longer than the client's timeout: a timeout); then `drop` closes
    the connection without an answer, `status` answers with `body`, or the request is
    served normally. `times` is how many requests it hits (None: every one).
    """

    status: int | None = None
    body: bytes = b'{"error": "injected fault"}'
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    when: Callable[[RecordedRequest], bool] | None = None
    times: int | None = 1


class FakeApi:
    """The server, its data, its credentials and its faults."""

    def __init__(self, count: int = 250) -> None:
        self.records: list[Any] = [_record(i) for i in range(count)]
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.absolute_links = False
        self.link_base: str | None = None  # next links to another server
        self._check: Callable[[RecordedRequest], bool] | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.api = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeApi:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeApi:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- data ------------------------------------------------------------------------------

    def add(self, **fields: Any) -> dict[str, Any]:
        """A new record (next id), with `fields` over the generated ones."""
        with self._lock:
            ids = [r["id"] for r in self.records if isinstance(r, dict) and "id" in r]
            record = {**_record(max(ids, default=-1) + 1), **fields}
            self.records.append(record)
            return record

    def update(self, record_id: int, **fields: Any) -> dict[str, Any]:
        """Change record `record_id` in place; returns it as it is now."""
        with self._lock:
            for record in self.records:
                if isinstance(record, dict) and record.get("id") == record_id:
                    record.update(fields)
                    return dict(record)
        raise KeyError(record_id)

    # -- credentials -----------------------------------------------------------------------

    def require_bearer(self, token: str) -> None:
        self._check = lambda r: r.headers.get("authorization") == f"Bearer {token}"

    def require_basic(self, username: str, password: str) -> None:
        encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._check = lambda r: r.headers.get("authorization") == f"Basic {encoded}"

    def require_api_key(self, name: str, value: str, location: str = "header") -> None:
        if location == "header":
            self._check = lambda r: r.headers.get(name.lower()) == value
        else:
            self._check = lambda r: r.query.get(name) == value

    # -- faults and history ----------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def served_bytes(self) -> int:
        """Body bytes of every successful answer so far."""
        return sum(r.response_bytes for r in self.requests if 200 <= r.status < 300)

    def clear(self) -> None:
        self.requests.clear()

    # -- serving ---------------------------------------------------------------------------

    def _fault_for(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times == 0 or (fault.when is not None and not fault.when(request)):
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    def _visible(self, query: dict[str, str]) -> list[Any]:
        since = query.get("updated_since")
        with self._lock:
            items = list(self.records)
        if since is None:
            return items
        return [r for r in items if not isinstance(r, dict) or r.get("updated_at", "") >= since]

    def _link(self, path: str, query: dict[str, str], **changes: Any) -> str:
        link = f"{path}?{urlencode({**query, **changes})}"
        if self.link_base is not None:
            return self.link_base + link
        return self.base_url + link if self.absolute_links else link

    def answer(self, request: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        """Status, headers and JSON body for a request that passed faults and credentials."""
        items = self._visible(request.query)
        query = request.query
        if request.path == "/all":
            return 200, {}, {"data": {"items": items}}
        if request.path in ("/page", "/link"):
            page, size = int(query.get("page", "1")), int(query.get("per_page", DEFAULT_PAGE_SIZE))
            chunk = items[(page - 1) * size : page * size]
            total_pages = -(-len(items) // size)
            if request.path == "/page":
                return 200, {}, {"data": chunk, "page": page, "total_pages": total_pages}
            headers = {}
            if page < total_pages:
                headers["Link"] = (
                    f'<{self._link("/link", query, page=page + 1)}>; rel="next", '
                    f'<{self._link("/link", query, page=total_pages)}>; rel="last"'
                )
            return 200, headers, chunk
        limit = int(query.get("limit", DEFAULT_PAGE_SIZE))
        if request.path == "/offset":
            offset = int(query.get("offset", "0"))
            return 200, {}, {"items": items[offset : offset + limit], "total": len(items)}
        if request.path == "/cursor":
            start = int(base64.urlsafe_b64decode(query["cursor"])) if "cursor" in query else 0
            end = start + limit
            cursor = (
                base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else None
            )
            return 200, {}, {"results": items[start:end], "meta": {"next_cursor": cursor}}
        if request.path == "/next":
            after = int(query.get("after", "0"))
            end = after + limit
            link = self._link("/next", query, after=end) if end < len(items) else None
            return 200, {}, {"data": items[after:end], "links": {"next": link}}
        return 404, {}, {"error": f"no endpoint {request.path}"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do
    disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK

    def do_GET(self) -> None:
        api: FakeApi = self.server.api  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        request = RecordedRequest(
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            at=time.monotonic(),
        )
        api.requests.append(request)
        try:
            self._serve(api, request)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout test)

    def _serve(self, api: FakeApi, request: RecordedRequest) -> None:
        fault = api._fault_for(request)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                self.close_connection = True
                return
            if fault.status is not None:
                self._send(request, fault.status, fault.headers, fault.body, fault.content_type)
                return
        if api._check is not None and not api._check(request):
            body = json.dumps({"error": "invalid or missing credentials"}).encode()
            self._send(request, 401, {"WWW-Authenticate": "Bearer"}, body, "application/json")
            return
        status, headers, payload = api.answer(request)
        self._send(request, status, headers, json.dumps(payload).encode(), "application/json")

    def _send(
        self,
        request: RecordedRequest,
        status: int,
        headers: dict[str, str],
        body: bytes,
        content_type: str,
    ) -> None:
        request.status, request.response_bytes = status, len(body)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _record(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"record {i}",
        "updated_at": timestamp(i // 2),
        "owner": {"name": f"owner {i % 7}", "team": "blue" if i % 2 else "green"},
        "tags": [f"t{i % 3}", f"t{i % 5}"],
    }
