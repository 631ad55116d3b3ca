"""The `http` connector against a real HTTP server on loopback (tests/services/http_api.py):
pagination, auth, retries, incremental cursors and bad records."""

from __future__ import annotations

import email.utils
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from pydantic import ValidationError

import lakebed
from lakebed.errors import IngestError, Retryable, SourceUnavailableError
from lakebed.ingest.base import Batch, IngestProgress, SourceContext, connector_for, deep_merge
from lakebed.ingest.connectors.http import HttpConnector, HttpOptions
from services.http_api import FakeApi, Fault, RecordedRequest, timestamp

ALL_IDS = list(range(250))
MAX_CURSOR = timestamp(124)  # records 248 and 249
PAGES = {"type": "page_number"}  # 25 records a page
PAGE_SIZE_50 = {"type": "page_number", "page_size_param": "per_page", "page_size": 50}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as server:
        yield server


def connector(url: str, **options: Any) -> HttpConnector:
    """A connector with short retries, so that failing tests fail in well under a second."""
    settings: dict[str, Any] = {
        "url": url,
        "max_retries": 3,
        "timeout": 5,
        "backoff": {"initial": 0.01, "max": 0.05},
        **options,
    }
    return HttpConnector(HttpOptions.model_validate(settings), SourceContext("tickets", Path(".")))


def run(
    source: HttpConnector, state: dict[str, Any] | None = None
) -> tuple[list[Batch], dict[str, Any], IngestProgress]:
    """Every batch of one run, the state folded as the runner folds it, and the progress."""
    progress = IngestProgress()
    batches = list(source.batches(state or {}, progress))
    folded = dict(state or {})
    for batch in batches:
        folded = deep_merge(folded, batch.state_delta)
    return batches, folded, progress


def ids(batch: Batch) -> list[int]:
    return sorted(batch.data.column("id").to_pylist())


def page_is(number: str) -> Any:
    return lambda request: request.query.get("page") == number


def gaps(requests: list[RecordedRequest]) -> list[float]:
    return [later.at - earlier.at for earlier, later in itertools.pairwise(requests)]


# -- pagination ----------------------------------------------------------------------------

# style → (path, records_path, paginate, requests); 50 records a page (60 for the short page)
PAGINATIONS: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "page_number until total_pages": (
        "/page",
        "data",
        {**PAGE_SIZE_50, "total_pages_path": "total_pages"},
        5,
    ),
    "page_number until an empty page": ("/page", "data", PAGE_SIZE_50, 6),
    "offset until a short page": ("/offset", "items", {"type": "offset", "limit": 60}, 5),
    "offset until total": (
        "/offset",
        "items",
        {"type": "offset", "limit": 50, "total_path": "total"},
        5,
    ),
    "cursor": ("/cursor", "results", {"type": "cursor", "next_cursor_path": "meta.next_cursor"}, 5),
    "next_link relative": (
        "/next",
        "data",
        {"type": "next_link", "next_url_path": "links.next"},
        5,
    ),
    "next_link absolute": (
        "/next",
        "data",
        {"type": "next_link", "next_url_path": "links.next"},
        5,
    ),
    "link_header relative": ("/link", "", {"type": "link_header"}, 5),
    "link_header absolute": ("/link", "", {"type": "link_header"}, 5),
    "none": ("/all", "data.items", {"type": "none"}, 1),
}


PAGE_SIZE_PARAMS = {"/cursor": {"limit": 50}, "/next": {"limit": 50}, "/link": {"per_page": 50}}


@pytest.mark.parametrize("style", list(PAGINATIONS))
def test_every_pagination_type_returns_every_record_exactly_once(api: FakeApi, style: str) -> None:
    path, records_path, paginate, pages = PAGINATIONS[style]
    api.absolute_links = style.endswith("absolute")
    params = PAGE_SIZE_PARAMS.get(path, {})  # /page and /offset: the paginator sends it
    source = connector(api.url(path), records_path=records_path, paginate=paginate, params=params)

    batches, state, progress = run(source)

    assert len(batches) == 1
    batch = batches[0]
    assert batch.data.num_rows == 250
    assert ids(batch) == ALL_IDS
    assert len(api.requests_to(path)) == pages
    assert progress.counts == {"pages": pages, "rows": 250}
    assert batch.bytes_read == api.served_bytes()
    assert batch.label == api.url(path)
    assert batch.rejects == []
    assert batch.state_delta == {}
    assert state == {}


