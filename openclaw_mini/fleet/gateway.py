"""The fleet's HTTP gateway (`openclaw-mini fleet serve`): a way in for clients that are not Python.

Routes (all JSON, errors as `{"error": "..."}` with the right status; the OpenAPI document is served
at `/openapi.json`):
- `POST /v1/messages` enqueue (`Idempotency-Key` header: the same key returns the first message);
- `GET /v1/messages/{id}` status and reply; `GET /v1/messages/{id}/events` the turn's events as
  Server-Sent Events (`text_delta`, `tool_start`, `tool_end`, `error`, then `done`), resumable with
  `Last-Event-ID`;
- `GET /v1/status`, `GET /v1/backlog`, dead letters: `GET /v1/dead-letters`,
  `POST /v1/dead-letters/{id}/retry`, `DELETE /v1/dead-letters/{id}` (admin tokens only).
Bearer tokens are stored hashed (`GatewayTokens`); an agent token may only touch its agent's
messages (others answer 404, so ids of other agents are not confirmed). Needs the `server` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import FleetError, FleetUnavailable, InvalidMessage, MessageNotFound, UnknownAgent
from ..state.auth import hash_token
from .models import (
    AGENT_NAME_PATTERN,
    CONVERSATION_PATTERN,
    MAX_TEXT_BYTES,
    Backlog,
    FleetStatus,
    Message,
    MessageResult,
    TurnEvent,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from .handle import Fleet

__all__ = [
    "DEFAULT_TOKENS_PATH",
    "EnqueueRequest",
    "EnqueueResponse",
    "GatewayError",
    "GatewayToken",
    "GatewayTokens",
    "StatusResponse",
    "create_gateway",
    "openapi_document",
    "serve_gateway",
    "serve_gateway_in_background",
]

log = logging.getLogger(__name__)

DEFAULT_TOKENS_PATH = Path(".openclaw-mini/gateway-tokens.json")
MAX_BODY_BYTES = MAX_TEXT_BYTES * 2 + 4096
"""A JSON body may escape every character of the largest text; anything past this is a 413."""
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class GatewayError(FleetError):
    """A request the gateway refuses; `status` is the HTTP code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# -- tokens ------------------------------------------------------------------------------------
class GatewayToken(BaseModel):
    """One bearer token: `admin` may do everything, `agent` only enqueue and read its agent's messages."""

    name: str
    scope: Literal["admin", "agent"]
    agent: str | None = None
    token_sha256: str
    created_at: float


class _TokenFile(BaseModel):
    v: Literal[1] = 1
    tokens: list[GatewayToken] = Field(default_factory=list)


RECHECK_SECONDS = 1.0
"""How often a running gateway looks whether its token file changed."""


class GatewayTokens:
    """The gateway's tokens in a JSON file; only SHA-256 hashes are stored, so the file leaks no access.

    Re-read when it changes on disk, so `fleet token create` works on a running gateway."""

    def __init__(self, path: str | Path = DEFAULT_TOKENS_PATH) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._records: list[GatewayToken] = []
        self._mtime: float | None = None
        self._checked = 0.0
        self._load()

    def _load(self) -> None:
        now = time.monotonic()
        if self._records and now - self._checked < RECHECK_SECONDS:
            return  # a token file read this second is current enough
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._records, self._mtime = [], None
            return
        if mtime == self._mtime:
            return
        try:
            data = _TokenFile.model_validate_json(self.path.read_bytes())
        except (ValidationError, ValueError) as exc:
            raise FleetError(f"{self.path} is not a valid gateway token file: {exc}") from None
        self._records, self._mtime = data.tokens, mtime

    def create(self, *, scope: Literal["admin", "agent"], agent: str | None = None, name: str = "") -> str:
        """Add a token and return it: the only time it is seen."""
        if scope == "agent" and (agent is None or not AGENT_NAME_PATTERN.fullmatch(agent)):
            raise InvalidMessage(f"an agent token needs a valid agent name, got {agent!r}")
        if scope == "admin" and agent is not None:
            raise InvalidMessage("an admin token is not tied to an agent: drop the agent")
        token = "ocmg_" + secrets.token_urlsafe(32)
        record = GatewayToken(
            name=name or (f"agent:{agent}" if agent else "admin"),
            scope=scope,
            agent=agent,
            token_sha256=hash_token(token),
            created_at=time.time(),
        )
        with self._lock:
            self._load()
            self._records.append(record)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(_TokenFile(tokens=self._records).model_dump_json(indent=2) + "\n")
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
            self._mtime = self.path.stat().st_mtime
        return token

    def lookup(self, token: str) -> GatewayToken | None:
        """The token's record (compared in constant time), or None."""
        digest = hash_token(token)
        with self._lock:
            self._load()
            found = None
            for record in self._records:
                if hmac.compare_digest(record.token_sha256, digest):
                    found = record
            return found

    def __len__(self) -> int:
        with self._lock:
            self._load()
            return len(self._records)


