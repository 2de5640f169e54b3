"""`hyperstudy-bulk plan`: what a download would fetch and how long the budget makes it take,
learned with a few cheap requests (the room list, one 1-record page per data type, and with
`--page-size auto` one empty page past the end of the largest data type asking for
`--max-page-size`, whose answer tells the page size the server grants) and without writing
anything."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hyperstudy_bulk.client import ApiClient
from hyperstudy_bulk.config import Granularity, Settings
from hyperstudy_bulk.datatypes import PARTICIPANTS, RECORDINGS, ROOMS, DataType
from hyperstudy_bulk.errors import ApiError, HyperStudyBulkError
from hyperstudy_bulk.media import MINT_ENDPOINT
from hyperstudy_bulk.pager import stream_ids
from hyperstudy_bulk.pagesize import PageSizes
from hyperstudy_bulk.plan import (
    RequestBudget,
    Room,
    StreamSpec,
    choose_granularity,
    estimate_seconds,
    estimate_type_requests,
    plan_streams,
)
from hyperstudy_bulk.runner import ROOMS_LISTING_CAP, ExperimentNotFound, total_of
from hyperstudy_bulk.selection import Selection
from hyperstudy_bulk.timespec import iso_utc


@dataclass(frozen=True)
class Survey:
    experiment_id: str
    rooms: int
    rooms_complete: bool
    listed_rooms: list[Room]
    """The rooms, with their participants when the granularity is participant."""
    totals: dict[DataType, int]
    granularity: Granularity
    streams: list[StreamSpec]
    requests_by_type: dict[DataType, int]
    page_size: int
    """Records per page the estimate counts on (the size the server grants, for auto)."""
    seconds: float
    survey_requests: int
    selection: Selection
    media_files: int = 0
    """Recordings whose media file download would fetch: at most one mint request each."""


async def _ids(api: ApiClient, spec: StreamSpec, settings: Settings) -> tuple[list[str], int]:
    ids, total = await stream_ids(
        api,
        spec,
        spec.params(end_time=None),
        page_sizes=PageSizes(fixed=settings.fixed_page_size, maximum=settings.max_page_size),
        lookahead=api.concurrency.typical,
    )
    return [str(i) for i in ids if i is not None], total


async def granted_page_size(
    api: ApiClient, settings: Settings, experiment_id: str, totals: dict[DataType, int]
) -> int:
    """The page size a download would settle on: the fixed one, or for auto what the server
    grants when asked for the maximum (an empty page past the end of the largest data type,
    shrunk as a download would on a refusal)."""
    if settings.fixed_page_size is not None:
        return settings.fixed_page_size
    data_type = max(totals, key=lambda dt: totals[dt])
    spec = plan_streams(experiment_id, [data_type], Granularity.EXPERIMENT, [])[0]
    sizes = PageSizes(fixed=None, maximum=settings.max_page_size)
    limit = settings.max_page_size
    while True:
        try:
            page = await api.get_page(
                spec.endpoint,
                spec.segments,
                {},
                offset=totals[data_type],
                limit=limit,
                shrinkable=True,
            )
        except HyperStudyBulkError as error:
            smaller = sizes.smaller(data_type.folder, limit, error)
            if smaller is None:
                raise
            limit = smaller
            continue
        sizes.granted(data_type.folder, asked=limit, limit=page.limit, returned=0, more=False)
        return sizes.expected(data_type.folder)


async def survey_experiment(
    api: ApiClient, settings: Settings, experiment_id: str, *, now: datetime | None = None
) -> Survey:
    """Discover and count the selection the settings ask for, then plan. Raises
    ExperimentNotFound for an unknown id, ConfigError for an unknown room or participant."""
    now = now or datetime.now(UTC)
    selection = Selection.from_settings(settings, now)
    before = api.stats.requests
    rooms_spec = plan_streams(experiment_id, [ROOMS], Granularity.EXPERIMENT, [])[0]
    try:
        room_ids, room_total = await _ids(api, rooms_spec, settings)
    except ApiError as error:
        if error.status == 404:
            raise ExperimentNotFound(
                f"experiment {experiment_id!r} was not found (HTTP 404): check the id"
            ) from None
        raise
    rooms = [Room(room_id) for room_id in dict.fromkeys(room_ids)]
    rooms_complete = room_total < ROOMS_LISTING_CAP and len(room_ids) == room_total
    totals: dict[DataType, int] = {ROOMS: room_total}
    if selection.narrows_rooms:
        selection.unknown_rooms(experiment_id, room_ids)
        rooms = selection.rooms_to_fetch()
        totals[ROOMS] = len(rooms)
    if selection.participants:
        spec = plan_streams(experiment_id, [PARTICIPANTS], Granularity.ROOM, rooms)[0]
        selection.unknown_participants((await _ids(api, spec, settings))[0])
        totals[PARTICIPANTS] = len(selection.participants)
    for data_type in settings.data_types:
        if data_type not in totals:
            totals[data_type] = sum(
                [
                    await total_of(api, spec, selection.probe_params(spec, iso_utc(now)))
                    for spec in selection.probe_specs(experiment_id, data_type)
                ]
            )
    page_size = await granted_page_size(api, settings, experiment_id, totals)
    granularity = choose_granularity(
        settings.granularity,
        settings.data_types,
        rooms,
        totals=totals,
        page_size=page_size,
        rooms_complete=rooms_complete,
    )
    if selection.narrows_rooms:
        granularity = selection.granularity(settings.granularity)
    if granularity is Granularity.PARTICIPANT and not selection.participants:
        rooms = [
            Room(spec.scope_id, tuple((await _ids(api, spec, settings))[0]))
            for spec in plan_streams(experiment_id, [PARTICIPANTS], Granularity.ROOM, rooms)
        ]
    requests = {
        data_type: estimate_type_requests(
            granularity, data_type, rooms, total=totals.get(data_type), page_size=page_size
        )
        for data_type in settings.data_types
    }
    media_files = totals.get(RECORDINGS, 0) if settings.media else 0
    by_endpoint = {f"data/{dt.path}": n for dt, n in requests.items()}
    if media_files:
        by_endpoint[MINT_ENDPOINT] = media_files
    budget = RequestBudget(
        settings.rate_limit_per_hour,
        settings.rate_limit_per_minute_per_endpoint,
        settings.rate_limit_time_scale,
    )
    return Survey(
        experiment_id=experiment_id,
        rooms=len(rooms),
        rooms_complete=rooms_complete,
        listed_rooms=rooms,
        totals=totals,
        granularity=granularity,
        streams=plan_streams(experiment_id, settings.data_types, granularity, rooms),
        requests_by_type=requests,
        page_size=page_size,
        seconds=estimate_seconds(by_endpoint, budget),
        survey_requests=api.stats.requests - before,
        media_files=media_files,
        selection=selection,
    )