def test_origins_name_the_page_and_index_and_nested_objects_become_structs(api: FakeApi) -> None:
    source = connector(
        api.url("/page"),
        records_path="data",
        paginate={"type": "page_number", "page_size_param": "per_page", "page_size": 100},
    )

    (batch,), _, _ = run(source)

    location, position = batch.origin_columns()
    pairs = zip(location.to_pylist(), position.to_pylist(), strict=True)
    origins = [f"{url}:{index}" for url, index in pairs]
    assert origins[0] == f"{api.url('/page')}#page=1:0"
    assert origins[149] == f"{api.url('/page')}#page=2:49"
    assert origins[-1] == f"{api.url('/page')}#page=3:49"
    schema = batch.data.schema
    assert schema.field("owner").type == pa.struct([("name", pa.string()), ("team", pa.string())])
    assert schema.field("tags").type == pa.list_(pa.string())
    assert batch.data.slice(7, 1).to_pylist()[0]["owner"] == {"name": "owner 0", "team": "blue"}


def test_fixed_params_and_headers_are_sent_on_every_page(api: FakeApi) -> None:
    source = connector(
        api.url("/cursor"),
        records_path="results",
        paginate={"type": "cursor", "next_cursor_path": "meta.next_cursor"},
        params={"limit": 100, "status": "open"},
        headers={"X-Tenant": "acme"},
    )

    run(source)

    requests = api.requests_to("/cursor")
    assert len(requests) == 3
    assert all(r.query["status"] == "open" for r in requests)
    assert all(r.query["limit"] == "100" for r in requests)
    assert all(r.headers["x-tenant"] == "acme" for r in requests)
    assert [r.query.get("cursor") is None for r in requests] == [True, False, False]


def test_a_paginator_going_round_in_circles_fails_instead_of_looping(api: FakeApi) -> None:
    api.inject(Fault(status=200, body=b'{"results": [], "meta": {"next_cursor": "x"}}', times=None))
    source = connector(
        api.url("/cursor"),
        records_path="results",
        paginate={"type": "cursor", "next_cursor_path": "meta.next_cursor"},
    )

    with pytest.raises(IngestError, match="already read"):
        run(source)
    assert len(api.requests_to("/cursor")) == 2


def test_an_api_that_ignores_the_page_param_fails_instead_of_looping(api: FakeApi) -> None:
    source = connector(
        api.url("/page"), records_path="data", paginate={"type": "page_number", "page_param": "p"}
    )

    with pytest.raises(IngestError, match="page 2 is the same as page 1"):
        run(source)


# -- auth ----------------------------------------------------------------------------------

AUTHS = {
    "bearer": (lambda api: api.require_bearer("s3cret"), {"type": "bearer", "token": "s3cret"}),
    "basic": (
        lambda api: api.require_basic("ann", "pa55"),
        {"type": "basic", "username": "ann", "password": "pa55"},
    ),
    "api_key in header": (
        lambda api: api.require_api_key("X-Api-Key", "k3y"),
        {"type": "api_key", "name": "X-Api-Key", "value": "k3y"},
    ),
    "api_key in query": (
        lambda api: api.require_api_key("api_key", "k3y", "query"),
        {"type": "api_key", "name": "api_key", "value": "k3y", "in": "query"},
    ),
}
WRONG = {"token": "nope", "password": "nope", "value": "nope"}


@pytest.mark.parametrize("kind", list(AUTHS))
def test_every_auth_type_is_accepted_on_every_page(api: FakeApi, kind: str) -> None:
    require, auth = AUTHS[kind]
    require(api)
    source = connector(
        api.url("/next"),
        records_path="data",
        auth=auth,
        params={"limit": 100},
        paginate={"type": "next_link", "next_url_path": "links.next"},
    )

    (batch,), _, _ = run(source)

    assert ids(batch) == ALL_IDS
    assert [r.status for r in api.requests] == [200, 200, 200]


@pytest.mark.parametrize("kind", list(AUTHS))
def test_wrong_credentials_fail_at_once_with_a_hint_about_auth(api: FakeApi, kind: str) -> None:
    require, auth = AUTHS[kind]
    require(api)
    wrong = {key: WRONG.get(key, value) for key, value in auth.items()}
    source = connector(api.url("/all"), records_path="data.items", auth=wrong)

    with pytest.raises(IngestError) as caught:
        run(source)

    assert not isinstance(caught.value, SourceUnavailableError)
    assert "HTTP 401" in str(caught.value)
    assert "invalid or missing credentials" in str(caught.value)
    assert caught.value.hint is not None
    assert "sources.tickets.auth" in caught.value.hint
    assert "nope" not in str(caught.value)  # a key in the query is redacted
    assert len(api.requests) == 1


