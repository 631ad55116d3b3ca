"""How the `http` connector gets its pages: one options model per pagination style (the
`paginate:` key of a source) that, given the page just read, says which request comes next;
and `PageFetcher`, which GETs each page with retries (`max_retries`, `backoff:`) and a
client-side `rate_limit:`.

    page_number   ?page=1, 2, 3 ...       stops at an empty page or at `total_pages_path`
    offset        ?offset=0, 100, 200 ... stops at a short or empty page or at `total_path`
    cursor        ?cursor=<from the body> stops when the body has no next cursor
    next_link     GET <URL from the body>  stops when the body has no next URL
    link_header   GET <Link: rel="next">   stops when the response has no rel="next" link
    none          one request
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lakebed.errors import IngestError, SourceUnavailableError

__all__ = [
    "MISSING",
    "BackoffOptions",
    "Credentials",
    "CursorPaging",
    "LinkHeaderPaging",
    "NextLinkPaging",
    "NoPaging",
    "OffsetPaging",
    "Page",
    "PageFetcher",
    "PageNumberPaging",
    "PageRequest",
    "Paging",
    "QueryValue",
    "RateLimitOptions",
    "json_kind",
    "lookup",
    "retry_after",
    "snippet",
]

QueryValue = str | int | float | bool | list[str | int | float]
_SNIPPET = 200


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""What `lookup` returns when a path is not in the body (distinct from a JSON null)."""


