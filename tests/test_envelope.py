"""Decoding responses: the contract's shapes accepted, its violations refused clearly."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from hyperstudy_bulk.envelope import decode_error, decode_object, decode_page
from hyperstudy_bulk.errors import AuthError, ContractError, TransportError
from hyperstudy_bulk.sinks import ndjson


def body(data: Any = None, **pagination: Any) -> bytes:
    meta = {"total": 3, "returned": 2, "hasMore": True, "limit": 2, "offset": 0, "nextOffset": 2}
    meta.update(pagination)
    meta = {k: v for k, v in meta.items() if v is not ...}
    records = [{"id": "a"}, {"id": "b"}] if data is None else data
    return orjson.dumps({"status": "success", "data": records, "metadata": {"pagination": meta}})


def test_a_page_as_the_contract_describes_it() -> None:
    page = decode_page(body(), requested_offset=0, requested_limit=2, id_field="id")
    assert (page.total, page.limit, page.has_more, page.next_offset, page.end) == (3, 2, True, 2, 2)
    assert [bytes(r) for r in page.records] == [b'{"id":"a"}', b'{"id":"b"}']
    assert page.ids == ["a", "b"]


def test_records_are_kept_byte_for_byte_as_served() -> None:
    first = b'{"z": 1, "a":  "caf\\u00e9", "n": 12345678901234567890123}'
    raw = (
        b'{"status":"success","data":[' + first + b',{"id":null}],'
        b'"metadata":{"pagination":{"total":2,"hasMore":false}}}'
    )
    page = decode_page(raw, requested_offset=0, requested_limit=2, id_field="id")
    assert bytes(page.records[0]) == first
    assert page.ids == [None, None]
    assert ndjson(page.records) == first + b'\n{"id":null}\n'


def test_a_pretty_printed_record_is_put_back_on_one_line() -> None:
    records = [b'{\n  "b": 2,\n  "a": [1, 2]\n}', b'{"c":"x\\ny"}']
    assert ndjson(records) == b'{"b":2,"a":[1,2]}\n{"c":"x\\ny"}\n'


def test_missing_optional_fields_fall_back_like_the_sdk() -> None:
    page = decode_page(
        body(limit=..., offset=..., returned=..., nextOffset=...),
        requested_offset=0,
        requested_limit=2,
    )
    assert (page.offset, page.limit, page.next_offset) == (0, 2, 2)


def test_warnings_are_kept() -> None:
    raw = orjson.loads(body(hasMore=False, nextOffset=..., total=2))
    raw["metadata"]["_warnings"] = ["MISSING_INDEX: results may be incomplete."]
    page = decode_page(orjson.dumps(raw), requested_offset=0, requested_limit=2)
    assert page.warnings == ("MISSING_INDEX: results may be incomplete.",)
    assert page.next_offset is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (orjson.dumps({"status": "success", "data": {"id": 1}}), "no 'data' list"),
        (orjson.dumps({"status": "success"}), "no 'data' list"),
        (body(data=[1, 2]), "something other than JSON objects"),
        (body(total=...), "pagination.total is missing"),
        (body(total=-1), "pagination.total is -1, not a count"),
        (body(nextOffset=0), "does not move past offset 0"),
        (body(returned=5), "pagination.returned is 5 but the page holds 2"),
        (body(offset=7), "asked for offset 0, the server answered offset 7"),
        (body(nextOffset=1), "holds 2 records but nextOffset is 1"),
    ],
)
def test_contract_violations_end_the_stream(raw: bytes, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        decode_page(raw, requested_offset=0, requested_limit=2)


def test_invalid_json_is_a_transient_fault() -> None:
    with pytest.raises(TransportError) as caught:
        decode_page(b'{"status": "success", "da', requested_offset=0, requested_limit=2)
    assert caught.value.cause == "bad-json"


def test_error_envelope() -> None:
    raw = orjson.dumps(
        {
            "status": "error",
            "error": {
                "code": "INVALID_PARAMETER",
                "message": "bad",
                "details": {"parameter": "limit"},
            },
        }
    )
    error = decode_error(400, raw, retry_after=None)
    assert str(error) == "HTTP 400 INVALID_PARAMETER: bad"
    assert error.details == {"parameter": "limit"}
    assert not error.transient


def test_html_and_bare_error_bodies() -> None:
    html = decode_error(502, b"<html><body>Bad Gateway</body></html>", retry_after=None)
    assert str(html) == "HTTP 502"
    assert html.transient
    bare = decode_error(403, b'{"error": "no access"}', retry_after=None)
    assert isinstance(bare, AuthError)
    assert str(bare) == "HTTP 403: no access"
    limited = decode_error(429, b"", retry_after=2.0)
    assert limited.transient
    assert limited.retry_after == 2.0


def test_single_object_routes() -> None:
    assert decode_object(b'{"status":"success","data":{"url":"u"}}') == {"url": "u"}
    assert decode_object(b'{"status":"success","data":[{"id":"x"}]}') == {"id": "x"}
    with pytest.raises(ContractError):
        decode_object(b'{"status":"success","data":[]}')