def test_missing_credentials_hint_says_to_add_auth(api: FakeApi) -> None:
    api.require_bearer("s3cret")

    with pytest.raises(IngestError) as caught:
        run(connector(api.url("/all"), records_path="data.items"))

    assert caught.value.hint is not None
    assert "add auth" in caught.value.hint


def test_credentials_are_not_sent_to_another_origin(api: FakeApi) -> None:
    with FakeApi() as other:
        api.link_base = other.base_url
        source = connector(
            api.url("/next"),
            records_path="data",
            params={"limit": 125},
            auth={"type": "bearer", "token": "s3cret"},
            paginate={"type": "next_link", "next_url_path": "links.next"},
        )

        (batch,), _, _ = run(source)

        assert api.requests[0].headers["authorization"] == "Bearer s3cret"
        assert len(other.requests) == 1
        assert "authorization" not in other.requests[0].headers
        assert batch.data.num_rows == 250


# -- retries -------------------------------------------------------------------------------


def test_429_with_retry_after_seconds_is_honoured(api: FakeApi) -> None:
    api.inject(Fault(status=429, headers={"Retry-After": "1"}, times=2))
    source = connector(api.url("/all"), records_path="data.items")

    started = time.monotonic()
    (batch,), _, _ = run(source)
    elapsed = time.monotonic() - started

    requests = api.requests_to("/all")
    assert [r.status for r in requests] == [429, 429, 200]
    assert all(gap >= 1.0 for gap in gaps(requests))
    assert elapsed >= 2.0
    assert batch.data.num_rows == 250


def test_429_with_retry_after_http_date_is_honoured(api: FakeApi) -> None:
    # HTTP dates have whole seconds: "now + 2 s" truncated is at least 1 s away.
    later = email.utils.formatdate(time.time() + 2, usegmt=True)
    api.inject(Fault(status=429, headers={"Retry-After": later}))
    source = connector(api.url("/all"), records_path="data.items")

    (batch,), _, _ = run(source)

    requests = api.requests_to("/all")
    assert [r.status for r in requests] == [429, 200]
    assert gaps(requests)[0] >= 0.9
    assert batch.data.num_rows == 250


def test_429_without_retry_after_backs_off_and_succeeds(api: FakeApi) -> None:
    api.inject(Fault(status=429, times=2))

    (batch,), _, _ = run(connector(api.url("/all"), records_path="data.items"))

    assert [r.status for r in api.requests] == [429, 429, 200]
    assert batch.data.num_rows == 250


def test_a_retry_after_longer_than_allowed_fails_at_once(api: FakeApi) -> None:
    api.inject(Fault(status=429, headers={"Retry-After": "3600"}))
    source = connector(
        api.url("/all"), records_path="data.items", backoff={"initial": 0.01, "max_retry_after": 5}
    )

    with pytest.raises(SourceUnavailableError, match="asks to wait 3600 s"):
        run(source)
    assert len(api.requests) == 1


def test_500s_are_retried_then_succeed(api: FakeApi) -> None:
    api.inject(Fault(status=500, when=page_is("3"), times=2))
    source = connector(api.url("/page"), records_path="data", paginate=PAGES)

    (batch,), _, _ = run(source)

    assert [r.status for r in api.requests if r.query.get("page") == "3"] == [500, 500, 200]
    assert ids(batch) == ALL_IDS


def test_500s_forever_raise_source_unavailable_and_yield_no_batch(api: FakeApi) -> None:
    api.inject(Fault(status=503, body=b"maintenance", when=page_is("7"), times=None))
    source = connector(api.url("/page"), records_path="data", paginate=PAGES, max_retries=2)
    yielded: list[Batch] = []

    with pytest.raises(SourceUnavailableError) as caught:
        yielded.extend(source.batches({}, IngestProgress()))

    assert yielded == []
    error = caught.value
    assert isinstance(error, Retryable)
    assert "failed 3 times" in str(error)
    assert "HTTP 503 Service Unavailable" in str(error)
    assert error.source == "tickets"
    assert error.origin is not None
    assert "page=7" in error.origin
    assert [r.query.get("page") for r in api.requests] == ["1", "2", "3", "4", "5", "6", *"777"]


