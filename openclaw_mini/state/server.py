"""Serve a world state over Flux's HTTP and WebSocket API (`openclaw-mini state serve`).

The routes, bodies and status codes are Flux's, so a Flux client (its skill script, curl
examples, our `RemoteWorldState`) works against this server unchanged. Two small additions a
Flux client ignores: each `subscribe` is acknowledged with `{"type": "subscribed"}`, and
`state_update` messages carry `eventId` and `last` so a client can regroup one event's
properties.

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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
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
    MAX_EVENT_BYTES,
    StateUpdate,
    matches_pattern,
    namespace_of,
    parse_timestamp,
    prepare_batch,
    prepare_event,
)

__all__ = ["HISTORY_MAX_LIMIT", "create_app", "serve", "serve_in_background"]

logger = logging.getLogger(__name__)

HISTORY_MAX_LIMIT = 500
"""`GET /api/events` returns at most this many events (Flux's cap)."""

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
        except Exception as exc:
            logger.exception("world-state request %s %s failed", request.method, request.url.path)
            return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    return run


async def _read_json(request: Request, limit: int, what: str) -> Any:
    """Read at most `limit` bytes (413 beyond, without reading the rest) and parse JSON (400)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _HTTPError(
            f"payload too large: {what} is {int(declared):,} bytes, at most {limit:,} allowed", 413
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _HTTPError(f"payload too large: {what} is over {limit:,} bytes", 413)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidEventError(f"{what} is empty; send a JSON object")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidEventError(f"{what} is not valid JSON: {exc}") from None


class _Api:
    """The handlers, bound to one store and one auth/rate-limit setup."""

    def __init__(self, store: WorldState, auth: AuthConfig | None, limiter: RateLimiter | None) -> None:
        self.store = store
        self.auth = auth
        self.limiter = limiter

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

    def _limit(self, entity_ids: Sequence[str]) -> None:
        if self.limiter is None:
            return
        counts: dict[str, int] = {}
        for entity_id in entity_ids:
            key = namespace_of(entity_id) or ""
            counts[key] = counts.get(key, 0) + 1
        for key, count in counts.items():
            wait = self.limiter.take(key, count)
            if wait is not None:
                label = f"namespace {key!r}" if key else "entities without a namespace"
                raise RateLimitedError(
                    f"rate limit exceeded for {label} ({self.limiter.per_minute:,} events per minute)",
                    retry_after=wait,
                )

    # -- events ---------------------------------------------------------------------------

    async def publish(self, request: Request) -> Response:
        token = self._require_token(request)
        raw = await _read_json(request, MAX_EVENT_BYTES, "the event")
        if not isinstance(raw, dict):
            raise InvalidEventError("the event must be a JSON object")
        item = prepare_event(raw)
        await self._authorize(token, [item.entity_id])
        self._limit([item.entity_id])
        result = await self.store.publish(item)
        return JSONResponse(result.to_wire())

    async def publish_batch(self, request: Request) -> Response:
        token = self._require_token(request)
        raw = await _read_json(request, MAX_BATCH_BYTES, "the batch")
        events = raw.get("events") if isinstance(raw, dict) else None
        if not isinstance(events, list):
            raise InvalidEventError('the batch must be a JSON object with an "events" array')
        if not events:
            raise InvalidEventError("the batch must contain at least one event")
        slots, prepared = prepare_batch(events)
        for index, item in enumerate(prepared):
            try:
                await self._authorize(token, [item.entity_id])
            except StateAuthError as exc:
                raise StateAuthError(
                    f"batch refused at valid event {index}: {exc}", status=exc.status
                ) from None
        self._limit([item.entity_id for item in prepared])
        published = iter(await self.store.publish_batch(prepared) if prepared else [])
        results = [slot if slot is not None else next(published) for slot in slots]
        failed = sum(1 for result in results if result.error is not None)
        return JSONResponse(
            {
                "successful": len(results) - failed,
                "failed": failed,
                "results": [result.to_wire() for result in results],
            }
        )

    async def history(self, request: Request) -> Response:
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
        entity = await self.store.get(request.path_params["entity_id"])
        if entity is None:
            raise _HTTPError("Entity not found", 404)
        return JSONResponse(entity.to_wire())

    async def delete_entity(self, request: Request) -> Response:
        token = self._require_token(request)
        entity_id = request.path_params["entity_id"]
        await self._authorize(token, [entity_id])
        self._limit([entity_id])
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
            self._limit(value)
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
            self._limit(ids)
            if not ids:
                return JSONResponse({"deleted": 0, "failed": 0, "errors": []})
            result = await self.store.delete_many(entity_ids=ids)
        return JSONResponse(result.model_dump())

    # -- namespaces -----------------------------------------------------------------------

    async def register_namespace(self, request: Request) -> Response:
        if self.auth is None:
            raise _HTTPError("namespaces are off: start the server with auth enabled", 404)
        if self.auth.admin_token:
            token = request.headers.get("authorization", "").partition(" ")[2].strip()
            if not token or not self._is_admin(token):
                raise StateAuthError("Admin token required", status=401)
        raw = await _read_json(request, 64 * 1024, "the namespace request")
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            raise InvalidEventError('send {"name": "<namespace>"}')
        record, token = await asyncio.to_thread(self.auth.registry.register, name)
        return JSONResponse({"namespaceId": record.namespace_id, "name": record.name, "token": token})

    async def get_namespace(self, request: Request) -> Response:
        if self.auth is None:
            raise _HTTPError("namespaces are off: start the server with auth enabled", 404)
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

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # -- websocket ------------------------------------------------------------------------

    async def websocket(self, websocket: WebSocket) -> None:
        await websocket.accept()
        patterns: set[str] = set()
        send_lock = asyncio.Lock()
        subscription: Subscription = self.store.subscribe("*")
        await subscription.start()

        async def send(message: dict[str, Any]) -> None:
            async with send_lock:
                await websocket.send_text(json.dumps(message, separators=(",", ":"), ensure_ascii=False))

        async def pump() -> None:
            try:
                async for update in subscription:
                    if not any(matches_pattern(pattern, update.entity_id) for pattern in patterns):
                        continue
                    for message in _messages(update):
                        await send(message)
            except StateError as exc:  # the subscriber fell behind: close so the client resyncs
                logger.warning("closing a slow world-state WebSocket: %s", exc)
                with contextlib.suppress(Exception):
                    await websocket.close(code=1013, reason="subscriber fell behind; reconnect")

        task = asyncio.create_task(pump())
        try:
            while True:
                text = await websocket.receive_text()
                try:
                    message = json.loads(text)
                except ValueError:
                    continue  # Flux ignores what it cannot parse
                if not isinstance(message, dict) or not isinstance(message.get("entity_id"), str):
                    continue
                if message.get("type") == "subscribe":
                    pattern = message["entity_id"]
                    if len(pattern) > MAX_PATTERN_CHARS or (
                        pattern not in patterns and len(patterns) >= MAX_PATTERNS_PER_CONNECTION
                    ):
                        # Every update is matched against every pattern: bound the work a client
                        # can ask for.
                        await send(
                            {
                                "type": "error",
                                "entity_id": pattern[:MAX_PATTERN_CHARS],
                                "error": f"at most {MAX_PATTERNS_PER_CONNECTION} subscriptions of "
                                f"at most {MAX_PATTERN_CHARS} characters per connection",
                            }
                        )
                        continue
                    patterns.add(pattern)
                    await send({"type": "subscribed", "entity_id": pattern})
                elif message.get("type") == "unsubscribe":
                    patterns.discard(message["entity_id"])
                    await send({"type": "unsubscribed", "entity_id": message["entity_id"]})
        except WebSocketDisconnect:
            pass
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await subscription.aclose()


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


def create_app(
    store: WorldState,
    *,
    auth: AuthConfig | None = None,
    rate_limit: RateLimiter | int | None = None,
) -> Starlette:
    """A Starlette app serving `store` over Flux's API.

    `auth=None` leaves writes open (Flux's internal mode); an `AuthConfig` turns namespaces
    and tokens on. `rate_limit` is events per minute per namespace (or a `RateLimiter`).
    The app does not own the store: close it yourself after the server stops.
    """
    limiter = RateLimiter(rate_limit) if isinstance(rate_limit, int) else rate_limit
    api = _Api(store, auth, limiter)
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
        WebSocketRoute("/api/ws", api.websocket),
    ]
    app = Starlette(routes=routes)
    app.state.world_state = store
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
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM). Binds loopback unless `host` says otherwise."""
    import uvicorn

    if host not in _LOOPBACK and auth is None:
        logger.warning("serving world state on %s with auth off: anyone who can reach it can write", host)
    app = create_app(store, auth=auth, rate_limit=rate_limit)
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
) -> AsyncIterator[str]:
    """Run the server on this event loop while the block runs; yields its base URL.

    `port=0` picks a free port. Used by tests, the benchmark and the multi-agent example.
    """
    import uvicorn

    app = create_app(store, auth=auth, rate_limit=rate_limit)
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