# -- wire models -------------------------------------------------------------------------------
class EnqueueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The rules go into the schema only: `validate_message` enforces them with clearer messages.
    agent: str = Field(json_schema_extra={"pattern": f"^{AGENT_NAME_PATTERN.pattern}$"})
    conversation: str = Field(json_schema_extra={"pattern": f"^{CONVERSATION_PATTERN.pattern}$"})
    text: str = Field(
        description=f"Not blank; at most {MAX_TEXT_BYTES} UTF-8 bytes",
        json_schema_extra={"pattern": r"[^\s\x1c-\x1f]", "maxLength": MAX_TEXT_BYTES},
    )
    priority: int = Field(default=50, ge=0, le=100)


class EnqueueResponse(BaseModel):
    message: Message
    created: bool
    """False when the `Idempotency-Key` named an earlier message: no second turn."""


class StatusResponse(BaseModel):
    fleet: FleetStatus
    backlog: Backlog


class _ErrorBody(BaseModel):
    error: str


# -- the app -----------------------------------------------------------------------------------
Handler = Callable[["Request"], Awaitable["Response"]]


def _status_of(exc: FleetError) -> int:
    if isinstance(exc, GatewayError):
        return exc.status
    if isinstance(exc, (MessageNotFound, UnknownAgent)):
        return 404
    if isinstance(exc, InvalidMessage):
        return 400
    if isinstance(exc, FleetUnavailable):
        return 503
    return 500