def test_a_slow_response_times_out_and_is_retried(api: FakeApi) -> None:
    api.inject(Fault(delay=1.0, when=page_is("2")))
    source = connector(api.url("/page"), records_path="data", paginate=PAGES, timeout=0.3)

    (batch,), _, _ = run(source)

    assert [r.query["page"] for r in api.requests].count("2") == 2
    assert ids(batch) == ALL_IDS


def test_responses_slower_than_the_timeout_every_time_fail_naming_the_timeout(
    api: FakeApi,
) -> None:
    api.inject(Fault(delay=0.5, times=None))
    source = connector(api.url("/all"), records_path="data.items", timeout=0.1, max_retries=1)

    with pytest.raises(SourceUnavailableError, match="ReadTimeout"):
        run(source)
    assert len(api.requests) == 2


def test_a_dropped_connection_is_retried(api: FakeApi) -> None:
    api.inject(Fault(drop=True))

    (batch,), _, _ = run(connector(api.url("/all"), records_path="data.items"))

    assert len(api.requests) == 2
    assert batch.data.num_rows == 250


def test_a_refused_connection_is_retried_then_unavailable(api: FakeApi) -> None:
    url = api.url("/all")
    api.stop()

    with pytest.raises(SourceUnavailableError, match="ConnectError"):
        run(connector(url, records_path="data.items", max_retries=1))


def test_rate_limit_spaces_requests(api: FakeApi) -> None:
    source = connector(
        api.url("/page"),
        records_path="data",
        paginate={"type": "page_number", "page_size_param": "per_page", "page_size": 50},
        rate_limit={"requests_per_second": 20},
    )

    run(source)

    assert len(api.requests) == 6
    # 20 per second: 5 gaps of 50 ms. Arrival times jitter on a loaded machine, so the
    # whole span is checked closely and single gaps loosely (unthrottled they are ~1 ms).
    span = api.requests[-1].at - api.requests[0].at
    assert span >= 5 * 0.05 * 0.95
    assert min(gaps(api.requests)) >= 0.025


# -- bad answers ---------------------------------------------------------------------------


def test_a_non_json_body_fails_naming_the_url_and_content_type(api: FakeApi) -> None:
    api.inject(Fault(status=200, body=b"<html>oops</html>", content_type="text/html"))

    with pytest.raises(IngestError) as caught:
        run(connector(api.url("/all"), records_path="data.items"))

    message = str(caught.value)
    assert "not JSON" in message
    assert "text/html" in message
    assert api.url("/all") in message
    assert len(api.requests) == 1


def test_a_404_fails_at_once_with_the_status_and_a_snippet_of_the_body(api: FakeApi) -> None:
    with pytest.raises(IngestError) as caught:
        run(connector(api.url("/missing"), records_path="data"))

    assert "HTTP 404" in str(caught.value)
    assert "no endpoint /missing" in str(caught.value)
    assert caught.value.hint is not None
    assert "sources.tickets.url" in caught.value.hint
    assert len(api.requests) == 1


def test_a_wrong_records_path_fails_naming_the_keys_of_the_body(api: FakeApi) -> None:
    expected = r"records_path 'data\.rows' is not in the body; the body's keys are data"
    with pytest.raises(IngestError, match=expected):
        run(connector(api.url("/all"), records_path="data.rows"))


def test_records_that_are_not_objects_become_rejects_and_the_rest_loads(api: FakeApi) -> None:
    api.records[3:3] = [["a", "list"], "text", 42, None]
    source = connector(api.url("/page"), records_path="data", paginate={"type": "page_number"})

    (batch,), _, progress = run(source)

    assert ids(batch) == ALL_IDS
    assert progress.counts["rows"] == 250
    base = api.url("/page")
    assert [(r.raw, r.origin) for r in batch.rejects] == [
        ('["a", "list"]', f"{base}#page=1:3"),
        ('"text"', f"{base}#page=1:4"),
        ("42", f"{base}#page=1:5"),
        ("null", f"{base}#page=1:6"),
    ]
    assert batch.rejects[0].error == "the record is a list, not a JSON object"
    assert batch.rejects[3].error == "the record is null, not a JSON object"


def test_a_page_of_only_bad_records_yields_a_batch_of_rejects_without_rows(api: FakeApi) -> None:
    api.records[:] = [1, 2]

    (batch,), state, _ = run(connector(api.url("/all"), records_path="data.items"))

    assert batch.data.num_rows == 0
    assert len(batch.origin_columns()[0]) == 0
    assert [r.raw for r in batch.rejects] == ["1", "2"]
    assert state == {}


