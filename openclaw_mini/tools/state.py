"""World-state tools: `state_publish`, `state_get`, `state_list`, `state_delete`.

They use the `WorldState` the Agent puts in `ctx.state` (the Agent opens it and closes it); without
one, the store that `open_world_state(ctx.workspace)` picks (embedded, or remote when `FLUX_URL` is
set) is opened once and kept on the context, whose owner closes it. Replies are
JSON text; failures are `ToolError`s the model can act on.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field

from ..state import Entity, StateError, WorldState, make_event, open_world_state
from ._services import context_service, json_reply
from .base import Tool, ToolContext, ToolError, tool

__all__ = [
    "STATE_LIST_MAX_CHARS",
    "STATE_TOOLS",
    "state_delete",
    "state_get",
    "state_list",
    "state_publish",
    "state_store",
]

STATE_LIST_MAX_CHARS = 30_000
"""`state_list` stops adding entities once its reply reaches this size, and says so."""


def state_store(ctx: ToolContext) -> WorldState:
    """The context's world state; a tool used on its own gets the workspace's store, kept on that
    context (whoever made the context closes it)."""
    return context_service(
        ctx, "state", WorldState, lambda: open_world_state(ctx.workspace), "The world state"
    )


def _source(ctx: ToolContext) -> str:
    return ctx.session_key or f"agent:{ctx.agent_id}"


@tool(group="state")
async def state_publish(
    entity_id: str,
    properties: dict[str, Any],
    ctx: ToolContext,
    stream: str = "agents",
    key: str | None = None,
) -> str:
    """Publish an observation to the shared world state that other agents read.

    Sets the given properties on an entity, creating it if needed. Only the properties you send
    change: each top-level property replaces its old value (a nested object is replaced whole),
    others are kept; send null to store null. Returns the entity as it is now.

    Args:
        entity_id: Entity id, best as '<namespace>/<name>' (e.g. 'lab/sensor-1').
        properties: The properties to set, as a JSON object.
        stream: Event stream: lowercase letters/digits, dot-separated (e.g. 'sensors.temperature').
        key: Optional ordering/grouping key carried with the event.
    """
    store = state_store(ctx)
    try:
        event = make_event(entity_id, properties, stream=stream, source=_source(ctx), key=key)
        result = await store.publish(event)
        entity = await store.get(entity_id)
    except StateError as exc:
        raise ToolError(f"state_publish failed: {exc}") from None
    reply: dict[str, Any] = {"eventId": result.event_id}
    if entity is not None:
        reply["entity"] = entity.to_wire()
    return json_reply(reply)


@tool(group="state")
async def state_get(entity_id: str, ctx: ToolContext) -> str:
    """Read one entity of the shared world state: its merged properties and when they last changed.

    Args:
        entity_id: The entity id, e.g. 'lab/sensor-1'.
    """
    store = state_store(ctx)
    try:
        entity = await store.get(entity_id)
    except StateError as exc:
        raise ToolError(f"state_get failed: {exc}") from None
    if entity is None:
        raise ToolError(f"No entity {entity_id!r} in the world state. Use state_list to see what exists.")
    return json_reply(entity.to_wire())


@tool(group="state")
async def state_list(
    ctx: ToolContext,
    prefix: str | None = None,
    namespace: str | None = None,
    limit: Annotated[int, Field(ge=1, le=500)] = 50,
) -> str:
    """List entities of the shared world state, sorted by id.

    Args:
        prefix: Only ids starting with this text (e.g. 'lab/sensor').
        namespace: Only ids in this namespace (the part before the first '/').
        limit: At most this many entities (default 50).
    """
    store = state_store(ctx)
    try:
        entities: list[Entity] = await store.list(prefix=prefix or None, namespace=namespace or None)
    except StateError as exc:
        raise ToolError(f"state_list failed: {exc}") from None
    shown: list[dict[str, Any]] = []
    size = 0
    for entity in entities[:limit]:
        wire = entity.to_wire()
        size += len(json.dumps(wire, ensure_ascii=False))
        if shown and size > STATE_LIST_MAX_CHARS:
            break
        shown.append(wire)
    reply: dict[str, Any] = {"total": len(entities), "shown": len(shown), "entities": shown}
    if len(shown) < len(entities):
        reply["note"] = "More entities exist: narrow with prefix/namespace, or read one with state_get."
    return json_reply(reply)


@tool(group="state")
async def state_delete(entity_id: str, ctx: ToolContext) -> str:
    """Delete an entity from the shared world state (a later state_publish recreates it).

    Args:
        entity_id: The entity id to delete.
    """
    store = state_store(ctx)
    try:
        existing = await store.get(entity_id)
        if existing is None:
            raise ToolError(f"No entity {entity_id!r} in the world state; nothing to delete.")
        result = await store.delete(entity_id)
    except StateError as exc:
        raise ToolError(f"state_delete failed: {exc}") from None
    return json_reply({"deleted": result.entity_id, "eventId": result.event_id})


STATE_TOOLS: list[Tool] = [state_publish, state_get, state_list, state_delete]
