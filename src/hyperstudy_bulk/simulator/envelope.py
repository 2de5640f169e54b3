"""Response bodies: success and error envelopes, and the non-JSON formats (contract §4, §7).

Data arrays are encoded once and cached; the envelope is spliced around the cached bytes so a warm
page costs one small orjson call for the metadata.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from hyperstudy_bulk.simulator.errors import ApiError

VERSION = "3.0.0"
_HTML = (
    "<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>"
    "<body><h1>{status} {reason}</h1><p>The server encountered a temporary error.</p></body></html>"
)


def encode(value: Any) -> bytes:
    return orjson.dumps(value)


def success(data: bytes, metadata: dict[str, Any]) -> bytes:
    """`{"status":"success","data":<data>,"metadata":{...}}` around pre-encoded data."""
    return b'{"status":"success","data":' + data + b',"metadata":' + encode(metadata) + b"}"


def error(exc: ApiError) -> bytes:
    return encode(exc.body())


def html_error(status: int, reason: str) -> bytes:
    """What a load balancer in front of the API answers: HTML, not the JSON envelope."""
    return _HTML.format(status=status, reason=reason).encode()


def pagination(total: int, returned: int, limit: int, offset: int) -> dict[str, Any]:
    """Pagination block; nextOffset is present only while hasMore (as in the SDK fixtures)."""
    has_more = offset + returned < total
    block: dict[str, Any] = {
        "total": total,
        "returned": returned,
        "hasMore": has_more,
        "limit": limit,
        "offset": offset,
    }
    if has_more:
        block["nextOffset"] = offset + returned
    return block


def pagination_headers(block: dict[str, Any]) -> dict[str, str]:
    """Pagination for ndjson/csv bodies, which carry records only ([UNSPECIFIED] in the docs)."""
    headers = {
        "X-Total-Count": str(block["total"]),
        "X-Returned": str(block["returned"]),
        "X-Has-More": "true" if block["hasMore"] else "false",
        "X-Limit": str(block["limit"]),
        "X-Offset": str(block["offset"]),
    }
    if "nextOffset" in block:
        headers["X-Next-Offset"] = str(block["nextOffset"])
    return headers


def ndjson(rows: list[dict[str, Any]]) -> bytes:
    """One JSON record per line, each line ending in a newline."""
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    """CSV, UTF-8 without BOM; columns in first-seen order; nested values as JSON; null empty."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue().encode()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)