def lookup(body: Any, path: str) -> Any:
    """The value at dotted `path` in a JSON body ("" is the body itself; a number indexes a
    list), or `MISSING`."""
    value = body
    for part in path.split(".") if path else ():
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif (
            isinstance(value, list)
            and part.lstrip("-").isdigit()
            and -len(value) <= int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            return MISSING
    return value


@dataclass(frozen=True)
class PageRequest:
    """One GET: `params` are merged into the query of `url`. A request that follows a link
    from the API has no params: the link carries its query."""

    url: httpx.URL
    params: dict[str, QueryValue] = field(default_factory=dict)

    def key(self) -> str:
        """The request as one string, to notice a paginator that goes round in circles."""
        return str(self.url.copy_merge_params(self.params))


@dataclass(frozen=True)
class Page:
    """A page as read: the request, the response, its JSON body and the items of its record
    list (objects or not). `source` and `where` name it in errors."""

    request: PageRequest
    response: httpx.Response
    body: Any
    items: list[Any]
    source: str
    where: str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoPaging(_Strict):
    """One request; the API returns every record at once."""

    type: Literal["none"] = "none"

    def first_params(self) -> dict[str, QueryValue]:
        return {}

    def next_request(self, page: Page) -> PageRequest | None:
        return None


class PageNumberPaging(_Strict):
    """`?page=N` from `start`, optionally with a page size; stops at an empty page, or when
    the number at `total_pages_path` in the body says this was the last page."""

    type: Literal["page_number"] = "page_number"
    page_param: str = "page"
    start: int = 1
    page_size_param: str | None = None
    page_size: int | None = Field(default=None, ge=1)
    total_pages_path: str | None = None

    @model_validator(mode="after")
    def _size_needs_param(self) -> PageNumberPaging:
        if (self.page_size_param is None) != (self.page_size is None):
            raise ValueError("set both page_size_param and page_size, or neither")
        return self

    def first_params(self) -> dict[str, QueryValue]:
        params: dict[str, QueryValue] = {self.page_param: self.start}
        if self.page_size_param is not None and self.page_size is not None:
            params[self.page_size_param] = self.page_size
        return params

    def next_request(self, page: Page) -> PageRequest | None:
        if not page.items:
            return None
        number = _number(page.request, self.page_param)
        if self.total_pages_path is not None:
            total = _count_at(page, self.total_pages_path, "total_pages_path")
            if total is not None and number - self.start + 1 >= total:
                return None
        return _with_param(page.request, self.page_param, number + 1)


class OffsetPaging(_Strict):
    """`?offset=N&limit=L`; stops at a page shorter than `limit` (so `limit` must not exceed
    the API's largest page), an empty page, or when `offset` reaches the number at
    `total_path`. The next offset counts the records actually returned."""

    type: Literal["offset"] = "offset"
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(default=100, ge=1)
    start: int = Field(default=0, ge=0)
    total_path: str | None = None

    def first_params(self) -> dict[str, QueryValue]:
        return {self.offset_param: self.start, self.limit_param: self.limit}

    def next_request(self, page: Page) -> PageRequest | None:
        count = len(page.items)
        if count == 0 or count < self.limit:
            return None
        offset = _number(page.request, self.offset_param) + count
        if self.total_path is not None:
            total = _count_at(page, self.total_path, "total_path")
            if total is not None and offset >= total:
                return None
        return _with_param(page.request, self.offset_param, offset)


class CursorPaging(_Strict):
    """`?cursor=<value at next_cursor_path in the previous body>`; stops when the body has
    no next cursor (missing, null or empty)."""

    type: Literal["cursor"] = "cursor"
    cursor_param: str = "cursor"
    next_cursor_path: str = "next_cursor"

    def first_params(self) -> dict[str, QueryValue]:
        return {}

    def next_request(self, page: Page) -> PageRequest | None:
        cursor = lookup(page.body, self.next_cursor_path)
        if cursor is MISSING or cursor is None or cursor == "":
            return None
        if not isinstance(cursor, str | int | float) or isinstance(cursor, bool):
            raise IngestError(
                f"the next cursor at {self.next_cursor_path!r} is {json_kind(cursor)}, "
                "not a string or number",
                source=page.source,
                origin=page.where,
                hint="point paginate.next_cursor_path at the cursor value in the body",
            )
        return _with_param(page.request, self.cursor_param, cursor)


class NextLinkPaging(_Strict):
    """GET the URL at `next_url_path` in the body (absolute, or relative to the page's URL);
    stops when it is missing, null or empty."""

    type: Literal["next_link"] = "next_link"
    next_url_path: str = "next"

    def first_params(self) -> dict[str, QueryValue]:
        return {}

    def next_request(self, page: Page) -> PageRequest | None:
        link = lookup(page.body, self.next_url_path)
        if link is MISSING or link is None or link == "":
            return None
        if not isinstance(link, str):
            raise IngestError(
                f"the next link at {self.next_url_path!r} is {json_kind(link)}, not a URL",
                source=page.source,
                origin=page.where,
                hint="point paginate.next_url_path at the next page's URL in the body",
            )
        return _follow(page, link)


class LinkHeaderPaging(_Strict):
    """GET the `rel` link of the RFC 8288 (5988) `Link` header; stops when there is none."""

    type: Literal["link_header"] = "link_header"
    rel: str = "next"

    def first_params(self) -> dict[str, QueryValue]:
        return {}

    def next_request(self, page: Page) -> PageRequest | None:
        link = page.response.links.get(self.rel, {}).get("url")
        return _follow(page, link) if link else None


Paging = Annotated[
    NoPaging | PageNumberPaging | OffsetPaging | CursorPaging | NextLinkPaging | LinkHeaderPaging,
    Field(discriminator="type"),
]


class BackoffOptions(_Strict):
    """Seconds between retries: `initial`, doubling up to `max`, with jitter. A `Retry-After`
    longer than `max_retry_after` fails the run instead of waiting."""

    initial: float = Field(default=0.5, gt=0)
    max: float = Field(default=30.0, gt=0)
    max_retry_after: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> BackoffOptions:
        if self.max < self.initial:
            raise ValueError(f"backoff.max ({self.max}) is below backoff.initial ({self.initial})")
        return self

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (0-based), jittered to [d/2, d]."""
        ceiling = min(self.max, self.initial * 2.0 ** min(attempt, 62))
        return random.uniform(ceiling / 2, ceiling)


class RateLimitOptions(_Strict):
    """A client-side limit on requests per second (None: no limit)."""

    requests_per_second: float | None = Field(default=None, gt=0)


Credentials = Callable[[httpx.URL], tuple[dict[str, QueryValue], dict[str, str], httpx.Auth | None]]
"""What to add to a GET of a URL: query parameters, headers, httpx auth."""


class PageFetcher:
    """GETs pages with retries (exponential backoff with jitter on timeouts, connection
    errors and 5xx; `Retry-After` on 429), a client-side rate limit and credentials."""

    def __init__(
        self,
        source: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        max_retries: int,
        backoff: BackoffOptions,
        rate_limit: RateLimitOptions,
        credentials: Credentials,
        auth_hint: str,
    ) -> None:
        self.source = source
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.credentials = credentials
        self.auth_hint = auth_hint
        self.client = httpx.Client(headers=headers, timeout=timeout, follow_redirects=True)
        rate = rate_limit.requests_per_second
        self.interval = 0.0 if rate is None else 1.0 / rate
        self.next_slot = 0.0

    def __enter__(self) -> PageFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def get(self, request: PageRequest, where: str) -> httpx.Response:
        """The 2xx response to `request`, after retries; raises `IngestError` otherwise."""
        params, headers, auth = self.credentials(request.url)
        # Merged here: httpx replaces the URL's query with `params=` instead of adding to it.
        url = request.url.copy_merge_params({**request.params, **params})
        last = ""
        for attempt in range(self.max_retries + 1):
            self._throttle()
            try:
                response = self.client.get(url, headers=headers, auth=auth)
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
                raise IngestError(f"cannot GET: {exc}", source=self.source, origin=where) from exc
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc or 'no detail'}"
                wait = self.backoff.delay(attempt)
            except httpx.HTTPError as exc:
                raise IngestError(f"GET failed: {exc}", source=self.source, origin=where) from exc
            else:
                status = response.status_code
                if status < 300:
                    return response
                if status != 429 and status < 500:
                    raise self._refused(response, where)
                last = f"HTTP {status} {response.reason_phrase}".rstrip()
                asked = retry_after(response)
                wait = self.backoff.delay(attempt) if asked is None else asked
                if asked is not None and asked > self.backoff.max_retry_after:
                    raise SourceUnavailableError(
                        f"GET {where} answered {last} and asks to wait {asked:.0f} s",
                        source=self.source,
                        origin=where,
                        hint="run again later, or raise backoff.max_retry_after "
                        f"({self.backoff.max_retry_after:g} s)",
                    )
            if attempt < self.max_retries:
                time.sleep(wait)
        raise SourceUnavailableError(
            f"GET {where} failed {self.max_retries + 1} times; the last answer was {last}",
            source=self.source,
            origin=where,
            hint="the API is down, overloaded or slow; run again later, or raise "
            f"max_retries ({self.max_retries}) or timeout ({self.timeout:g} s)",
        )

    def _refused(self, response: httpx.Response, where: str) -> IngestError:
        status = response.status_code
        source = f"sources.{self.source}"
        if status in (401, 403):
            hint = self.auth_hint
        elif status == 404:
            hint = f"check {source}.url"
        elif status < 400:
            hint = "the API answered with a redirect the client could not follow"
        else:
            hint = f"the API rejected the request: check {source}.params, headers and paginate"
        return IngestError(
            f"GET {where} answered HTTP {status} {response.reason_phrase}: {snippet(response)!r}",
            source=self.source,
            origin=where,
            hint=hint,
        )

    def _throttle(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if now < self.next_slot:
            time.sleep(self.next_slot - now)
        self.next_slot = max(now, self.next_slot) + self.interval


def _with_param(request: PageRequest, name: str, value: QueryValue) -> PageRequest:
    return PageRequest(request.url, {**request.params, name: value})


def _follow(page: Page, link: str) -> PageRequest:
    try:
        url = page.response.url.join(link)
    except httpx.InvalidURL as exc:
        raise IngestError(
            f"the next page's link {link!r} is not a valid URL: {exc}",
            source=page.source,
            origin=page.where,
        ) from exc
    if url.scheme not in ("http", "https"):
        raise IngestError(
            f"the next page's link {link!r} is not an http(s) URL",
            source=page.source,
            origin=page.where,
        )
    return PageRequest(url)


def _count_at(page: Page, path: str, option: str) -> int | None:
    """The whole number at `path` in the body; None when the body does not say."""
    value = lookup(page.body, path)
    if value is MISSING or value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise IngestError(
        f"the value at paginate.{option} {path!r} is {value!r}, not a whole number",
        source=page.source,
        origin=page.where,
        hint=f"point paginate.{option} at the count in the body, or remove it",
    )


def _number(request: PageRequest, name: str) -> int:
    value = request.params[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"query parameter {name} is {value!r}, not a page number or offset")
    return value


def json_kind(value: Any) -> str:
    """What a JSON value is, in words: "an object", "a list", "a number"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
    return names.get(type(value), type(value).__name__)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait by the `Retry-After` header (seconds or an HTTP date), if it has one."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def snippet(response: httpx.Response) -> str:
    """The start of the body on one line, for error messages."""
    try:
        text = response.text
    except (UnicodeDecodeError, LookupError):
        text = response.content.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "…"
