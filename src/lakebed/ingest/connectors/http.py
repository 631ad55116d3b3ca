"""The `http` connector: the records of a JSON REST API, every page of a run in one batch.

    sources:
      tickets:
        kind: http
        url: https://api.example.com/v1/tickets
        params: {status: open}
        records_path: data.items               # "" when the body is the list itself
        auth: {type: bearer, token: ...}       # or basic, or api_key (in header or query)
        paginate: {type: cursor, cursor_param: cursor, next_cursor_path: meta.next}
        incremental: {cursor_field: updated_at, param: updated_since}

Requests that time out, fail to connect or get a 5xx are retried with exponential backoff
and jitter; a 429 (or 5xx) with a `Retry-After` waits as long as it says. Other 4xx answers
and bodies that are not JSON fail the run at once. Every page of a run goes into one batch,
so a run that fails on page 7 writes nothing.

Incremental sources keep `{"cursor": max value loaded, "boundary": [hashes]}`: the request
asks for records from the cursor on (APIs' `updated_since` is usually inclusive), records
older than the cursor are dropped, and so are those at the cursor whose hash is in the
boundary, because they were loaded before. Reruns therefore load each version of a record
exactly once, whether or not the API filters by the parameter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from lakebed.errors import IngestError
from lakebed.ingest.base import (
    Batch,
    Connector,
    ConnectorOptions,
    IngestProgress,
    Reject,
    RowOrigins,
    SourceContext,
    register_connector,
)
from lakebed.ingest.connectors.http_paging import (
    MISSING,
    BackoffOptions,
    Credentials,
    CursorPaging,
    NoPaging,
    Page,
    PageFetcher,
    PageRequest,
    Paging,
    QueryValue,
    RateLimitOptions,
    json_kind,
    lookup,
    snippet,
)

__all__ = [
    "ApiKeyAuth",
    "BasicAuth",
    "BearerAuth",
    "HttpConnector",
    "HttpOptions",
    "IncrementalOptions",
    "records_to_table",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BearerAuth(_Strict):
    """`Authorization: Bearer <token>`."""

    type: Literal["bearer"] = "bearer"
    token: SecretStr


class BasicAuth(_Strict):
    """HTTP basic authentication."""

    type: Literal["basic"] = "basic"
    username: str
    password: SecretStr


class ApiKeyAuth(_Strict):
    """A key sent as a header (`in: header`) or a query parameter (`in: query`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["api_key"] = "api_key"
    name: str = Field(min_length=1)
    value: SecretStr
    location: Literal["header", "query"] = Field(default="header", alias="in")


Auth = Annotated[BearerAuth | BasicAuth | ApiKeyAuth, Field(discriminator="type")]


class IncrementalOptions(_Strict):
    """Load only records whose `cursor_field` (a dotted path) is at or past the largest
    value loaded so far; `param` sends that value to the API (None: the API cannot filter,
    the connector does); `initial` is the value for the first run."""

    cursor_field: str = Field(min_length=1)
    param: str | None = None
    initial: str | int | float | None = None


class HttpOptions(ConnectorOptions):
    """The options of a `kind: http` source."""

    url: str = Field(description="the endpoint; http:// or https://")
    params: dict[str, QueryValue] = Field(
        default_factory=dict, description="fixed query parameters (a followed link has its own)"
    )
    headers: dict[str, str] = Field(default_factory=dict)
    records_path: str = Field(
        default="", description='dotted path to the list of records; "" when the body is it'
    )
    auth: Auth | None = None
    paginate: Paging = Field(default_factory=NoPaging)
    incremental: IncrementalOptions | None = None
    timeout: float = Field(default=30.0, gt=0, description="seconds per request")
    max_retries: int = Field(default=5, ge=0, description="retries of a failed request")
    backoff: BackoffOptions = Field(default_factory=BackoffOptions)
    rate_limit: RateLimitOptions = Field(default_factory=RateLimitOptions)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"{value!r} is not a valid URL: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_meaning_per_parameter(self) -> HttpOptions:
        owners = dict.fromkeys(self.paginate.first_params(), "paginate")
        if isinstance(self.paginate, CursorPaging):
            owners[self.paginate.cursor_param] = "paginate.cursor_param"
        if self.incremental is not None and self.incremental.param is not None:
            owners[self.incremental.param] = "incremental.param"
        if isinstance(self.auth, ApiKeyAuth) and self.auth.location == "query":
            owners[self.auth.name] = "auth"
        for name in self.params:
            if name in owners:
                raise ValueError(f"params.{name} is also set by {owners[name]}; remove one")
        return self


@register_connector
class HttpConnector(Connector):
    """Reads a JSON REST API page by page; see the module docstring."""

    kind = "http"
    options_model = HttpOptions

    def __init__(self, options: ConnectorOptions, context: SourceContext) -> None:
        if not isinstance(options, HttpOptions):
            raise TypeError(f"HttpConnector needs HttpOptions, not {type(options).__name__}")
        super().__init__(options, context)
        self.http = options
        self.label = _display(httpx.URL(options.url), options.auth)

    def batches(self, state: Mapping[str, Any], progress: IngestProgress) -> Iterator[Batch]:
        opts = self.http
        cursor = _Cursor(opts.incremental, state, self.context.name) if opts.incremental else None
        taken = _Taken(self.label, cursor)
        bytes_read = 0
        params: dict[str, QueryValue] = {**opts.params, **opts.paginate.first_params()}
        if cursor is not None and cursor.start is not None and cursor.param is not None:
            params[cursor.param] = cursor.start
        request: PageRequest | None = PageRequest(httpx.URL(opts.url), params)
        seen: set[str] = set()
        last_digest = ""
        number = 0
        with self._fetcher() as fetcher:
            while request is not None:
                number += 1
                where = _display(request.url.copy_merge_params(request.params), opts.auth)
                if request.key() in seen:
                    raise IngestError(
                        f"pagination asks for page {number} at {where}, which it already read",
                        source=self.context.name,
                        origin=where,
                        hint="the API repeats its cursor or next link; check `paginate`",
                    )
                seen.add(request.key())
                response = fetcher.get(request, where)
                bytes_read += len(response.content)
                body = self._json(response, where)
                items = self._items(body, where)
                progress.advance("pages")
                progress.advance("rows", taken.add_page(number, items))
                digest = hashlib.sha1(response.content).hexdigest()
                if items and digest == last_digest:
                    raise IngestError(
                        f"page {number} is the same as page {number - 1}",
                        source=self.context.name,
                        origin=where,
                        hint="the API seems to ignore the paging parameters; check `paginate`",
                    )
                last_digest = digest
                page = Page(request, response, body, items, self.context.name, where)
                request = opts.paginate.next_request(page)
        if not taken.records and not taken.rejects:
            return
        yield Batch(
            data=records_to_table(taken.records),
            origins=taken.origins(),
            state_delta=cursor.state_delta() if cursor is not None else {},
            rejects=taken.rejects,
            bytes_read=bytes_read,
            label=self.label,
        )

    def describe_state(self, state: Mapping[str, Any]) -> str:
        incremental = self.http.incremental
        if incremental is None:
            return "loads everything on every run (not incremental)"
        if "cursor" not in state:
            start = "" if incremental.initial is None else f" (starts at {incremental.initial})"
            return f"nothing loaded yet{start}"
        return f"cursor {incremental.cursor_field} = {state['cursor']}"

    def _fetcher(self) -> PageFetcher:
        opts, source = self.http, f"sources.{self.context.name}"
        if opts.auth is None:
            auth_hint = (
                f"the API wants credentials: add auth (bearer, basic or api_key) to {source}"
            )
        else:
            auth_hint = f"the API refused the credentials: check {source}.auth in lakebed.yml"
        return PageFetcher(
            self.context.name,
            headers={"Accept": "application/json", "User-Agent": "lakebed", **opts.headers},
            timeout=opts.timeout,
            max_retries=opts.max_retries,
            backoff=opts.backoff,
            rate_limit=opts.rate_limit,
            credentials=_credentials(opts.auth, httpx.URL(opts.url)),
            auth_hint=auth_hint,
        )

    def _json(self, response: httpx.Response, where: str) -> Any:
        if response.status_code == 204:
            return None
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError) as exc:
            content_type = response.headers.get("content-type", "none")
            raise IngestError(
                f"the response is not JSON (content type {content_type}): {snippet(response)!r}",
                source=self.context.name,
                origin=where,
                hint="check `url`: the API must answer with a JSON body",
            ) from exc

    def _items(self, body: Any, where: str) -> list[Any]:
        path = self.http.records_path
        if body is None:
            return []
        value = lookup(body, path)
        if isinstance(value, list):
            return value
        if value is None:
            return []
        what = f"records_path {path!r}" if path else "the body"
        found = "is not in the body" if value is MISSING else f"is {json_kind(value)}, not a list"
        keys = (
            f"; the body's keys are {', '.join(list(body)[:20])}" if isinstance(body, dict) else ""
        )
        raise IngestError(
            f"{what} {found}{keys}",
            source=self.context.name,
            origin=where,
            hint="set `records_path` to the dotted path of the list of records",
        )


