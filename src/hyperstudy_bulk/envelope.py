"""The contract's response shapes (§4) in one place: bytes in, a typed `Page` or error out.

Liberal where the contract is silent (pagination without `limit`/`offset`/`returned`, error
bodies that are HTML or lack the envelope), strict where a wrong reading would corrupt the
archive (`data` must be a list of objects, `total` a count, `nextOffset` ahead of `offset`).

A page's records are kept as the exact JSON text the server sent (msgspec's `Raw`): they are
checked to be objects and their ids read, but never decoded into Python objects and encoded
again. That is both the fastest way to archive them and the most faithful (byte for byte).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from hyperstudy_bulk.errors import ApiError, AuthError, ContractError, TransportError


@dataclass(frozen=True)
class Page:
    """One page of a paginated data route, as the server described it."""

    records: list[msgspec.Raw]
    """Each record's JSON text, exactly as served."""
    ids: list[Any]
    """Each record's id field (None where absent; empty when the type has no id field)."""
    offset: int
    total: int
    limit: int
    has_more: bool
    next_offset: int | None
    warnings: tuple[str, ...] = ()

    @property
    def returned(self) -> int:
        return len(self.records)

    @property
    def end(self) -> int:
        """First offset this page does not cover: nextOffset while there is more, else total."""
        return self.next_offset if self.next_offset is not None else self.offset + self.returned


class _Envelope(msgspec.Struct, gc=False):
    data: list[msgspec.Raw]
    metadata: Any = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)


@functools.cache
def _ids_decoder(id_field: str | None) -> msgspec.json.Decoder[Any]:
    """Reads only `data[*].<id_field>`, and fails unless every record is an object."""
    # gc=False: these short-lived holders form no cycles, so the collector need not track them.
    record = msgspec.defstruct("Record", [(id_field, Any, None)] if id_field else [], gc=False)
    envelope = msgspec.defstruct("Ids", [("data", list[record])], gc=False)  # type: ignore[valid-type]
    return msgspec.json.Decoder(envelope)


def decode_json(body: bytes) -> Any:
    """orjson, with undecodable bodies reported as a (retryable) transport fault."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise TransportError(
            f"response body is not valid JSON ({error})", cause="bad-json"
        ) from None


def decode_page(
    body: bytes, *, requested_offset: int, requested_limit: int, id_field: str | None = None
) -> Page:
    """Decode a 2xx body of `/data/{type}/{scope}/{id}` into a Page, checking the contract."""
    try:
        document = _ENVELOPE.decode(body)
    except msgspec.ValidationError as error:
        raise ContractError(f"response has no 'data' list ({error})") from None
    except msgspec.DecodeError as error:
        raise TransportError(
            f"response body is not valid JSON ({error})", cause="bad-json"
        ) from None
    try:
        ids_holder = _ids_decoder(id_field).decode(body)
    except msgspec.ValidationError as error:
        raise ContractError(f"'data' holds something other than JSON objects ({error})") from None
    records = document.data
    ids = list(map(operator.attrgetter(id_field), ids_holder.data)) if id_field else []
    metadata = document.metadata
    pagination = metadata.get("pagination") if isinstance(metadata, dict) else None
    if not isinstance(pagination, dict):
        raise ContractError("response has no metadata.pagination")

    total = _count(pagination, "total", required=True)
    offset = _count(pagination, "offset", default=requested_offset)
    has_more = pagination.get("hasMore")
    if not isinstance(has_more, bool):
        raise ContractError("metadata.pagination.hasMore is missing or not true/false")
    # Without `limit`, a page with more to come shows the server's effective limit by its
    # length; without `nextOffset`, the next page starts after the records returned (the
    # requested limit would skip what a capping server did not send).
    limit = _count(pagination, "limit", default=len(records) if has_more else requested_limit)
    next_offset = (
        _count(pagination, "nextOffset", default=offset + len(records)) if has_more else None
    )
    returned = pagination.get("returned", len(records))
    if returned != len(records):
        raise ContractError(
            f"pagination.returned is {returned!r} but the page holds {len(records)} records"
        )
    if offset != requested_offset:
        raise ContractError(
            f"asked for offset {requested_offset}, the server answered offset {offset}"
        )
    if next_offset is not None and next_offset <= offset:
        raise ContractError(f"nextOffset {next_offset} does not move past offset {offset}")
    if next_offset is not None and len(records) > next_offset - offset:
        raise ContractError(
            f"page at offset {offset} holds {len(records)} records but nextOffset is {next_offset}"
        )
    warnings = metadata.get("_warnings") if isinstance(metadata, dict) else None
    return Page(
        records=records,
        ids=ids,
        offset=offset,
        total=total,
        limit=limit,
        has_more=has_more,
        next_offset=next_offset,
        warnings=tuple(str(w) for w in warnings) if isinstance(warnings, list) else (),
    )


def _count(
    pagination: dict[str, Any], key: str, *, required: bool = False, default: int = 0
) -> int:
    value = pagination.get(key)
    if value is None:
        if required:
            raise ContractError(f"metadata.pagination.{key} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ContractError(f"metadata.pagination.{key} is {value!r}, not a count")
    return value


def decode_object(body: bytes) -> dict[str, Any]:
    """The `data` of a single-object route (e.g. a minted download URL)."""
    document = decode_json(body)
    data = document.get("data") if isinstance(document, dict) else None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        raise ContractError("response has no 'data' object")
    return data


def decode_error(status: int, body: bytes, *, retry_after: float | None) -> ApiError:
    """An ApiError for a non-2xx response, whatever shape its body has."""
    code: str | None = None
    details: object = None
    message = ""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict):
            code = error.get("code") if isinstance(error.get("code"), str) else None
            message = str(error.get("message") or "")
            details = error.get("details")
        elif isinstance(error, str):
            message = error
        elif isinstance(document.get("message"), str):
            message = document["message"]
    summary = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    kind = AuthError if status in (401, 403) else ApiError
    return kind(summary, status=status, code=code, details=details, retry_after=retry_after)
