"""The `WorldState` interface over Flux's HTTP API and WebSocket: a real Flux server, or ours.

Events are validated here before they are sent, so a malformed event in a batch fails alone
(Flux itself rejects a whole batch whose JSON does not parse into events), and every event
carries a client-made `eventId`, so a publish retried after a network error is not applied
twice by our server.

HTTP goes through `httpx2` (the client the anthropic SDK already installs) and subscriptions
through `websockets`; both are imported on first use, so importing this module costs nothing.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .base import DeleteFilter, EventInput, Subscription, WorldState, normalise_patterns
from .errors import (
    BatchTooLargeError,
    EventTooLargeError,
    InvalidEventError,
    RateLimitedError,
    StateAuthError,
    StateError,
    StateUnavailableError,
)
from .models import (
    BatchDeleteResult,
    DeleteResult,
    Entity,
    FluxEvent,
    PublishResult,
    StateUpdate,
    make_tombstone,
    matches_pattern,
    parse_timestamp,
    prepare_batch,
    prepare_event,
)

if TYPE_CHECKING:
    import httpx2
    from websockets.asyncio.client import ClientConnection

__all__ = ["RemoteWorldState", "entity_path"]

logger = logging.getLogger(__name__)


def entity_path(entity_id: str) -> str:
    """`/api/state/entities/<id>` with the id fully encoded (`/` becomes `%2F`, as Flux expects)."""
    return "/api/state/entities/" + quote(entity_id, safe="")


def _error_from(response: httpx2.Response, *, batch: bool = False) -> StateError:
    """Turn a Flux error answer (`{"error": "..."}`) into the matching exception."""
    try:
        body = response.json()
        message = str(body.get("error")) if isinstance(body, dict) and body.get("error") else response.text
    except ValueError:
        message = response.text
    message = (message or response.reason_phrase or "no detail").strip()[:500]
    status = response.status_code
    where = f"{response.request.method} {response.request.url.path}"
    if status == 400:
        return InvalidEventError(f"{where} was rejected: {message}")
    if status in (401, 403):
        return StateAuthError(f"{where} was refused ({status}): {message}", status=status)
    if status == 413:
        if batch:
            return BatchTooLargeError(f"{where} was too large: {message}")
        return EventTooLargeError(f"{where} was too large: {message}")
    if status == 429:
        try:
            retry_after = float(response.headers.get("retry-after", "60"))
        except ValueError:
            retry_after = 60.0
        return RateLimitedError(f"{where} hit the rate limit: {message}", retry_after=retry_after)
    error = StateError(f"{where} answered {status}: {message}")
    error.status = status
    return error


class RemoteWorldState(WorldState):
    """World state on a Flux-compatible server (`openclaw-mini state serve`, or Flux itself).

    `token` is sent as `Authorization: Bearer <token>`; it defaults to `FLUX_TOKEN`.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        transport: Any = None,
        ack_timeout: float = 0.5,
        max_reconnect_delay: float = 5.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"FLUX_URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.token = token if token is not None else (os.environ.get("FLUX_TOKEN") or None)
        self.timeout = timeout
        self.ack_timeout = ack_timeout
        self.max_reconnect_delay = max_reconnect_delay
        self._transport = transport
        self._client: httpx2.AsyncClient | None = None
        self._subscriptions: set[_RemoteSubscription] = set()
        self._closed = False

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "openclaw-mini"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _http(self) -> httpx2.AsyncClient:
        if self._closed:
            raise StateUnavailableError(f"the world state client for {self.url} is closed")
        if self._client is None:
            import httpx2

            self._client = httpx2.AsyncClient(
                base_url=self.url, headers=self.headers, timeout=self.timeout, transport=self._transport
            )
        return self._client

    async def _call(
        self,
        method: str,
        path: str,
        *,
        content: str | None = None,
        params: dict[str, Any] | None = None,
        missing_ok: bool = False,
        batch: bool = False,
    ) -> Any:
        import httpx2

        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = await self._http().request(
                method,
                path,
                content=content.encode("utf-8") if content is not None else None,
                params=params,
                headers=headers,
            )
        except httpx2.TransportError as exc:
            raise StateUnavailableError(f"cannot reach the world state at {self.url}: {exc}") from None
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise _error_from(response, batch=batch)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise StateError(
                f"{method} {self.url}{path} answered {response.status_code} with a body that is not JSON"
            ) from None

    # -- writes ---------------------------------------------------------------------------

    async def publish(self, event: EventInput) -> PublishResult:
        item = prepare_event(event)
        answer = await self._call("POST", "/api/events", content=item.body)
        result = PublishResult.model_validate(answer or {})
        if result.event_id is None:
            result.event_id = item.event_id
        return result

    async def publish_batch(self, events: Sequence[EventInput]) -> builtins.list[PublishResult]:
        if not events:
            return []
        slots, prepared = prepare_batch(events)
        answers: builtins.list[PublishResult] = []
        if prepared:
            body = '{"events":[' + ",".join(item.body for item in prepared) + "]}"
            answer = await self._call("POST", "/api/events/batch", content=body, batch=True)
            raw_results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(raw_results, list) or len(raw_results) != len(prepared):
                raise StateError(
                    f"{self.url}/api/events/batch answered with {len(raw_results or [])} results "
                    f"for {len(prepared)} events"
                )
            for item, raw in zip(prepared, raw_results, strict=True):
                result = PublishResult.model_validate(raw if isinstance(raw, dict) else {})
                if result.error is None and result.event_id is None:
                    result.event_id = item.event_id
                answers.append(result)
        sent = iter(answers)
        return [slot if slot is not None else next(sent) for slot in slots]

    async def delete(self, entity_id: str) -> DeleteResult:
        make_tombstone(entity_id)  # validates the id the same way the embedded store does
        answer = await self._call("DELETE", entity_path(entity_id))
        return DeleteResult.model_validate(answer)

    async def _delete_matching(self, key: DeleteFilter, value: str | builtins.list[str]) -> BatchDeleteResult:
        answer = await self._call("POST", "/api/state/entities/delete", content=json.dumps({key: value}))
        return BatchDeleteResult.model_validate(answer or {})

    # -- reads ----------------------------------------------------------------------------

    async def get(self, entity_id: str) -> Entity | None:
        answer = await self._call("GET", entity_path(entity_id), missing_ok=True)
        return Entity.model_validate(answer) if answer is not None else None

    async def list(self, *, prefix: str | None = None, namespace: str | None = None) -> builtins.list[Entity]:
        params = {key: value for key, value in (("prefix", prefix), ("namespace", namespace)) if value}
        answer = await self._call("GET", "/api/state/entities", params=params or None)
        entities = [Entity.model_validate(item) for item in answer or []]
        return sorted(entities, key=lambda entity: entity.id)

    async def history(
        self, entity_id: str, *, since: datetime | int | None = None, limit: int = 100
    ) -> builtins.list[FluxEvent]:
        if limit < 1:
            raise InvalidEventError(f"history limit must be at least 1, got {limit}")
        moment = parse_timestamp(since) if since is not None else datetime(1970, 1, 1, tzinfo=UTC)
        params = {
            "entity": entity_id,
            "limit": str(limit),
            "since": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        answer = await self._call("GET", "/api/events", params=params)
        return [FluxEvent.model_validate(item) for item in answer or []]

    # -- subscriptions --------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        scheme, rest = self.url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest + "/api/ws"

    def subscribe(self, entity_ids: str | Sequence[str] = "*", *, snapshot: bool = False) -> Subscription:
        subscription = _RemoteSubscription(self, normalise_patterns(entity_ids), snapshot)
        self._subscriptions.add(subscription)
        return subscription

    async def aclose(self) -> None:
        if self._closed:
            return
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        self._closed = True
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def __repr__(self) -> str:
        return f"RemoteWorldState({self.url!r})"


class _RemoteSubscription(Subscription):
    """A WebSocket subscription that regroups per-property messages and survives reconnects.

    After a reconnect it subscribes again and fills the gap over HTTP: entities that changed
    while it was away come as snapshot entries, entities that vanished as deletions.
    """

    def __init__(self, state: RemoteWorldState, patterns: builtins.list[str], snapshot: bool) -> None:
        self._state = state
        self.patterns = patterns
        self._want_snapshot = snapshot
        self._ws: ClientConnection | None = None
        self._pending: deque[StateUpdate] = deque()
        self._groups: dict[str, StateUpdate] = {}
        self._known: dict[str, datetime] = {}
        self._watermark: datetime | None = None
        self._started = False
        self._closed = False
        self._stop = asyncio.Event()
        self._start_lock = asyncio.Lock()

    def _wants(self, entity_id: str) -> bool:
        return any(matches_pattern(pattern, entity_id) for pattern in self.patterns)

    async def start(self) -> None:
        async with self._start_lock:
            if self._started or self._closed:
                return
            self._watermark = datetime.now(UTC) - timedelta(seconds=1)
            await self._connect()
            if self._want_snapshot:
                entities = await self._state.matching(self.patterns)
                early = list(self._pending)
                self._pending.clear()
                for entity in entities:
                    self._note(entity.id, entity.last_updated)
                    self._pending.append(StateUpdate.from_entity(entity))
                self._pending.extend(early)
            self._started = True

    async def _connect(self) -> None:
        from websockets.asyncio.client import connect

        try:
            ws = await connect(
                self._state.ws_url,
                additional_headers=self._state.headers,
                open_timeout=self._state.timeout,
                max_size=16 * 1024 * 1024,
                compression=None,
            )
        except (OSError, TimeoutError) as exc:
            raise StateUnavailableError(f"cannot open {self._state.ws_url}: {exc}") from None
        except Exception as exc:  # websockets' handshake errors (InvalidStatus, InvalidURI...)
            raise StateUnavailableError(f"cannot open {self._state.ws_url}: {exc}") from None
        self._ws = ws
        for pattern in self.patterns:
            await ws.send(json.dumps({"type": "subscribe", "entity_id": pattern}))
        # Our server acknowledges each subscribe; real Flux does not, so wait only briefly.
        waiting = set(self.patterns)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._state.ack_timeout
        while waiting:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                raw = await asyncio.wait_for(ws.recv(), remaining)
            except TimeoutError:
                break
            message = self._decode(raw)
            if message.get("type") == "subscribed":
                waiting.discard(str(message.get("entity_id")))
            else:
                self._handle(message)

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                await self._connect()
                await self._fill_gap()
                return
            except StateUnavailableError as exc:
                logger.info("world-state subscription lost (%s); retrying in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, self._state.max_reconnect_delay)

    async def _fill_gap(self) -> None:
        entities = await self._state.matching(self.patterns)
        present = {entity.id for entity in entities}
        watermark = self._watermark
        for entity in entities:
            seen = self._known.get(entity.id)
            if seen is not None:
                changed = entity.last_updated > seen
            else:
                changed = watermark is None or entity.last_updated > watermark
            if changed:
                self._pending.append(StateUpdate.from_entity(entity))
            self._note(entity.id, entity.last_updated)
        for entity_id in [key for key in self._known if key not in present]:
            del self._known[entity_id]
            self._pending.append(
                StateUpdate(
                    type="entity_deleted", entity_id=entity_id, timestamp=datetime.now(UTC), snapshot=True
                )
            )

    def _note(self, entity_id: str, moment: datetime) -> None:
        self._known[entity_id] = moment
        if self._watermark is None or moment > self._watermark:
            self._watermark = moment

    @staticmethod
    def _decode(raw: str | bytes) -> dict[str, Any]:
        try:
            message = json.loads(raw)
        except ValueError:
            return {}
        return message if isinstance(message, dict) else {}

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        entity_id = message.get("entity_id")
        if kind not in ("state_update", "entity_deleted") or not isinstance(entity_id, str):
            if kind == "error":
                logger.warning("world-state server reported: %s", message.get("error"))
            return
        if not self._wants(entity_id):
            return
        try:
            moment = parse_timestamp(message.get("timestamp") or datetime.now(UTC))
        except ValueError:
            moment = datetime.now(UTC)
        event_id = message.get("eventId") if isinstance(message.get("eventId"), str) else None
        if kind == "entity_deleted":
            self._known.pop(entity_id, None)
            self._pending.append(
                StateUpdate(type="entity_deleted", entity_id=entity_id, timestamp=moment, event_id=event_id)
            )
            return
        self._note(entity_id, moment)
        name = str(message.get("property"))
        value = message.get("value")
        if event_id is None:  # real Flux: one message per property, nothing to regroup
            self._pending.append(
                StateUpdate(
                    type="state_update", entity_id=entity_id, properties={name: value}, timestamp=moment
                )
            )
            return
        group = self._groups.get(event_id)
        if group is None:
            group = StateUpdate(
                type="state_update", entity_id=entity_id, properties={}, timestamp=moment, event_id=event_id
            )
            self._groups[event_id] = group
        group.properties[name] = value
        if message.get("last", True):
            del self._groups[event_id]
            self._pending.append(group)

    async def __anext__(self) -> StateUpdate:
        await self.start()
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._closed:
                raise StopAsyncIteration
            ws = self._ws
            if ws is None:
                await self._reconnect()
                continue
            from websockets.exceptions import ConnectionClosed

            try:
                raw = await ws.recv()
            except ConnectionClosed:
                self._ws = None
                self._groups.clear()
                if self._closed:
                    raise StopAsyncIteration from None
                logger.info("world-state WebSocket closed; reconnecting to %s", self._state.ws_url)
                continue
            self._handle(self._decode(raw))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._pending.clear()
        self._state._subscriptions.discard(self)
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