class _Taken:
    """The records of a run so far, with their origins, and the items rejected."""

    def __init__(self, label: str, cursor: _Cursor | None) -> None:
        self.label = label
        self.cursor = cursor
        self.records: list[dict[str, Any]] = []
        self.pages: list[str] = []
        self.indexes: list[int] = []
        self.rejects: list[Reject] = []

    def add_page(self, number: int, items: list[Any]) -> int:
        """Take the items of page `number`; the number of records to load among them."""
        before = len(self.records)
        page = f"{self.label}#page={number}"
        for index, item in enumerate(items):
            origin = f"{page}:{index}"
            if not isinstance(item, dict):
                error = f"the record is {json_kind(item)}, not a JSON object"
                self.rejects.append(Reject(_json_text(item), error, origin))
                continue
            if self.cursor is not None:
                try:
                    if not self.cursor.admit(item):
                        continue
                except ValueError as exc:
                    self.rejects.append(Reject(_json_text(item), str(exc), origin))
                    continue
            self.records.append(item)
            self.pages.append(page)
            self.indexes.append(index)
        return len(self.records) - before

    def origins(self) -> RowOrigins:
        """`<url>#page=<n>` and the index in that page's list, per record."""
        return RowOrigins(pa.array(self.pages, pa.string()), pa.array(self.indexes, pa.int64()))