def test_columns_with_inconsistent_types_become_json_text_and_late_keys_are_kept(
    api: FakeApi,
) -> None:
    api.records[:] = [
        {"id": 1, "value": 1, "meta": {"a": 1}},
        {"id": 2, "value": "two", "meta": {"a": "x"}},
        {"id": 3, "value": None, "late": True, "big": 2**70},
    ]

    (batch,), _, _ = run(connector(api.url("/all"), records_path="data.items"))

    table = batch.data
    assert table.column_names == ["id", "value", "meta", "late", "big"]
    assert table.schema.field("id").type == pa.int64()
    assert table.column("value").to_pylist() == ["1", '"two"', None]
    assert table.column("meta").to_pylist() == ['{"a": 1}', '{"a": "x"}', None]
    assert table.column("late").to_pylist() == [None, None, True]
    assert table.column("big").to_pylist() == [None, None, str(2**70)]


# -- incremental ---------------------------------------------------------------------------


def incremental(api: FakeApi, **options: Any) -> HttpConnector:
    return connector(
        api.url("/page"),
        records_path="data",
        paginate={"type": "page_number", "page_size_param": "per_page", "page_size": 100},
        incremental={"cursor_field": "updated_at", "param": "updated_since", **options},
    )


def test_incremental_first_run_loads_all_and_a_rerun_yields_nothing(api: FakeApi) -> None:
    source = incremental(api)

    (batch,), state, _ = run(source)
    assert ids(batch) == ALL_IDS
    assert "updated_since" not in api.requests[0].query
    assert state["cursor"] == MAX_CURSOR
    assert len(state["boundary"]) == 2
    assert batch.state_delta == state

    api.clear()
    batches, rerun_state, progress = run(source, state)
    assert batches == []
    assert rerun_state == state
    assert api.requests[0].query["updated_since"] == MAX_CURSOR
    assert progress.counts == {"pages": 2, "rows": 0}


def test_incremental_run_after_changes_yields_exactly_the_new_and_changed_records(
    api: FakeApi,
) -> None:
    source = incremental(api)
    _, state, _ = run(source)
    at_max = api.add(updated_at=MAX_CURSOR)  # exactly the previous max: inclusive filter
    later = api.add(updated_at=timestamp(500))
    moved = api.update(5, name="renamed", updated_at=timestamp(400))
    same_time = api.update(249, name="renamed, same updated_at")  # changed at the max

    (batch,), state, _ = run(source, state)

    assert sorted(batch.data.to_pylist(), key=lambda r: r["id"]) == sorted(
        [at_max, later, moved, same_time], key=lambda r: r["id"]
    )
    assert state["cursor"] == timestamp(500)
    assert len(state["boundary"]) == 1
    assert run(source, state)[0] == []


def test_incremental_new_records_only_at_the_previous_max_load_once(api: FakeApi) -> None:
    source = incremental(api)
    _, state, _ = run(source)
    added = api.add(updated_at=MAX_CURSOR)

    (batch,), state, _ = run(source, state)
    assert batch.data.to_pylist() == [added]
    assert state["cursor"] == MAX_CURSOR
    assert len(state["boundary"]) == 3

    assert run(source, state)[0] == []


def test_incremental_initial_is_sent_on_the_first_run(api: FakeApi) -> None:
    source = incremental(api, initial=timestamp(100))

    (batch,), state, _ = run(source)

    assert api.requests[0].query["updated_since"] == timestamp(100)
    assert ids(batch) == list(range(200, 250))
    assert state["cursor"] == MAX_CURSOR


def test_incremental_without_a_param_filters_on_the_client(api: FakeApi) -> None:
    source = incremental(api, param=None)
    _, state, _ = run(source)
    api.clear()

    assert run(source, state)[0] == []
    assert all("updated_since" not in r.query for r in api.requests)

    added = api.add(updated_at=timestamp(300))
    (batch,), _, progress = run(source, state)
    assert batch.data.to_pylist() == [added]
    assert progress.counts["rows"] == 1


def test_incremental_records_without_a_cursor_value_become_rejects(api: FakeApi) -> None:
    api.update(7, updated_at=None)
    del api.records[8]["updated_at"]

    (batch,), state, _ = run(incremental(api))

    assert ids(batch) == [i for i in ALL_IDS if i not in (7, 8)]
    assert [r.error for r in batch.rejects] == [
        "the record has no updated_at (the incremental cursor field)"
    ] * 2
    assert state["cursor"] == MAX_CURSOR


