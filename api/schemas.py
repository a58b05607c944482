"""The JSON answers of the HTTP API, as pydantic models: the routes declare them (`response_model=`), so
`/openapi.json` has a schema for every answer, and every answer is checked against its schema on the way out. Also
the one request body that is not a shared schema (`QueryUpdate`, a PUT's).

They describe the JSON exactly as the records' `to_dict` / `to_json` write it (the dashboard and clients read
those keys). A key that is only sometimes present (an event's `reason`, the parts of a media status) is a field
with a default: the routes that return them set `response_model_exclude_unset`, so an absent key stays absent."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.contracts.events import EndReason, EventType
from engine.contracts.queries import REDACTED, QuerySpec, WebhookSpec
from engine.contracts.settings import CameraSettings
from stream.health import CameraState


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the schema says so too (additionalProperties: false)


# ---- errors -------------------------------------------------------------------------------------
class ErrorAnswer(Answer):
    """401, 403, 404, 409, 503: what went wrong, in one sentence."""

    detail: str


class FieldError(Answer):
    loc: list[str | int] = Field(..., description="where: body / query / path / header, then the field path")
    msg: str
    type: str = Field(..., description="pydantic's error type, or value_error")


class ValidationAnswer(Answer):
    """422: every field that failed, with its path (engine.contracts.errors.error_list)."""

    detail: list[FieldError]


_ERRORS = {401: ("no token, or an invalid one", ErrorAnswer), 403: ("the token's scope is too small", ErrorAnswer),
           404: ("not found", ErrorAnswer), 409: ("exists already", ErrorAnswer),
           413: ("the request body is larger than api.max_body_bytes", ErrorAnswer),
           422: ("a field failed validation", ValidationAnswer), 503: ("unavailable", ErrorAnswer)}


def error_answers(*codes: int) -> dict[int | str, dict]:
    """The `responses=` entries of these error answers."""
    return {code: {"model": _ERRORS[code][1], "description": _ERRORS[code][0]} for code in codes}


# ---- health -------------------------------------------------------------------------------------
class Health(Answer):
    status: Literal["ok"]


class RoleDown(Answer):
    role: str
    state: Literal["restarting", "down"] = Field(..., description="restarting: it died and its supervisor restarts it")
    error: str = Field(..., description="why it stopped, as its supervisor saw it")
    restarts: int
    since: float = Field(..., description="Unix seconds: when it entered this state")
    supervisor: str


class Readiness(Answer):
    redis: bool
    workers: dict[str, int] = Field(..., description="workers with a fresh heartbeat, by role (ingest, engine, media, "
                                                     "webhooks); ingest and engine are required")
    down: list[RoleDown] = Field(default_factory=list, description="roles their supervisor reports not running")
    error: str | None = Field(None, description="present when Redis is unreachable")
    status: Literal["ready", "not ready"]


# ---- queries ------------------------------------------------------------------------------------
class RedactedWebhook(WebhookSpec):
    secret: Literal[REDACTED]  # write-only: never shown


class SinkUpdate(WebhookSpec):
    """A sink in a PUT: its secret may be left as it is."""

    secret: str | None = Field(None, description=f"the HMAC key; absent or {REDACTED!r}: the secret this query's sink "
                                                 "with the same URL has (a sink the query does not have needs one)")

    @field_validator("secret", mode="before")
    @classmethod
    def _secret(cls, v):  # checked once the secret is known (QuerySpec, after api/queries.py fills it in)
        return v


class QueryUpdate(QuerySpec):
    """The body of `PUT /v1/queries/{id}`: a QuerySpec whose sinks may keep their stored secrets, so what a GET
    answered can be sent back as it is. Fields left out take their defaults, except `webhooks`: left out, the
    query keeps its sinks."""

    webhooks: list[SinkUpdate] = Field([], description="sinks (at most 8); left out: the query's sinks as they are")


class QueryAnswer(QuerySpec):
    """A stored standing query (`StandingQuery.to_dict(redact=True)`): the request schema, with id and created_at set."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)  # every field is in every answer
    id: str = Field(..., description="[A-Za-z0-9_.-]{1,64}")
    created_at: float = Field(..., description="Unix seconds")
    webhooks: list[RedactedWebhook]


# ---- cameras ------------------------------------------------------------------------------------
class DroppedFrames(Answer):
    late: int = Field(..., description="decoded more than the camera's max_lag_s behind real time")
    redis: int = Field(..., description="not stored: Redis was unavailable")
    overload: int = Field(..., description="not decoded: the camera was behind real time and decoded key frames only")


class CameraHealthAnswer(Answer):
    """`stream.health.CameraHealth.to_json`."""

    state: CameraState
    fps: float
    last_frame_ts: float
    frames_decoded: int
    frames_dropped: int
    dropped: DroppedFrames
    frames_stored: int
    windows: int
    reconnects: int
    last_error: str
    updated_at: float


class CameraAnswer(Answer):
    id: str
    registered: bool = Field(..., description="in the camera registry (else only announced by a running ingest)")
    config: CameraSettings | None = Field(..., description="the registered settings, passwords in the URL masked")
    health: CameraHealthAnswer | None = Field(..., description="null: no health record (never ran, or it expired)")


# ---- events -------------------------------------------------------------------------------------
class BoxAnswer(Answer):
    ts: float
    xyxy: list[float] = Field(..., min_length=4, max_length=4, description="pixels of frame_size")


class EventAnswer(Answer):
    """A grounding event, schema v1 (`engine.contracts.events.GroundingEvent.to_dict`)."""

    model_config = ConfigDict(serialize_by_alias=True)  # the JSON key is "schema", a name BaseModel has taken
    schema_: int = Field(..., alias="schema")
    type: EventType
    event_id: str
    query_id: str
    camera_id: str
    query_text: str
    score: float
    start_ts: float
    end_ts: float
    boxes: list[BoxAnswer]
    frame_size: list[int] = Field(..., min_length=2, max_length=2, description="width, height")
    window_id: str
    model: str
    reason: EndReason | None = Field(None, description="`end` events only")


class EventPage(Answer):
    events: list[EventAnswer] = Field(..., description="newest first")
    next_cursor: str | None = Field(..., description="the `cursor=` of the next (older) page; null: no more")


# ---- event media --------------------------------------------------------------------------------
class SnapshotMade(Answer):
    state: Literal["ok"]
    ts: float
    score: float
    bytes: int
    render_s: float


class SnapshotMissing(Answer):
    state: Literal["missing"]
    reason: str
    score: float


class ClipPending(Answer):
    state: Literal["pending"]
    due_ts: float


class ClipMade(Answer):
    state: Literal["ok"]
    start_ts: float
    end_ts: float
    duration_s: float
    fps: float
    frames: int
    missing_frames: int
    missing_ts: list[float] = Field(..., description="the first 50 times with no preview frame")
    bytes: int
    render_s: float


class ClipMissing(Answer):
    state: Literal["missing"]
    reason: str
    start_ts: float
    end_ts: float


class ClipFailed(Answer):
    state: Literal["failed"]
    reason: str


Snapshot = Annotated[Union[SnapshotMade, SnapshotMissing], Field(discriminator="state")]
Clip = Annotated[Union[ClipPending, ClipMade, ClipMissing, ClipFailed], Field(discriminator="state")]


class MediaStatus(Answer):
    """What the media worker made for an event (engine/media/worker.py writes it)."""

    event_id: str
    snapshot: Snapshot | None
    clip: Clip | None
    camera_id: str
    query_id: str
    query_text: str
    start_ts: float
    end_ts: float
    updated_at: float