class _Cursor:
    """The incremental cursor of one run: what was loaded before it and what it loads."""

    def __init__(self, options: IncrementalOptions, state: Mapping[str, Any], source: str) -> None:
        self.field = options.cursor_field
        self.param = options.param
        if "cursor" in state:
            self.start: Any = state["cursor"]
            self.boundary = set(state.get("boundary", ()))
        else:
            self.start, self.boundary = options.initial, set()
        self.start_key = None if self.start is None else _cursor_key(self.start)
        if self.start is not None and self.start_key is None:
            raise IngestError(
                f"the saved cursor {self.start!r} is not a string or number",
                source=source,
                hint="reset the source's state",
            )
        self.max_value: Any = None
        self.max_key: tuple[str, Any] | None = None
        self.max_hashes: set[str] = set()

    def admit(self, record: dict[str, Any]) -> bool:
        """True to load `record`, False if an earlier run loaded it; ValueError when its
        cursor is missing or cannot be compared with the others."""
        value = lookup(record, self.field)
        if value is MISSING or value is None:
            raise ValueError(f"the record has no {self.field} (the incremental cursor field)")
        key = _cursor_key(value)
        if key is None:
            raise ValueError(f"cursor {self.field} is {json_kind(value)}, not a string or number")
        digest = ""
        if self.start_key is not None:
            if key[0] != self.start_key[0]:
                raise ValueError(
                    f"cursor {self.field} {value!r} cannot be compared with the loaded "
                    f"cursor {self.start!r}"
                )
            if key < self.start_key:
                return False
            if key == self.start_key:
                digest = _record_hash(record)
                if digest in self.boundary:
                    return False
        if self.max_key is not None and key[0] != self.max_key[0]:
            raise ValueError(
                f"cursor {self.field} {value!r} cannot be compared with {self.max_value!r}"
            )
        if self.max_key is None or key > self.max_key:
            self.max_value, self.max_key = value, key
            self.max_hashes = {digest or _record_hash(record)}
        elif key == self.max_key:
            self.max_hashes.add(digest or _record_hash(record))
        return True

    def state_delta(self) -> dict[str, Any]:
        """The cursor after the records admitted; {} when none were."""
        if self.max_key is None:
            return {}
        hashes = set(self.max_hashes)
        if self.max_key == self.start_key:
            hashes |= self.boundary
        return {"cursor": self.max_value, "boundary": sorted(hashes)}