def test_incremental_cursors_compare_as_instants_not_text(api: FakeApi) -> None:
    api.records[:] = [
        {"id": 1, "updated_at": "2024-01-01T10:00:00+00:00"},
        {"id": 2, "updated_at": "2024-01-01T09:30:00-01:00"},  # 10:30 UTC: the max
    ]
    source = connector(
        api.url("/all"), records_path="data.items", incremental={"cursor_field": "updated_at"}
    )

    _, state, _ = run(source)
    assert state["cursor"] == "2024-01-01T09:30:00-01:00"

    api.add(id=3, updated_at="2024-01-01T10:15:00Z")  # earlier than the cursor
    api.add(id=4, updated_at="2024-01-01T10:45:00Z")
    (batch,), _, _ = run(source, state)
    assert ids(batch) == [4]


def test_describe_state_names_the_cursor(api: FakeApi) -> None:
    source = incremental(api)
    _, state, _ = run(source)

    assert source.describe_state(state) == f"cursor updated_at = {MAX_CURSOR}"
    assert source.describe_state({}) == "nothing loaded yet"
    assert "not incremental" in connector(api.url("/all")).describe_state({})


# -- options -------------------------------------------------------------------------------


def test_http_is_a_registered_connector_kind() -> None:
    assert connector_for("http") is HttpConnector
    assert HttpConnector.options_model is HttpOptions


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "https://x.test", "pagination": {"type": "none"}}, "Extra inputs"),
        ({"url": "ftp://x.test"}, "not an http"),
        ({"url": "https://x.test", "paginate": {"type": "pages"}}, "does not match any"),
        ({"url": "https://x.test", "paginate": {"type": "offset", "limt": 5}}, "Extra inputs"),
        ({"url": "https://x.test", "auth": {"type": "bearer"}}, "token"),
        (
            {"url": "https://x.test", "params": {"page": 1}, "paginate": {"type": "page_number"}},
            "params.page is also set by paginate",
        ),
        (
            {
                "url": "https://x.test",
                "params": {"since": "x"},
                "incremental": {"cursor_field": "t", "param": "since"},
            },
            "also set by incremental.param",
        ),
        ({"url": "https://x.test", "backoff": {"initial": 5, "max": 1}}, "below backoff.initial"),
    ],
)
def test_invalid_options_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HttpOptions.model_validate(settings)


def test_secrets_do_not_show_in_the_options() -> None:
    options = HttpOptions.model_validate(
        {
            "url": "https://x.test",
            "auth": {"type": "api_key", "name": "k", "value": "v3ry", "in": "query"},
        }
    )

    assert "v3ry" not in repr(options)
    assert options.auth is not None
    assert options.auth.type == "api_key"


# -- through the runner into bronze --------------------------------------------------------


def test_an_http_source_lands_in_bronze_exactly_once_across_reruns(
    api: FakeApi, tmp_path: Path
) -> None:
    root = lakebed.init_project(tmp_path / "p")
    config = yaml.safe_load((root / "lakebed.yml").read_text())
    config["sources"] = {
        "tickets": {
            "kind": "http",
            "url": api.url("/cursor"),
            "params": {"limit": 100},
            "records_path": "results",
            "paginate": {"type": "cursor", "next_cursor_path": "meta.next_cursor"},
            "incremental": {"cursor_field": "updated_at", "param": "updated_since"},
        }
    }
    (root / "lakebed.yml").write_text(yaml.safe_dump(config))
    api.records.insert(10, "not an object")

    with lakebed.open(root) as lh:
        first = lh.ingest("tickets")
        assert (first.rows, first.quarantined) == (250, 1)
        assert lh.ingest("tickets").rows == 0  # nothing new: nothing written

        api.add(updated_at=MAX_CURSOR)
        api.update(3, name="renamed", updated_at=timestamp(300))
        third = lh.ingest("tickets")
        assert third.rows == 2

        rows = lh.sql("select id, count(*) from bronze.tickets group by id order by id").rows()
        assert rows == [(i, 2 if i == 3 else 1) for i in range(251)]
        assert lh.source_state("tickets")["cursor"] == timestamp(300)
        (origin,) = lh.sql("select _origin, _origin_row from bronze.tickets where id = 0").rows()
        assert origin == (f"{api.url('/cursor')}#page=1", 0)
