"""Serve a world state over Flux's HTTP and WebSocket API (`openclaw-mini state serve`).

The routes, bodies and status codes are Flux's, so a Flux client (its `flux.sh`, its
`subscribe_websocket.py` example, curl examples, our `RemoteWorldState`) works against this
server unchanged: events, entities, history, namespaces (register, look up, delete), connectors
(an empty list: this server runs none), `GET/PUT /api/admin/config` (the four runtime limits),
and `/api/ws`. Over the WebSocket, as in Flux, a connection that subscribed to nothing receives
every `state_update`, every client receives `entity_deleted`, and a `metrics_update` arrives
every `metrics_interval` seconds. Small additions a Flux client ignores: each `subscribe` is
acknowledged with `{"type": "subscribed"}`, `state_update` messages carry `eventId` and `last` so
a client can regroup one event's properties, and subscriptions may end in `*` (a prefix).

Hardening beyond Flux: JSON nested too deeply is a 400, binary WebSocket frames are ignored, and
a subscriber that stops reading is closed once `max_ws_buffer_bytes` are waiting for it.

Needs the optional `server` extra (starlette + uvicorn).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hmac
import json
import logging
import math
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .auth import AuthConfig, RateLimiter
from .base import Subscription, WorldState
from .errors import (
    BatchTooLargeError,
    InvalidEventError,
    RateLimitedError,
    StateAuthError,
    StateError,
)
from .models import (
    MAX_BATCH_BYTES,
    MAX_DELETE_IDS,
    PreparedEvent,
    PublishResult,
    RuntimeConfig,
    RuntimeConfigUpdate,
    StateUpdate,
    format_timestamp,
    matches_pattern,
    namespace_of,
    now_ms,
    parse_timestamp,
    prepare_batch,
    prepare_event,
)

__all__ = [
    "HISTORY_MAX_LIMIT",
    "MAX_WS_BUFFER_BYTES",
    "METRICS_INTERVAL_SECONDS",
    "create_app",
    "serve",
    "serve_in_background",
]

logger = logging.getLogger(__name__)

HISTORY_MAX_LIMIT = 500
"""`GET /api/events` returns at most this many events (Flux's cap)."""
METRICS_INTERVAL_SECONDS = 2.0
"""How often WebSocket clients get a `metrics_update` (Flux's `broadcast_interval_seconds`)."""
PUBLISHER_WINDOW_SECONDS = 10.0
"""A source that published within this window counts as an active publisher (Flux's default)."""
MAX_WS_BUFFER_BYTES = 8 * 1024 * 1024
"""Bytes that may wait for one WebSocket subscriber; past this it is closed (1013) and logged."""
PAYLOAD_TOO_LARGE = "payload too large"
RATE_LIMITED = "rate limit exceeded"
"""Flux's exact 413 and 429 error texts (clients match on them)."""

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}

Handler = Callable[[Request], Awaitable[Response]]


class _HTTPError(StateError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _error_response(exc: StateError) -> JSONResponse:
    headers = {}
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)