def records_to_table(records: list[dict[str, Any]]) -> pa.Table:
    """JSON objects as an Arrow table: one column per key seen in any record (in order of
    first appearance), nested objects as structs, lists as lists. A column whose values have
    no common Arrow type (1 in one record, "one" in another; a struct field that does the
    same; an integer beyond int64) is stored as JSON text, every value of it, so that nothing
    is dropped and the column has one meaning."""
    names = dict.fromkeys(name for record in records for name in record)
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [record.get(name) for record in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            texts = [None if value is None else _json_text(value) for value in values]
            columns[name] = pa.array(texts, pa.string())
    if not columns:
        return pa.table({})
    return pa.table(columns)


def _cursor_key(value: Any) -> tuple[str, Any] | None:
    """How cursor values compare: numbers as numbers, ISO 8601 timestamps as instants (so
    `Z` and `+00:00` agree), other strings as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return ("number", value)
    if not isinstance(value, str):
        return None
    if len(value) >= 10 and value[4] == "-" and value[7] == "-" and value[:4].isdigit():
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            return ("text", value)
        return ("time" if instant.tzinfo else "local time", instant)
    return ("text", value)


def _record_hash(record: dict[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha1(canonical.encode()).hexdigest()


def _credentials(auth: BearerAuth | BasicAuth | ApiKeyAuth | None, home: httpx.URL) -> Credentials:
    """The credentials to add to a GET; none of them leave the origin of the configured URL
    (a next link may point elsewhere)."""

    def add(url: httpx.URL) -> tuple[dict[str, QueryValue], dict[str, str], httpx.Auth | None]:
        if auth is None or _origin(url) != _origin(home):
            return {}, {}, None
        if isinstance(auth, BearerAuth):
            return {}, {"Authorization": f"Bearer {auth.token.get_secret_value()}"}, None
        if isinstance(auth, BasicAuth):
            return {}, {}, httpx.BasicAuth(auth.username, auth.password.get_secret_value())
        if auth.location == "query":
            return {auth.name: auth.value.get_secret_value()}, {}, None
        return {}, {auth.name: auth.value.get_secret_value()}, None

    return add


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def _display(url: httpx.URL, auth: Any) -> str:
    """`url` fit for messages: no user info, no API key."""
    if url.userinfo:
        url = url.copy_with(userinfo=b"")
    if isinstance(auth, ApiKeyAuth) and auth.location == "query" and auth.name in url.params:
        url = url.copy_set_param(auth.name, "REDACTED")
    return str(url)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
