"""The Flux data model: events, entities, publish results and state updates.

Field names on the wire are exactly Flux's (`eventId`, `lastUpdated`, `entity_id`), so an event
published here can be replayed into a real Flux server and back. Python code uses snake_case
attributes; `to_wire()` gives the Flux JSON.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)
from pydantic_core import PydanticSerializationError

from .._validation import describe_problems
from .errors import BatchTooLargeError, EventTooLargeError, InvalidEventError

__all__ = [
    "DELETED_MARKER",
    "DELETIONS_STREAM",
    "MAX_BATCH_BYTES",
    "MAX_DELETE_IDS",
    "MAX_EVENT_BYTES",
    "BatchDeleteResult",
    "DeleteResult",
    "Entity",
    "EventPayload",
    "FluxEvent",
    "PreparedEvent",
    "PublishResult",
    "RuntimeConfig",
    "RuntimeConfigUpdate",
    "StateUpdate",
    "format_timestamp",
    "make_event",
    "make_tombstone",
    "matches_pattern",
    "namespace_of",
    "new_event_id",
    "now_ms",
    "parse_timestamp",
    "prepare_batch",
    "prepare_event",
]

MAX_EVENT_BYTES = 1024 * 1024
"""One event, serialised as compact JSON, may be at most 1 MB (Flux's single-event body limit)."""
MAX_BATCH_BYTES = 10 * 1024 * 1024
"""A batch may be at most 10 MB in total (Flux's batch body limit)."""
MAX_DELETE_IDS = 10_000
"""A batch delete may remove at most 10,000 entities (Flux's `max_batch_delete`)."""

DELETED_MARKER = "__deleted__"
"""Property that marks a tombstone event; Flux uses the same marker, so logs stay interchangeable."""
DELETIONS_STREAM = "flux.deletions"

_STREAM = re.compile(r"^[a-z0-9]+(?:\.[a-z0-9]+)*$")
_MAX_ID_CHARS = 512


def _wire(name: str, wire: str, **options: Any) -> Any:
    """A field read as `wire` or `name` and written as `wire` (type checkers see `name`)."""
    return Field(validation_alias=AliasChoices(wire, name), serialization_alias=wire, **options)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def format_timestamp(ms: int) -> str:
    """Epoch milliseconds as Flux writes `lastUpdated`: ISO 8601, UTC, millisecond precision."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_timestamp(value: Any) -> datetime:
    """Accept a datetime, epoch milliseconds, or ISO text (Flux sends up to nanoseconds)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        match = re.match(r"^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$", text)
        if match:  # Python keeps at most microseconds
            text = f"{match.group(1)}.{match.group(2)[:6].ljust(6, '0')}{match.group(3)}"
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(f"not a timestamp: {value!r}")


_id_lock = threading.Lock()
_id_last_ms = 0
_id_counter = 0


def new_event_id() -> str:
    """A UUIDv7 (what Flux generates): time-ordered, and monotonic within this process.

    The 12-bit `rand_a` field holds a counter within one millisecond, so ids sort in publish
    order even when many are made in the same millisecond.
    """
    global _id_last_ms, _id_counter
    with _id_lock:
        ms = now_ms()
        if ms <= _id_last_ms:
            ms = _id_last_ms
            _id_counter += 1
            if _id_counter > 0xFFF:
                ms += 1
                _id_counter = 0
        else:
            _id_counter = secrets.randbelow(0x400)
        _id_last_ms = ms
        counter = _id_counter
    tail = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | tail
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def namespace_of(entity_id: str) -> str | None:
    """The namespace of `ns/thing` is `ns`; an id without `/` has none."""
    head, sep, _ = entity_id.partition("/")
    return head if sep and head else None


def matches_pattern(pattern: str, entity_id: str) -> bool:
    """Flux subscription patterns: `*` is everything, a trailing `*` matches a prefix, else exact."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return entity_id.startswith(pattern[:-1])
    return entity_id == pattern


class EventPayload(BaseModel):
    """What state derivation reads from an event: which entity, and which properties change.

    As in Flux, a payload without a string `entity_id` or an object `properties` is a valid
    event that is logged but changes no state (Flux skips it with a warning).
    """

    model_config = ConfigDict(extra="allow")

    entity_id: str | None = None
    properties: dict[str, Any] | None = None

    @field_validator("entity_id", mode="before")
    @classmethod
    def _only_text_ids(cls, value: Any) -> Any:
        return value if isinstance(value, str) else None

    @field_validator("properties", mode="before")
    @classmethod
    def _only_objects(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else None

    @property
    def applies(self) -> bool:
        """Whether state derivation uses this payload (it names an entity and has properties)."""
        return self.entity_id is not None and self.properties is not None

    @field_validator("entity_id")
    @classmethod
    def _check_entity_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("entity_id must not be empty")
        if len(value) > _MAX_ID_CHARS:
            raise ValueError(f"entity_id is {len(value)} characters, at most {_MAX_ID_CHARS} allowed")
        if any(ord(char) < 32 for char in value):
            raise ValueError("entity_id must not contain control characters")
        return value


class FluxEvent(BaseModel):
    """One immutable observation, in Flux's envelope.

    `event_id` and `timestamp` may be left out when publishing: the store fills in a UUIDv7 and
    the current time. `schema` is carried, never validated (as in Flux).
    """

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    event_id: str | None = _wire("event_id", "eventId", default=None)
    stream: str
    source: str
    timestamp: int | None = None
    key: str | None = None
    schema_: Any = _wire("schema_", "schema", default=None)
    payload: EventPayload

    @field_validator("stream")
    @classmethod
    def _check_stream(cls, value: str) -> str:
        if not _STREAM.match(value):
            raise ValueError(
                f"stream {value!r} must be lowercase letters and digits in dot-separated segments "
                "(like 'sensors.temperature')"
            )
        return value

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("source must not be empty")
        return value

    @field_validator("timestamp")
    @classmethod
    def _check_timestamp(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError(f"timestamp must be epoch milliseconds above 0, got {value}")
        return value

    @property
    def entity_id(self) -> str:
        """The entity the event changes ("" when the payload names none)."""
        return self.payload.entity_id or ""

    @property
    def is_tombstone(self) -> bool:
        return self.payload.applies and (self.payload.properties or {}).get(DELETED_MARKER) is True

    def to_wire(self) -> dict[str, Any]:
        """The Flux JSON object (camelCase envelope, absent optional fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


@dataclass(slots=True)
class PreparedEvent:
    """A validated event as stored: its compact JSON and the fields state derivation reads.

    `properties` come from the JSON, not from the caller's objects, so what is applied is
    exactly what replay will read back (a datetime becomes its ISO text, NaN becomes null).
    """

    event_id: str
    stream: str
    entity_id: str
    properties: dict[str, Any]
    body: str

    @property
    def is_tombstone(self) -> bool:
        return self.properties.get(DELETED_MARKER) is True

    @property
    def size(self) -> int:
        return len(self.body) if self.body.isascii() else len(self.body.encode("utf-8"))

    @classmethod
    def from_body(cls, body: str) -> PreparedEvent:
        """Read back a logged event (validated when it was written)."""
        wire = json.loads(body)
        payload = wire.get("payload") or {}
        entity_id = payload.get("entity_id")
        properties = payload.get("properties")
        applies = isinstance(entity_id, str) and isinstance(properties, dict)
        return cls(
            event_id=str(wire.get("eventId", "")),
            stream=str(wire.get("stream", "")),
            entity_id=str(entity_id) if applies else "",
            properties=dict(properties) if applies and isinstance(properties, dict) else {},
            body=body,
        )

    def event(self) -> FluxEvent:
        return FluxEvent.model_validate_json(self.body)


def _describe(error: ValidationError, where: str) -> str:
    return f"{where} is not a valid Flux event: " + describe_problems(error, "event")


def prepare_event(
    raw: FluxEvent | PreparedEvent | Mapping[str, Any],
    *,
    where: str = "event",
    max_bytes: int | None = MAX_EVENT_BYTES,
) -> PreparedEvent:
    """Validate one event, fill in `eventId`/`timestamp`, and enforce the 1 MB limit.

    Raises `InvalidEventError` or `EventTooLargeError` naming `where` (e.g. "event 3").
    `max_bytes=None` skips the size check: the server measures the request body instead, as
    Flux does (our re-serialised JSON can be longer than what the client sent).
    """
    if isinstance(raw, PreparedEvent):
        return raw
    if isinstance(raw, FluxEvent):
        event = raw
        if not event.event_id or event.timestamp is None:
            event = event.model_copy()
    elif isinstance(raw, Mapping):
        try:
            event = FluxEvent.model_validate(raw)
        except ValidationError as exc:
            raise InvalidEventError(_describe(exc, where)) from None
    else:
        raise InvalidEventError(f"{where} must be a JSON object, got {type(raw).__name__}")
    if not event.event_id:
        event.event_id = new_event_id()
    if event.timestamp is None:
        event.timestamp = now_ms()
    try:
        body = event.model_dump_json(by_alias=True, exclude_none=True)
    except PydanticSerializationError as exc:
        raise InvalidEventError(f"{where} cannot be stored as JSON: {exc}") from None
    # The same serializer in JSON mode, so applied properties equal what replay reads back.
    applies = event.payload.applies
    properties = (
        event.payload.model_dump(mode="json", include={"properties"})["properties"] if applies else {}
    )
    prepared = PreparedEvent(
        event_id=event.event_id,
        stream=event.stream,
        entity_id=(event.payload.entity_id or "") if applies else "",
        properties=properties,
        body=body,
    )
    if max_bytes is not None and prepared.size > max_bytes:
        raise EventTooLargeError(
            f"{where} is {prepared.size:,} bytes as JSON; one event may be at most {max_bytes:,} bytes"
            + (" (1 MB)" if max_bytes == MAX_EVENT_BYTES else "")
        )
    return prepared


def prepare_batch(
    events: Sequence[FluxEvent | PreparedEvent | Mapping[str, Any]],
    *,
    max_event_bytes: int | None = MAX_EVENT_BYTES,
    max_total_bytes: int | None = MAX_BATCH_BYTES,
) -> tuple[list[PublishResult | None], list[PreparedEvent]]:
    """Validate each event of a batch on its own.

    Returns one slot per event (None where the event is fine, an error result where it is not)
    and the good events. Raises `BatchTooLargeError` when the good ones exceed 10 MB together.
    """
    results: list[PublishResult | None] = []
    prepared: list[PreparedEvent] = []
    total = 0
    for index, raw in enumerate(events):
        try:
            item = prepare_event(raw, where=f"event {index}", max_bytes=max_event_bytes)
        except (InvalidEventError, EventTooLargeError) as exc:
            stream = raw.get("stream") if isinstance(raw, Mapping) else None
            results.append(PublishResult(stream=stream if isinstance(stream, str) else None, error=str(exc)))
            continue
        total += item.size
        prepared.append(item)
        results.append(None)
    if max_total_bytes is not None and total > max_total_bytes:
        raise BatchTooLargeError(
            f"the batch is {total:,} bytes as JSON; a batch may be at most {MAX_BATCH_BYTES:,} bytes "
            "(10 MB): split it"
        )
    return results, prepared


def make_event(
    entity_id: str,
    properties: Mapping[str, Any],
    *,
    stream: str = "state",
    source: str = "openclaw-mini",
    key: str | None = None,
    timestamp: int | None = None,
) -> FluxEvent:
    """Build an event that sets `properties` on `entity_id`, with its id and time filled in."""
    try:
        return FluxEvent(
            event_id=new_event_id(),
            stream=stream,
            source=source,
            key=key,
            timestamp=timestamp if timestamp is not None else now_ms(),
            payload=EventPayload(entity_id=entity_id, properties=dict(properties)),
        )
    except ValidationError as exc:
        raise InvalidEventError(_describe(exc, f"event for {entity_id!r}")) from None


def make_tombstone(entity_id: str, *, source: str = "openclaw-mini") -> FluxEvent:
    """The event that deletes an entity: Flux's `__deleted__` marker on the deletions stream."""
    stamp = now_ms()
    return make_event(
        entity_id,
        {DELETED_MARKER: True, "__deleted_at__": stamp},
        stream=DELETIONS_STREAM,
        source=source,
        key=entity_id,
        timestamp=stamp,
    )


class Entity(BaseModel):
    """The current state of one thing: merged properties and when they last changed."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    properties: dict[str, Any] = Field(default_factory=dict)
    last_updated: datetime = _wire("last_updated", "lastUpdated")

    @field_validator("last_updated", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> datetime:
        return parse_timestamp(value)

    @field_serializer("last_updated")
    def _write_time(self, value: datetime) -> str:
        return format_timestamp(int(value.timestamp() * 1000))

    @property
    def namespace(self) -> str | None:
        return namespace_of(self.id)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


class PublishResult(BaseModel):
    """Flux's answer for one event: its id and stream, or an error when this event failed alone."""

    model_config = ConfigDict(populate_by_name=True)

    event_id: str | None = _wire("event_id", "eventId", default=None)
    stream: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.event_id is not None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class DeleteResult(BaseModel):
    """Answer of a single delete: the entity and the id of its tombstone event."""

    model_config = ConfigDict(populate_by_name=True)

    entity_id: str
    event_id: str = _wire("event_id", "eventId")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


class BatchDeleteResult(BaseModel):
    """Answer of `delete_many`, shaped like Flux's `POST /api/state/entities/delete`."""

    deleted: int = 0
    failed: int = 0
    errors: list[str] = Field(default_factory=list)


class StateUpdate(BaseModel):
    """A change seen by a subscriber: properties set on an entity, or the entity deleted.

    `properties` holds what the event changed (all of them for a `snapshot` entry, which
    replays current state at subscribe time). Over Flux's WebSocket each property arrives as
    its own message; our server adds `eventId` and `last` so a client can regroup them.
    """

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["state_update", "entity_deleted"]
    entity_id: str
    properties: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime
    event_id: str | None = _wire("event_id", "eventId", default=None)
    snapshot: bool = False

    @field_validator("timestamp", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> datetime:
        return parse_timestamp(value)

    @property
    def deleted(self) -> bool:
        return self.type == "entity_deleted"

    @classmethod
    def from_entity(cls, entity: Entity) -> StateUpdate:
        return cls(
            type="state_update",
            entity_id=entity.id,
            properties=dict(entity.properties),
            timestamp=entity.last_updated,
            snapshot=True,
        )

    def to_wire_messages(self) -> list[dict[str, Any]]:
        """Flux WebSocket messages for this update: one per property, or one deletion."""
        stamp = format_timestamp(int(self.timestamp.timestamp() * 1000))
        if self.type == "entity_deleted":
            message: dict[str, Any] = {
                "type": "entity_deleted",
                "entity_id": self.entity_id,
                "timestamp": stamp,
            }
            if self.event_id:
                message["eventId"] = self.event_id
            return [message]
        names = list(self.properties)
        messages = []
        for index, name in enumerate(names):
            item: dict[str, Any] = {
                "type": "state_update",
                "entity_id": self.entity_id,
                "property": name,
                "value": self.properties[name],
                "timestamp": stamp,
            }
            if self.event_id:
                item["eventId"] = self.event_id
                item["last"] = index == len(names) - 1
            messages.append(item)
        return messages


class RuntimeConfig(BaseModel):
    """The server's runtime limits (Flux's `GET/PUT /api/admin/config`), changeable while it runs.

    Field names are Flux's. Rate limiting applies, as in Flux, only with auth on.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    rate_limit_enabled: bool = True
    rate_limit_per_namespace_per_minute: int = Field(default=10_000, ge=1)
    body_size_limit_single_bytes: int = Field(default=MAX_EVENT_BYTES, ge=1)
    body_size_limit_batch_bytes: int = Field(default=MAX_BATCH_BYTES, ge=1)


class RuntimeConfigUpdate(BaseModel):
    """A partial `PUT /api/admin/config` body: only the fields given change (unknown keys: 400)."""

    model_config = ConfigDict(extra="forbid")

    rate_limit_enabled: bool | None = None
    rate_limit_per_namespace_per_minute: int | None = Field(default=None, ge=1)
    body_size_limit_single_bytes: int | None = Field(default=None, ge=1)
    body_size_limit_batch_bytes: int | None = Field(default=None, ge=1)