def _guarded(handler: Handler) -> Handler:
    """Every failure becomes Flux's `{"error": "..."}` body with the right status."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except StateError as exc:
            return _error_response(exc)
        except RecursionError:
            return JSONResponse({"error": "the JSON is nested too deeply"}, status_code=400)
        except Exception:
            logger.exception("world-state request %s %s failed", request.method, request.url.path)
            return JSONResponse({"error": "internal error (see the server log)"}, status_code=500)

    return run


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, at most `limit` bytes (413 with Flux's text beyond, without reading the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _HTTPError(PAYLOAD_TOO_LARGE, 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _HTTPError(PAYLOAD_TOO_LARGE, 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(raw: bytes, what: str) -> Any:
    if not raw.strip():
        raise InvalidEventError(f"{what} is empty; send a JSON object")
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidEventError(f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise InvalidEventError(f"{what} is not valid JSON: {exc}") from None


async def _read_json(request: Request, limit: int, what: str) -> Any:
    return _parse_json(await _read_body(request, limit), what)


class _Outbox:
    """What waits to be sent to one WebSocket client, bounded in bytes (a reader that stops
    reading would otherwise make the server buffer without limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queue: deque[str] = deque()
        self.size = 0
        self.ready = asyncio.Event()
        self.overflowed = asyncio.Event()

    def put(self, message: dict[str, Any]) -> None:
        if self.overflowed.is_set():
            return
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        self.size += len(text) if text.isascii() else len(text.encode("utf-8"))
        if self.size > self.limit:
            self.overflowed.set()
            self.queue.clear()
            return
        self.queue.append(text)
        self.ready.set()

    async def get(self) -> str:
        while not self.queue:
            self.ready.clear()
            await self.ready.wait()
        text = self.queue.popleft()
        self.size -= len(text) if text.isascii() else len(text.encode("utf-8"))
        return text


class _Metrics:
    """Counters behind `metrics_update` (reset on restart, as in Flux) and its broadcaster."""

    def __init__(self, store: WorldState, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.total_events = 0
        self.recent: deque[tuple[float, int]] = deque()
        self.sources: dict[str, float] = {}
        self.outboxes: set[_Outbox] = set()
        self.task: asyncio.Task[None] | None = None

    def record(self, sources: Iterable[str]) -> None:
        now = time.monotonic()
        count = 0
        for source in sources:
            self.sources[source] = now
            count += 1
        self.total_events += count
        self.recent.append((now, count))

    def attach(self, outbox: _Outbox) -> None:
        self.outboxes.add(outbox)
        if self.interval > 0 and (self.task is None or self.task.done()):
            self.task = asyncio.create_task(self._broadcast())

    def detach(self, outbox: _Outbox) -> None:
        self.outboxes.discard(outbox)
        if not self.outboxes and self.task is not None:
            self.task.cancel()
            self.task = None

    async def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        while self.recent and now - self.recent[0][0] > PUBLISHER_WINDOW_SECONDS:
            self.recent.popleft()
        for source in [name for name, seen in self.sources.items() if now - seen > PUBLISHER_WINDOW_SECONDS]:
            del self.sources[source]
        counter = getattr(self.store, "entity_count", None)
        entities = await counter() if callable(counter) else len(await self.store.list())
        rate = sum(count for _, count in self.recent) / PUBLISHER_WINDOW_SECONDS
        return {
            "type": "metrics_update",
            "timestamp": format_timestamp(now_ms()),
            "entities": {"total": entities},
            "events": {"total": self.total_events, "rate_per_second": round(rate, 3)},
            "websocket": {"connections": len(self.outboxes)},
            "publishers": {"active": len(self.sources)},
        }

    async def _broadcast(self) -> None:
        while self.outboxes:
            await asyncio.sleep(self.interval)
            try:
                message = await self.snapshot()
            except Exception:  # a store hiccup skips one tick, never ends the broadcaster
                logger.warning("world-state metrics tick failed", exc_info=True)
                continue
            for outbox in list(self.outboxes):
                outbox.put(message)


class _Api:
    """The handlers, bound to one store and one auth/rate-limit setup."""

    def __init__(
        self,
        store: WorldState,
        auth: AuthConfig | None,
        limiter: RateLimiter | None,
        runtime: RuntimeConfig,
        *,
        metrics_interval: float,
        max_ws_buffer_bytes: int,
    ) -> None:
        self.store = store
        self.auth = auth
        self.runtime = runtime
        self.limiter = limiter or RateLimiter(runtime.rate_limit_per_namespace_per_minute)
        self.metrics = _Metrics(store, metrics_interval)
        self.max_ws_buffer_bytes = max_ws_buffer_bytes

    # -- auth -----------------------------------------------------------------------------

    def _token(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise StateAuthError("missing bearer token: send 'Authorization: Bearer <token>'", status=401)
        return token.strip()

    def _is_admin(self, token: str) -> bool:
        admin = self.auth.admin_token if self.auth else None
        return bool(admin) and hmac.compare_digest(token.encode(), str(admin).encode())

    def _require_token(self, request: Request) -> str | None:
        """401 before anything else when auth is on and no token came."""
        return self._token(request) if self.auth is not None else None

    def _require_admin(self, request: Request, message: str = "Admin token required") -> None:
        """Flux's admin rule: when an admin token is configured, `Bearer <admin token>` or 401."""
        admin = self.auth.admin_token if self.auth else None
        if not admin:
            return
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        if not token or not self._is_admin(token):
            raise StateAuthError(message, status=401)

    async def _check_reader(self, token: str | None) -> None:
        """With `private_reads`, a read needs a known namespace token or the admin token."""
        if self.auth is None or not self.auth.private_reads:
            return
        if not token:
            raise StateAuthError(
                "reads need a token on this server: send 'Authorization: Bearer <token>'", status=401
            )
        if self._is_admin(token):
            return
        if await asyncio.to_thread(self.auth.registry.owner_of, token) is None:
            raise StateAuthError("unknown token", status=401)

    async def _read_access(self, request: Request) -> None:
        if self.auth is None or not self.auth.private_reads:
            return
        await self._check_reader(self._token(request))

    async def _authorize(self, token: str | None, entity_ids: Iterable[str]) -> None:
        if self.auth is None or token is None or self._is_admin(token):
            return
        owner = await asyncio.to_thread(self.auth.registry.owner_of, token)
        for entity_id in entity_ids:
            namespace = namespace_of(entity_id)
            if namespace is None:
                raise StateAuthError(
                    f"entity {entity_id!r} has no namespace; with auth on, ids are '<namespace>/<name>'",
                    status=403,
                )
            if owner != namespace:
                raise StateAuthError(
                    f"this token does not own namespace {namespace!r} (entity {entity_id!r})"
                )

    async def _authorize_event(self, token: str | None, item: PreparedEvent) -> None:
        """A namespace token writes only events that name an entity in its namespace."""
        if self.auth is None or token is None or self._is_admin(token):
            return
        if not item.entity_id:
            raise StateAuthError(
                "the event's payload has no 'entity_id'; with auth on, writes name one", status=403
            )
        await self._authorize(token, [item.entity_id])

    def _rate_limited(self, key: str) -> float | None:
        """Seconds to wait when `key` is over its rate, else None. As in Flux: only with auth on."""
        if self.auth is None or not self.runtime.rate_limit_enabled:
            return None
        if self.limiter.per_minute != self.runtime.rate_limit_per_namespace_per_minute:
            self.limiter.configure(self.runtime.rate_limit_per_namespace_per_minute)
        return self.limiter.take(key)

    @staticmethod
    def _rate_key(event: PreparedEvent) -> str:
        """Flux's bucket: the namespace of the entity id, else the event's stream."""
        return namespace_of(event.entity_id) or event.stream

    def _limit_ids(self, entity_ids: Iterable[str]) -> None:
        for entity_id in entity_ids:
            wait = self._rate_limited(namespace_of(entity_id) or "")
            if wait is not None:
                raise RateLimitedError(RATE_LIMITED, retry_after=wait)

    # -- events ---------------------------------------------------------------------------

    async def publish(self, request: Request) -> Response:
        token = self._require_token(request)
        # Flux measures the raw request body: an event of exactly 1 MiB as sent is accepted.
        raw = _parse_json(await _read_body(request, self.runtime.body_size_limit_single_bytes), "the event")
        if not isinstance(raw, dict):
            raise InvalidEventError("the event must be a JSON object")
        item = prepare_event(raw, max_bytes=None)
        await self._authorize_event(token, item)
        wait = self._rate_limited(self._rate_key(item))
        if wait is not None:
            raise RateLimitedError(RATE_LIMITED, retry_after=wait)
        result = await self.store.publish(item)
        self.metrics.record([str(raw.get("source", ""))])
        return JSONResponse(result.to_wire())

    async def publish_batch(self, request: Request) -> Response:
        token = self._require_token(request)
        raw = _parse_json(await _read_body(request, self.runtime.body_size_limit_batch_bytes), "the batch")
        events = raw.get("events") if isinstance(raw, dict) else None
        if not isinstance(events, list):
            raise InvalidEventError('the batch must be a JSON object with an "events" array')
        if not events:
            raise InvalidEventError("the batch must contain at least one event")
        slots, prepared = prepare_batch(events, max_event_bytes=None, max_total_bytes=None)
        for index, item in enumerate(prepared):
            try:
                await self._authorize_event(token, item)
            except StateAuthError as exc:
                raise StateAuthError(
                    f"batch refused at valid event {index}: {exc}", status=exc.status
                ) from None
        # As in Flux, the rate limit fails single events of a batch, not the whole batch.
        allowed: list[PreparedEvent] = []
        limited: dict[int, PublishResult] = {}
        for index, item in enumerate(prepared):
            if self._rate_limited(self._rate_key(item)) is not None:
                limited[index] = PublishResult(event_id=item.event_id, stream=item.stream, error=RATE_LIMITED)
            else:
                allowed.append(item)
        published = iter(await self.store.publish_batch(allowed) if allowed else [])
        good = iter(range(len(prepared)))
        results: list[PublishResult] = []
        for slot in slots:
            if slot is not None:
                results.append(slot)
                continue
            index = next(good)
            results.append(limited[index] if index in limited else next(published))
        self.metrics.record(
            str(event.get("source", "")) if isinstance(event, dict) else ""
            for event, slot in zip(events, slots, strict=True)
            if slot is None
        )
        failed = sum(1 for result in results if result.error is not None)
        return JSONResponse(
            {
                "successful": len(results) - failed,
                "failed": failed,
                "results": [result.to_wire() for result in results],
            }
        )

    async def history(self, request: Request) -> Response:
        await self._read_access(request)
        entity_id = request.query_params.get("entity")
        if not entity_id:
            raise InvalidEventError("entity parameter is required")
        since: datetime | None = None
        if "since" in request.query_params:
            try:
                since = parse_timestamp(request.query_params["since"])
            except ValueError:
                raise InvalidEventError("invalid `since` timestamp (expected ISO 8601)") from None
        else:
            since = datetime.now(UTC) - timedelta(hours=24)
        limit = _int_param(request, "limit", 100)
        events = await self.store.history(entity_id, since=since, limit=min(limit, HISTORY_MAX_LIMIT))
        return JSONResponse([event.to_wire() for event in events])

    # -- entities -------------------------------------------------------------------------

    async def list_entities(self, request: Request) -> Response:
        await self._read_access(request)
        params = request.query_params
        entities = await self.store.list(
            prefix=params.get("prefix") or None, namespace=params.get("namespace") or None
        )
        after = params.get("after")
        if after:
            entities = [entity for entity in entities if entity.id > after]
        if "limit" in params:
            entities = entities[: _int_param(request, "limit", 0)]
        wanted = [name.strip() for name in params.get("properties", "").split(",") if name.strip()]
        body = []
        for entity in entities:
            wire = entity.to_wire()
            if wanted:
                wire["properties"] = {
                    key: value for key, value in wire["properties"].items() if key in wanted
                }
            body.append(wire)
        return JSONResponse(body)

    async def get_entity(self, request: Request) -> Response:
        await self._read_access(request)
        entity = await self.store.get(request.path_params["entity_id"])
        if entity is None:
            raise _HTTPError("Entity not found", 404)
        return JSONResponse(entity.to_wire())

    async def delete_entity(self, request: Request) -> Response:
        token = self._require_token(request)
        entity_id = request.path_params["entity_id"]
        await self._authorize(token, [entity_id])
        self._limit_ids([entity_id])
        result = await self.store.delete(entity_id)
        return JSONResponse(result.to_wire())

    async def delete_many(self, request: Request) -> Response:
        token = self._require_token(request)
        raw = await _read_json(request, MAX_BATCH_BYTES, "the delete request")
        if not isinstance(raw, dict):
            raise InvalidEventError("the delete request must be a JSON object")
        chosen = [key for key in ("namespace", "prefix", "entity_ids") if raw.get(key) is not None]
        if len(chosen) != 1:
            raise InvalidEventError('send exactly one of "namespace", "prefix" or "entity_ids"')
        key = chosen[0]
        value = raw[key]
        if key == "entity_ids":
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise InvalidEventError('"entity_ids" must be an array of strings')
            if len(value) > MAX_DELETE_IDS:
                raise BatchTooLargeError(
                    f"Batch too large: {len(value):,} entities requested, max is {MAX_DELETE_IDS:,}",
                    status=400,
                )
            await self._authorize(token, value)
            result = await self.store.delete_many(entity_ids=value)
        elif not isinstance(value, str) or not value:
            raise InvalidEventError(f'"{key}" must be a non-empty string')
        elif self.auth is None:
            result = await self.store.delete_many(**{key: value})
        else:
            # Authorize every entity the filter reaches, then delete exactly those.
            matches = await self.store.list(**{key: value})
            ids = [entity.id for entity in matches]
            if len(ids) > MAX_DELETE_IDS:
                raise BatchTooLargeError(
                    f"Batch too large: {len(ids):,} entities requested, max is {MAX_DELETE_IDS:,}", status=400
                )
            await self._authorize(token, [f"{value}/"] if key == "namespace" else [])
            await self._authorize(token, ids)
            if not ids:
                return JSONResponse({"deleted": 0, "failed": 0, "errors": []})
            result = await self.store.delete_many(entity_ids=ids)
        return JSONResponse(result.model_dump())

    # -- namespaces -----------------------------------------------------------------------

    async def register_namespace(self, request: Request) -> Response:
        if self.auth is None:
            raise _HTTPError("Namespace registration not available (auth disabled)", 404)
        self._require_admin(request)
        raw = await _read_json(request, 64 * 1024, "the namespace request")
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            raise InvalidEventError('send {"name": "<namespace>"}')
        record, token = await asyncio.to_thread(self.auth.registry.register, name)
        return JSONResponse({"namespaceId": record.namespace_id, "name": record.name, "token": token})

    async def get_namespace(self, request: Request) -> Response:
        if self.auth is None:
            raise _HTTPError("Namespace registration not available (auth disabled)", 404)
        await self._read_access(request)
        name = request.path_params["name"]
        record = await asyncio.to_thread(self.auth.registry.get, name)
        if record is None:
            raise _HTTPError("Namespace not found", 404)
        count = len(await self.store.list(namespace=name))
        created = datetime.fromtimestamp(record.created_at / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return JSONResponse(
            {
                "namespaceId": record.namespace_id,
                "name": record.name,
                "createdAt": created,
                "entityCount": count,
            }
        )

    async def delete_namespace(self, request: Request) -> Response:
        """Flux: 204 when removed, 401 without the admin token (when one is set), 404 when unknown."""
        self._require_admin(request)
        name = request.path_params["name"]
        if self.auth is None or not await asyncio.to_thread(self.auth.registry.delete, name):
            raise _HTTPError("Namespace not found", 404)
        return Response(status_code=204)

    # -- admin config and connectors ------------------------------------------------------

    async def get_config(self, request: Request) -> Response:
        return JSONResponse(self.runtime.model_dump())

    async def put_config(self, request: Request) -> Response:
        """A partial update; the answer is the whole config. Admin token required when set."""
        self._require_admin(request, "Unauthorized")
        raw = await _read_json(request, 64 * 1024, "the config update")
        try:
            update = RuntimeConfigUpdate.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise InvalidEventError(f"config update field '{where}': {first['msg']}") from None
        for key, value in update.model_dump(exclude_none=True).items():
            setattr(self.runtime, key, value)
        if update.rate_limit_per_namespace_per_minute is not None:
            self.limiter.configure(update.rate_limit_per_namespace_per_minute)
        logger.info("world-state runtime config changed: %s", update.model_dump(exclude_none=True))
        return JSONResponse(self.runtime.model_dump())

    async def list_connectors(self, request: Request) -> Response:
        """Flux's shape, `{"connectors": [...]}`: this server runs no connectors."""
        if self.auth is not None:
            self._token(request)
        return JSONResponse({"connectors": []})

    async def get_connector(self, request: Request) -> Response:
        raise _HTTPError(f"Connector '{request.path_params['name']}' not found", 404)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # -- websocket ------------------------------------------------------------------------

    async def websocket(self, websocket: WebSocket) -> None:
        if self.auth is not None and self.auth.private_reads:
            header = websocket.headers.get("authorization", "")
            token = header.partition(" ")[2].strip() or websocket.query_params.get("token")
            try:
                await self._check_reader(token)
            except StateAuthError:
                await websocket.close(code=1008, reason="a token is required to read")
                return
        await websocket.accept()
        patterns: set[str] = set()
        outbox = _Outbox(self.max_ws_buffer_bytes)
        subscription: Subscription = self.store.subscribe("*")
        await subscription.start()
        self.metrics.attach(outbox)

        async def pump() -> None:
            try:
                async for update in subscription:
                    # As in Flux: no subscription means everything; deletions go to every client.
                    if update.type == "state_update" and patterns:
                        if not any(matches_pattern(pattern, update.entity_id) for pattern in patterns):
                            continue
                    for message in _messages(update):
                        outbox.put(message)
            except StateError as exc:  # the store's queue overflowed: close so the client resyncs
                logger.warning("closing a slow world-state WebSocket: %s", exc)
                outbox.overflowed.set()

        async def write() -> None:
            while True:
                await websocket.send_text(await outbox.get())

        async def read() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    continue  # binary frames mean nothing here (Flux ignores them too)
                await self._client_message(text, patterns, outbox)

        tasks = [asyncio.create_task(job()) for job in (pump, write, read)]
        overflow = asyncio.create_task(outbox.overflowed.wait())
        try:
            done, _ = await asyncio.wait([*tasks, overflow], return_when=asyncio.FIRST_COMPLETED)
            if overflow in done:
                logger.warning(
                    "closing a world-state WebSocket subscriber that stopped reading: over %s bytes waiting",
                    f"{self.max_ws_buffer_bytes:,}",
                )
                with contextlib.suppress(Exception):
                    # The client is not reading: the close frame may never drain; do not wait forever.
                    await asyncio.wait_for(websocket.close(code=1013, reason="subscriber fell behind"), 2.0)
        finally:
            for task in (*tasks, overflow):
                task.cancel()
            for task in (*tasks, overflow):
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                    await task
            self.metrics.detach(outbox)
            await subscription.aclose()

    async def _client_message(self, text: str, patterns: set[str], outbox: _Outbox) -> None:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            return  # Flux ignores what it cannot parse
        if not isinstance(message, dict):
            return
        # Flux reads `entity_id`; its own example client sends `entityId`: accept both.
        pattern = message.get("entity_id", message.get("entityId"))
        if not isinstance(pattern, str):
            return
        if message.get("type") == "subscribe":
            if len(pattern) > MAX_PATTERN_CHARS or (
                pattern not in patterns and len(patterns) >= MAX_PATTERNS_PER_CONNECTION
            ):
                # Every update is matched against every pattern: bound the work a client can ask for.
                outbox.put(
                    {
                        "type": "error",
                        "entity_id": pattern[:MAX_PATTERN_CHARS],
                        "error": f"at most {MAX_PATTERNS_PER_CONNECTION} subscriptions of "
                        f"at most {MAX_PATTERN_CHARS} characters per connection",
                    }
                )
                return
            patterns.add(pattern)
            outbox.put({"type": "subscribed", "entity_id": pattern})
        elif message.get("type") == "unsubscribe":
            patterns.discard(pattern)
            outbox.put({"type": "unsubscribed", "entity_id": pattern})


MAX_PATTERNS_PER_CONNECTION = 1_000
MAX_PATTERN_CHARS = 1_024


def _messages(update: StateUpdate) -> builtins.list[dict[str, Any]]:
    return update.to_wire_messages()


def _int_param(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidEventError(f"{name} must be a whole number, got {text!r}") from None
    if value < 1:
        raise InvalidEventError(f"{name} must be at least 1, got {value}")
    return value


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    if status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    elif status == 404:
        message = f"no such route: {request.method} {request.url.path}"
    else:
        message = exc.detail if isinstance(exc, HTTPException) else "error"
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    store: WorldState,
    *,
    auth: AuthConfig | None = None,
    rate_limit: RateLimiter | int | None = None,
    runtime: RuntimeConfig | None = None,
    metrics_interval: float = METRICS_INTERVAL_SECONDS,
    max_ws_buffer_bytes: int = MAX_WS_BUFFER_BYTES,
) -> Starlette:
    """A Starlette app serving `store` over Flux's API.

    `auth=None` leaves writes open (Flux's internal mode); an `AuthConfig` turns namespaces
    and tokens on. As in Flux, rate limiting applies only with auth on: `rate_limit` events per
    minute per namespace (default 10,000; or a `RateLimiter`). `runtime` holds the limits that
    `PUT /api/admin/config` changes. The app does not own the store: close it yourself.
    """
    runtime = runtime or RuntimeConfig()
    limiter = RateLimiter(rate_limit) if isinstance(rate_limit, int) else rate_limit
    if limiter is not None:
        runtime.rate_limit_per_namespace_per_minute = limiter.per_minute
        if auth is None:
            logger.warning("a rate limit applies only with auth on (as in Flux); this server has auth off")
    api = _Api(
        store,
        auth,
        limiter,
        runtime,
        metrics_interval=metrics_interval,
        max_ws_buffer_bytes=max_ws_buffer_bytes,
    )
    routes = [
        Route("/api/health", _guarded(api.health), methods=["GET"]),
        Route("/api/events", _guarded(api.publish), methods=["POST"]),
        Route("/api/events", _guarded(api.history), methods=["GET"]),
        Route("/api/events/batch", _guarded(api.publish_batch), methods=["POST"]),
        Route("/api/state/entities", _guarded(api.list_entities), methods=["GET"]),
        Route("/api/state/entities/delete", _guarded(api.delete_many), methods=["POST"]),
        Route("/api/state/entities/{entity_id:path}", _guarded(api.get_entity), methods=["GET"]),
        Route("/api/state/entities/{entity_id:path}", _guarded(api.delete_entity), methods=["DELETE"]),
        Route("/api/namespaces", _guarded(api.register_namespace), methods=["POST"]),
        Route("/api/namespaces/{name}", _guarded(api.get_namespace), methods=["GET"]),
        Route("/api/namespaces/{name}", _guarded(api.delete_namespace), methods=["DELETE"]),
        Route("/api/admin/config", _guarded(api.get_config), methods=["GET"]),
        Route("/api/admin/config", _guarded(api.put_config), methods=["PUT"]),
        Route("/api/connectors", _guarded(api.list_connectors), methods=["GET"]),
        Route("/api/connectors/{name}", _guarded(api.get_connector), methods=["GET"]),
        WebSocketRoute("/api/ws", api.websocket),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})
    app.state.world_state = store
    app.state.runtime_config = runtime
    return app


def _uvicorn_config(app: Starlette, host: str, port: int, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_level=log_level,
        ws="websockets-sansio",
        timeout_graceful_shutdown=3,
        access_log=False,
    )


async def serve(
    store: WorldState,
    *,
    host: str = "127.0.0.1",
    port: int = 3000,
    auth: AuthConfig | None = None,
    rate_limit: RateLimiter | int | None = None,
    log_level: str = "warning",
    **app_options: Any,
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM). Binds loopback unless `host` says otherwise.

    `app_options` go to `create_app` (`runtime`, `metrics_interval`, `max_ws_buffer_bytes`).
    """
    import uvicorn

    if host not in _LOOPBACK and auth is None:
        logger.warning("serving world state on %s with auth off: anyone who can reach it can write", host)
    app = create_app(store, auth=auth, rate_limit=rate_limit, **app_options)
    server = uvicorn.Server(_uvicorn_config(app, host, port, log_level))
    await server.serve()


@contextlib.asynccontextmanager
async def serve_in_background(
    store: WorldState,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    auth: AuthConfig | None = None,
    rate_limit: RateLimiter | int | None = None,
    log_level: str = "warning",
    **app_options: Any,
) -> AsyncIterator[str]:
    """Run the server on this event loop while the block runs; yields its base URL.

    `port=0` picks a free port. Used by tests, the benchmark and the multi-agent example.
    `app_options` go to `create_app` (`runtime`, `metrics_interval`, `max_ws_buffer_bytes`).
    """
    import uvicorn

    app = create_app(store, auth=auth, rate_limit=rate_limit, **app_options)
    config = _uvicorn_config(app, host, port, log_level)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)  # what `Server.serve` sets up before startup
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose protocol
    # says TCP, and without it every response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    try:
        await server.startup(sockets=[sock])
    except BaseException:
        sock.close()
        raise
    loop_task = asyncio.create_task(server.main_loop())
    shown_host = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown_host}:{bound_port}"
    finally:
        server.should_exit = True
        await loop_task
        await server.shutdown(sockets=[sock])
