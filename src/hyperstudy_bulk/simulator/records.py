"""What each data type's records look like (contract §6).

A builder turns (room, participant slot k, index i in the room stream, timestamp ms, hash r) into
a JSON-native dict. Fields that vary are bit slices of r, so a record costs one hash and a few
table look-ups; strings come from fixed pools that exercise unicode (accents, CJK, emoji, RTL).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from hyperstudy_bulk.simulator.ids import firestore_id, mix64

Record = dict[str, Any]

_EPOCH = dt.date(1970, 1, 1)
NAMES = (
    "Zoë Müller",
    "José Álvarez",
    "李雷",
    "Ahmed عبدالله",
    "Ольга Петрова",
    "Søren Kierkegaard",
    "🙂 Sam",
    "Siobhán O'Brien",
    "Nguyễn Văn An",
    "שרה כהן",
    'Ana-María, "Jr"',
    "山田 太郎",
)
CHAT_LINES = (
    "Hi! Can you hear me?",
    "Oui, c'est très clair 👍",
    "我们开始吧",
    "مرحبا، هل أنت مستعد؟",
    "Wait — the video froze…",
    "ok, on three: 1, 2, 3",
    'She said "turn left", then paused.',
    "line one\nline two",
    "😂😂😂",
    "Ça va? ¿Listo?",
    "שלום לכולם",
    'tab\tseparated, comma, "quote"',
)
ROLES = ("participant", "leader", "follower", "observer")
COMPLETION_CODES = (
    "SUCCESS",
    "SUCCESS",
    "SUCCESS",
    "TIMEOUT",
    "TECHNICAL",
    "NOCONSENT",
    "ABANDONED",
)
STATES = (
    "welcome",
    "consent",
    "instructions",
    "video-1",
    "rating",
    "discussion",
    "survey",
    "debrief",
)
COMPONENT_TYPES = ("ShowVideo", "TextInput", "MultipleChoice", "RatingScale", "Instructions")
# (eventType, category, componentType); componentType None matches the SDK fixture.
EVENT_KINDS = (
    ("component.complete", "component", "TextInput"),
    ("component.start", "component", "ShowVideo"),
    ("state.enter", "state", None),
    ("state.exit", "state", None),
    ("media.play", "media", "ShowVideo"),
    ("media.pause", "media", "ShowVideo"),
    ("chat.send", "communication", None),
    ("sync.drift", "sync", "ShowVideo"),
    ("questionnaire.response", "post_experiment", "Questionnaire"),
    ("sparse_rating.submit", "sparse_rating", "SparseRating"),
)
PRE_EVENT_KINDS = (
    ("consent.accepted", "pre_experiment", "Consent"),
    ("instructions.viewed", "pre_experiment", "Instructions"),
    ("instructions.next", "pre_experiment", "Instructions"),
)
VIDEOCHAT_KINDS = (
    "participant_connected",
    "track_published",
    "connection_quality_changed",
    "track_unpublished",
    "participant_disconnected",
)


def iso_ms(ms: int) -> str:
    """Unix milliseconds -> ISO 8601 UTC with milliseconds and Z."""
    days, rem = divmod(ms, 86_400_000)
    hours, rem = divmod(rem, 3_600_000)
    minutes, rem = divmod(rem, 60_000)
    seconds, millis = divmod(rem, 1000)
    day = (_EPOCH + dt.timedelta(days=days)).isoformat()
    return f"{day}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


@dataclass(frozen=True)
class Member:
    """One participant of one room."""

    id: str
    name: str
    email: str
    role: str
    is_agent: bool
    completion_code: str | None


@dataclass(frozen=True)
class Room:
    """One room (session): its place in time and the facts every record of it repeats."""

    gindex: int
    exp_index: int
    local_index: int
    id: str
    name: str
    experiment_id: str
    deployment_id: str
    start_ms: int
    started_ms: int
    end_ms: int
    members: tuple[Member, ...]
    counts: MappingProxyType[str, int]

    @property
    def started_iso(self) -> str:
        return iso_ms(self.started_ms)


def _common(room: Room, k: int, ts: int) -> Record:
    return {
        "experimentId": room.experiment_id,
        "roomId": room.id,
        "participantId": room.members[k].id,
        "timestamp": iso_ms(ts),
        "onset": ts - room.started_ms,
    }


def event(room: Room, k: int, i: int, ts: int, r: int) -> Record:
    pre = ts < room.started_ms
    kinds = PRE_EVENT_KINDS if pre else EVENT_KINDS
    event_type, category, component_type = kinds[r % len(kinds)]
    state = STATES[(r >> 8) % 3 if pre else 3 + (r >> 8) % 5]
    rec = {"id": firestore_id(r), **_common(room, k, ts)}
    rec |= {
        "participantRole": room.members[k].role,
        "eventType": event_type,
        "category": category,
        "componentType": None if (r >> 12) % 9 == 0 else component_type,
        "componentId": f"{state}-{(component_type or 'none').lower()}",
        "stateId": state,
        "stateName": state.replace("-", " ").title(),
        "content": f"{room.members[k].name} · {event_type}",
        "duration": (r >> 16) % 90_000 if event_type.endswith("complete") else None,
    }
    if category in ("component", "pre_experiment"):
        rec["response"] = {
            "value": CHAT_LINES[(r >> 24) % len(CHAT_LINES)],
            "responseTime": (r >> 32) % 20_000,
        }
    elif category in ("post_experiment", "sparse_rating"):
        rec["value"] = {"answer": (r >> 24) % 7 + 1, "scale": [1, 7]}
    return rec


def chat(room: Room, k: int, i: int, ts: int, r: int) -> Record:
    common = _common(room, k, ts)
    del common["participantId"]
    return {
        "messageId": firestore_id(r),
        **common,
        "senderId": room.members[k].id,
        "senderName": room.members[k].name,
        "content": CHAT_LINES[(r >> 8) % len(CHAT_LINES)],
        "recipientIds": [m.id for j, m in enumerate(room.members) if j != k],
        "messageType": "system" if (r >> 16) % 23 == 0 else "text",
    }


def videochat(room: Room, k: int, i: int, ts: int, r: int) -> Record:
    kind = VIDEOCHAT_KINDS[(r >> 8) % len(VIDEOCHAT_KINDS)]
    quality = None
    if kind == "connection_quality_changed":
        quality = {
            "score": ((r >> 16) % 1000) / 1000,
            "packetLoss": ((r >> 26) % 500) / 10_000,
            "jitterMs": (r >> 36) % 80,
            "bitrateKbps": 300 + (r >> 44) % 2200,
        }
    return {
        "id": firestore_id(r),
        **_common(room, k, ts),
        "eventType": kind,
        "trackKind": ("audio", "video", None)[(r >> 12) % 3] if "track" in kind else None,
        "quality": quality,
    }


def continuous_rating(room: Room, k: int, i: int, ts: int, r: int) -> Record:
    raw = (r >> 8) % 1001
    offset = (r >> 20) % 41 - 20
    common = _common(room, k, ts)
    return {
        "ratingId": firestore_id(r),
        **common,
        "rawOnset": common["onset"] + offset,
        "clockOffsetApplied": -offset,
        "componentId": "rating-slider",
        "value": raw / 10,
        "normalizedValue": raw / 1000,
        "rawValue": raw,
        "scaleMin": 0,
        "scaleMax": 100,
    }


def sparse_rating(room: Room, k: int, i: int, ts: int, r: int) -> Record:
    value = (r >> 8) % 7 + 1
    offset = (r >> 12) % 41 - 20
    common = _common(room, k, ts)
    pause = i // len(room.members)
    video_ms = pause * 30_000 + (r >> 20) % 1000
    del common["experimentId"], common["roomId"]
    return {
        "ratingId": firestore_id(r),
        **common,
        "rawOnset": common["onset"] + offset,
        "clockOffsetApplied": -offset,
        "value": value,
        "rawValue": value,
        "scale": {"min": 1, "max": 7},
        "type": "sparse",
        "stateId": "rating",
        "stimulusId": "video-1",
        "stimulusTime": video_ms / 1000,
        "responseTime": (r >> 32) % 8000,
        "confidence": None if (r >> 45) % 4 == 0 else ((r >> 45) % 5 + 1),
        "metadata": {
            "question": "How engaged do you feel right now?",
            "dimension": "engagement",
            "componentType": "SparseRating",
            "sampleIndex": pause,
        },
        "ratingEndOnset": common["onset"] + 1500,
        "sparseRatingData": {
            "videoId": "video-1",
            "pauseIndex": pause,
            "videoRelativeTime": video_ms,
            "pauseTimestamp": ts - 2000,
            "componentType": "SparseRating",
            "componentData": {"value": value},
            "previousRatings": [],
            "mediaPauseOnset": common["onset"] - 2000,
            "mediaResumeOnset": common["onset"] + 1500,
            "actualPauseDuration": 3500,
        },
        "stateStartTime": iso_ms(room.started_ms),
        "stateDuration": room.end_ms - room.started_ms,
    }


def sync(room: Room, k: int, i: int, ts: int, r: int) -> Record:
    return {
        "metricId": firestore_id(r),
        **_common(room, k, ts),
        "timeDrift": (r >> 8) % 401 - 200,
        "playbackRate": (1.0, 1.0, 1.0, 0.95, 1.05)[(r >> 18) % 5],
        "syncQuality": ((r >> 22) % 1001) / 1000,
        "latency": (r >> 32) % 250,
        "bufferHealth": ((r >> 40) % 100) / 10,
    }


def component(room: Room, k: int, i: int, ts: int, r: int) -> Record:
    ctype = COMPONENT_TYPES[(r >> 8) % len(COMPONENT_TYPES)]
    state = STATES[3 + (r >> 12) % 5]
    return {
        "id": firestore_id(r),
        "componentId": f"{state}-{ctype.lower()}",
        "componentType": ctype,
        **_common(room, k, ts),
        "stateId": state,
        "completed": (r >> 16) % 5 != 0,
        "config": {"required": (r >> 20) % 2 == 0, "timeoutMs": 60_000, "label": state.title()},
        "variableSnapshot": {"round": i // len(room.members), "score": (r >> 24) % 50},
    }


def eyetracking(room: Room, k: int, i: int, ts: int, r: int) -> Record:
    return {
        "id": firestore_id(r),
        **_common(room, k, ts),
        "x": ((r >> 8) % 10_001) / 10_000,
        "y": ((r >> 22) % 10_001) / 10_000,
        "confidence": ((r >> 36) % 101) / 100,
        "fixation": (r >> 44) % 3 == 0,
    }


def media_size(room: Room, i: int, mean: int, r: int) -> int:
    """Size in bytes of recording i: within ±50 % of the configured mean, audio a fifth."""
    size = mean // 2 + r % (mean + 1)
    return max(64, size // 5 if i >= len(room.members) else size)


def recording_format(room: Room, i: int, r: int) -> str:
    """Audio is always webm; video is mp4 or webm."""
    return "webm" if i >= len(room.members) or (r >> 8) % 3 == 0 else "mp4"


def recording_failed(r: int, share: float) -> bool:
    """Whether recording hash `r` is one of the `share` whose egress failed (no file)."""
    return (r >> 24) % 10_000 < share * 10_000


def recording(
    room: Room,
    k: int,
    i: int,
    ts: int,
    r: int,
    *,
    rec_id: str,
    size: int,
    signed_url: str | None,
    failed: bool = False,
) -> Record:
    """A recording row; older rows embed a signed URL, newer ones only a downloadPath. A
    failed egress left no file: `status` failed, `downloadPath` null, no fileSize nor URL."""
    member = room.members[k]
    audio = i >= len(room.members)
    fmt = recording_format(room, i, r)
    duration = room.end_ms - ts
    rec: Record = {
        "recordingId": rec_id,
        "egressId": "EG_" + firestore_id(mix64(r))[:12],
        "participantId": member.id,
        "participantName": member.name,
        "experimentId": room.experiment_id,
        "roomId": room.id,
        "startTime": iso_ms(ts),
        "endTime": iso_ms(room.end_ms),
        "duration": duration,
        "videoOffset": ts - room.started_ms,
        "format": fmt,
        "resolution": None if audio else "1280x720",
        "status": "failed" if failed else "completed" if (r >> 12) % 2 else "complete",
        "fileName": f"{rec_id}.{fmt}",
        "metadata": {
            "type": "audio" if audio else "video",
            "recordingType": "audio" if audio else "individual",
            "roomName": room.name,
            "experimentId": room.experiment_id,
        },
    }
    if failed:
        rec["downloadPath"] = None
        return rec
    if (r >> 16) % 4 != 0:
        rec["fileSize"] = size
    if signed_url is not None:
        rec["url"] = signed_url
        rec["downloadUrl"] = signed_url
    else:
        rec["downloadPath"] = (
            f"/data/recordings/download/{quote(room.id, safe='')}/{quote(rec_id, safe='')}"
        )
    return rec


def participant(room: Room, k: int, i: int, ts: int, r: int) -> Record:
    member = room.members[k]
    done = member.completion_code is not None
    return {
        "id": member.id,
        "name": member.name,
        "email": member.email,
        "role": member.role,
        "status": "completed" if done else "active",
        "completionCode": member.completion_code,
        "joinedAt": iso_ms(ts),
        "completedAt": iso_ms(room.end_ms - (r % 60_000)) if done else None,
        "isAgent": member.is_agent,
        "roomId": room.id,
        "experimentId": room.experiment_id,
        "deploymentId": room.deployment_id,
    }


def room_row(room: Room, k: int, i: int, ts: int, r: int) -> Record:
    return {
        "id": room.id,
        "name": room.name,
        "experimentId": room.experiment_id,
        "deploymentId": room.deployment_id,
        "status": "completed" if room.local_index % 7 != 6 else "abandoned",
        "participantCount": len(room.members),
        "createdAt": iso_ms(ts),
    }


Builder = Callable[[Room, int, int, int, int], Record]
BUILDERS: MappingProxyType[str, Builder] = MappingProxyType(
    {
        "events": event,
        "chat": chat,
        "videochat": videochat,
        "ratings/continuous": continuous_rating,
        "ratings/sparse": sparse_rating,
        "sync": sync,
        "components": component,
        "eyetracking": eyetracking,
        "participants": participant,
        "rooms": room_row,
    }
)