class _Api:
    def __init__(self, fleet: Fleet, tokens: GatewayTokens, stream_timeout: float) -> None:
        self.fleet = fleet
        self.tokens = tokens
        self.stream_timeout = stream_timeout

    # -- auth ----------------------------------------------------------------------------------
    def _caller(self, request: Request) -> GatewayToken:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GatewayError("missing bearer token: send Authorization: Bearer <token>", 401)
        record = self.tokens.lookup(token.strip())
        if record is None:
            raise GatewayError("unknown bearer token", 401)
        return record

    def _admin(self, request: Request) -> None:
        if self._caller(request).scope != "admin":
            raise GatewayError("this route needs an admin token", 403)

    async def _readable(self, request: Request, message_id: str) -> MessageResult:
        caller = self._caller(request)
        found = await self.fleet.message(message_id)
        if caller.scope != "admin" and found.agent != caller.agent:
            raise MessageNotFound(f"no message with id {message_id!r}")
        return found

    # -- routes --------------------------------------------------------------------------------
    async def enqueue(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        caller = self._caller(request)
        raw = await _read_body(request)
        try:
            body = EnqueueRequest.model_validate_json(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            raise GatewayError(f"invalid message body: {problems}", 400) from None
        if caller.scope != "admin" and body.agent != caller.agent:
            raise GatewayError(f"this token may only send to agent {caller.agent!r}", 403)
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 200:
            raise GatewayError("Idempotency-Key must be 1-200 characters", 400)
        message, created = await self.fleet.queue.enqueue(
            body.agent, body.conversation, body.text, priority=body.priority, idempotency_key=key
        )
        payload = EnqueueResponse(message=message, created=created).model_dump(mode="json")
        return JSONResponse(payload, status_code=201 if created else 200)

    async def message(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        found = await self._readable(request, request.path_params["message_id"])
        return JSONResponse(found.model_dump(mode="json"))

    async def events(self, request: Request) -> Response:
        from starlette.responses import StreamingResponse

        message_id = request.path_params["message_id"]
        await self._readable(request, message_id)
        after = request.query_params.get("after") or request.headers.get("last-event-id") or ""
        if after and not _valid_position(after):
            raise GatewayError(f"after/Last-Event-ID {after!r} is not an event id from this stream", 400)
        return StreamingResponse(
            self._stream(message_id, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _stream(self, message_id: str, after: str) -> AsyncIterator[bytes]:
        deadline = time.monotonic() + self.stream_timeout
        yield b": events of " + message_id.encode() + b"\n\n"
        while time.monotonic() < deadline:
            try:
                events = await self.fleet.queue.read_events(message_id, after, wait=1.0)
            except FleetUnavailable:
                await asyncio.sleep(0.5)
                continue
            for event in events:
                after = event.id
                yield _sse(event)
                if event.type == "done":
                    return
            if not events:
                # No `done` may come (the events expired, or a lost worker's turn was dead-lettered
                # by another worker's takeover): end from the message's own state.
                current = await self.fleet.message(message_id)
                if current.finished:
                    text = current.text if current.status == "done" else current.error
                    yield _sse(TurnEvent(type="done", status=current.status, text=text))
                    return
                yield b": keep-alive\n\n"

    async def status(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        self._admin(request)
        answer = StatusResponse(fleet=await self.fleet.status(), backlog=await self.fleet.queue.backlog())
        return JSONResponse(answer.model_dump(mode="json"))

    async def backlog(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        self._admin(request)
        return JSONResponse((await self.fleet.queue.backlog()).model_dump(mode="json"))

    async def dead_letters(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        self._admin(request)
        raw = request.query_params.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise GatewayError(f"limit {raw!r} must be an integer from 1 to 1000", 400)
        letters = await self.fleet.dead_letters(int(raw))
        return JSONResponse([item.model_dump(mode="json") for item in letters])

    async def retry_dead(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        self._admin(request)
        again = await self.fleet.retry_dead(request.path_params["message_id"])
        return JSONResponse(again.model_dump(mode="json"))

    async def drop_dead(self, request: Request) -> Response:
        from starlette.responses import Response

        self._admin(request)
        await self.fleet.drop_dead(request.path_params["message_id"])
        return Response(status_code=204)

    async def metrics(self, request: Request) -> Response:
        """Prometheus text: the fleet's queue gauges (admin token; scrapers send it as a bearer)."""
        from starlette.responses import Response

        from .metrics import CONTENT_TYPE, render

        self._admin(request)
        return Response(await render(self.fleet), media_type=CONTENT_TYPE)

    async def health(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        return JSONResponse({"ok": True})

    async def openapi(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        return JSONResponse(openapi_document())


def _valid_position(text: str) -> bool:
    """A Redis stream id (`123-4`) or a SQLite sequence number."""
    head, _, tail = text.partition("-")
    return head.isdigit() and (tail == "" or tail.isdigit()) and len(text) <= 64


def _sse(event: TurnEvent) -> bytes:
    data = event.model_dump_json(exclude_none=True)
    head = f"id: {event.id}\n" if event.id else ""
    return f"{head}event: {event.type}\ndata: {data}\n\n".encode()


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise GatewayError(f"body of {int(declared):,} bytes is over the {MAX_BODY_BYTES:,}-byte limit", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise GatewayError(f"body is over the {MAX_BODY_BYTES:,}-byte limit", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _guarded(handler: Handler) -> Handler:
    """Every refusal becomes `{"error": "..."}` with its status; an unexpected failure is logged
    and answered 500 without internals."""
    from starlette.responses import JSONResponse

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except FleetError as exc:
            status = _status_of(exc)
            if status >= 500 and status != 503:
                log.exception("gateway: %s %s failed", request.method, request.url.path)
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)
        except Exception:
            log.exception("gateway: %s %s failed", request.method, request.url.path)
            return JSONResponse({"error": "internal error (see the gateway's log)"}, status_code=500)

    return run


def create_gateway(fleet: Fleet, tokens: GatewayTokens, *, stream_timeout: float = 600.0) -> Starlette:
    """The gateway's ASGI app on a connected `Fleet`."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    api = _Api(fleet, tokens, stream_timeout)
    routes = [
        Route("/healthz", _guarded(api.health), methods=["GET"]),
        Route("/openapi.json", _guarded(api.openapi), methods=["GET"]),
        Route("/metrics", _guarded(api.metrics), methods=["GET"]),
        Route("/v1/messages", _guarded(api.enqueue), methods=["POST"]),
        Route("/v1/messages/{message_id}", _guarded(api.message), methods=["GET"]),
        Route("/v1/messages/{message_id}/events", _guarded(api.events), methods=["GET"]),
        Route("/v1/status", _guarded(api.status), methods=["GET"]),
        Route("/v1/backlog", _guarded(api.backlog), methods=["GET"]),
        Route("/v1/dead-letters", _guarded(api.dead_letters), methods=["GET"]),
        Route("/v1/dead-letters/{message_id}/retry", _guarded(api.retry_dead), methods=["POST"]),
        Route("/v1/dead-letters/{message_id}", _guarded(api.drop_dead), methods=["DELETE"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        what = "method not allowed" if status == 405 else "no such route"
        return JSONResponse({"error": f"{what}: {request.method} {request.url.path}"}, status_code=status)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


# -- OpenAPI -----------------------------------------------------------------------------------
def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 for the gateway, with schemas from the same pydantic models the routes use."""
    from pydantic.json_schema import models_json_schema

    _, defs = models_json_schema(
        [
            (m, "serialization")
            for m in (EnqueueResponse, MessageResult, StatusResponse, Backlog, TurnEvent, _ErrorBody)
        ]
        + [(EnqueueRequest, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = defs.get("$defs", {})
    schemas["Error"] = schemas.pop("_ErrorBody")

    def ref(name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    def errors(*codes: int) -> dict[str, Any]:
        text = {
            400: "Bad input",
            401: "Missing or unknown bearer token",
            403: "The token's scope does not allow this",
            404: "Not found",
            413: "Body too large",
            503: "The fleet's backend is unreachable",
        }
        return {str(code): json_body(ref("Error"), text[code]) for code in codes}

    message_id = {
        "name": "message_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    }
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "openclaw-mini fleet gateway", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "responses": {
                        "200": json_body(
                            {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
                            "The gateway is up",
                        )
                    },
                }
            },
            "/v1/messages": {
                "post": {
                    "operationId": "enqueue",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": ref("EnqueueRequest")}},
                    },
                    "responses": {
                        "201": json_body(ref("EnqueueResponse"), "Queued"),
                        "200": json_body(ref("EnqueueResponse"), "The key's earlier message"),
                        **errors(400, 401, 403, 404, 413, 503),
                    },
                }
            },
            "/v1/messages/{message_id}": {
                "get": {
                    "operationId": "getMessage",
                    "security": secured,
                    "parameters": [message_id],
                    "responses": {
                        "200": json_body(ref("MessageResult"), "The message's state and reply"),
                        **errors(401, 404, 503),
                    },
                }
            },
            "/v1/messages/{message_id}/events": {
                "get": {
                    "operationId": "streamEvents",
                    "security": secured,
                    "parameters": [
                        message_id,
                        {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Server-Sent Events: each `data:` is a TurnEvent; `done` ends it",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **errors(400, 401, 404, 503),
                    },
                }
            },
            "/v1/status": {
                "get": {
                    "operationId": "status",
                    "security": secured,
                    "responses": {
                        "200": json_body(ref("StatusResponse"), "Counts, workers and backlog"),
                        **errors(401, 403, 503),
                    },
                }
            },
            "/v1/backlog": {
                "get": {
                    "operationId": "backlog",
                    "security": secured,
                    "responses": {
                        "200": json_body(ref("Backlog"), "Conversations waiting and in flight"),
                        **errors(401, 403, 503),
                    },
                }
            },
            "/v1/dead-letters": {
                "get": {
                    "operationId": "listDeadLetters",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        }
                    ],
                    "responses": {
                        "200": json_body({"type": "array", "items": ref("MessageResult")}, "Oldest first"),
                        **errors(400, 401, 403, 503),
                    },
                }
            },
            "/v1/dead-letters/{message_id}/retry": {
                "post": {
                    "operationId": "retryDeadLetter",
                    "security": secured,
                    "parameters": [message_id],
                    "responses": {
                        "200": json_body(ref("MessageResult"), "Queued again"),
                        **errors(401, 403, 404, 503),
                    },
                }
            },
            "/v1/dead-letters/{message_id}": {
                "delete": {
                    "operationId": "dropDeadLetter",
                    "security": secured,
                    "parameters": [message_id],
                    "responses": {"204": {"description": "Dropped"}, **errors(401, 403, 404, 503)},
                }
            },
        },
    }
    return doc


# -- serving -----------------------------------------------------------------------------------
def _config(app: Starlette, host: str, port: int, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(
        app, host=host, port=port, lifespan="off", log_level=log_level, access_log=False,
        timeout_graceful_shutdown=3,
    )  # fmt: skip


async def serve_gateway(
    fleet: Fleet,
    tokens: GatewayTokens,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    log_level: str = "warning",
) -> None:
    """Serve until interrupted. Loopback unless `host` says otherwise."""
    import uvicorn

    if host not in _LOOPBACK:
        log.warning(
            "fleet gateway listening on %s: reachable beyond this machine (bearer tokens required)", host
        )
    if not len(tokens):
        log.warning(
            "no gateway tokens in %s: every request is refused (openclaw-mini fleet token create)",
            tokens.path,
        )
    server = uvicorn.Server(_config(create_gateway(fleet, tokens), host, port, log_level))
    await server.serve()


@contextlib.asynccontextmanager
async def serve_gateway_in_background(
    fleet: Fleet,
    tokens: GatewayTokens,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    stream_timeout: float = 600.0,
) -> AsyncIterator[str]:
    """Run the gateway on this event loop while the block runs; yields its base URL (tests, bench)."""
    import uvicorn

    config = _config(create_gateway(fleet, tokens, stream_timeout=stream_timeout), host, port, "warning")
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)  # what `Server.serve` sets up before startup
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say TCP (else each
    # SSE event can wait ~40 ms on Nagle + delayed ACK).
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        await server.startup(sockets=[sock])
    except BaseException:
        sock.close()
        raise
    loop_task = asyncio.create_task(server.main_loop())
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await loop_task
        await server.shutdown(sockets=[sock])
