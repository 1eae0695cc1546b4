"""Shared, event-sourced world state in the Flux model.

Agents publish observations as events; every agent reads the same derived state. By default
the state lives in `<workspace>/.openclaw-mini/state.db` (nothing else to run); with
`FLUX_URL` set, the same interface talks to a Flux server or to `openclaw-mini state serve`.

```python
from openclaw_mini.state import make_event, open_world_state

async with open_world_state(".") as state:
    await state.publish(make_event("lab/sensor-1", {"temp": 21.5}))
    entity = await state.get("lab/sensor-1")
```

The HTTP server lives in `openclaw_mini.state.server` (optional `server` extra).
"""

from __future__ import annotations

import os
from pathlib import Path

from .auth import AuthConfig, NamespaceRegistry, RateLimiter
from .base import EventInput, Subscription, WorldState
from .embedded import EmbeddedWorldState, state_db_path
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
    MAX_BATCH_BYTES,
    MAX_DELETE_IDS,
    MAX_EVENT_BYTES,
    BatchDeleteResult,
    DeleteResult,
    Entity,
    EventPayload,
    FluxEvent,
    PublishResult,
    RuntimeConfig,
    StateUpdate,
    make_event,
    make_tombstone,
    namespace_of,
    new_event_id,
)
from .remote import RemoteWorldState

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_DELETE_IDS",
    "MAX_EVENT_BYTES",
    "AuthConfig",
    "BatchDeleteResult",
    "BatchTooLargeError",
    "DeleteResult",
    "EmbeddedWorldState",
    "Entity",
    "EventInput",
    "EventPayload",
    "EventTooLargeError",
    "FluxEvent",
    "InvalidEventError",
    "NamespaceRegistry",
    "PublishResult",
    "RateLimitedError",
    "RateLimiter",
    "RemoteWorldState",
    "RuntimeConfig",
    "StateAuthError",
    "StateError",
    "StateUnavailableError",
    "StateUpdate",
    "Subscription",
    "WorldState",
    "make_event",
    "make_tombstone",
    "namespace_of",
    "new_event_id",
    "open_world_state",
    "state_db_path",
]


def open_world_state(
    workspace: str | Path = ".",
    *,
    url: str | None = None,
    token: str | None = None,
) -> WorldState:
    """The world state an agent in `workspace` should use.

    `url` (default `FLUX_URL`) picks a remote Flux-compatible server, with `token` (default
    `FLUX_TOKEN`) as its bearer token; otherwise the embedded store of the workspace. Nothing
    is opened until first use; close the result with `await state.aclose()`.
    """
    url = url or os.environ.get("FLUX_URL") or None
    if url:
        return RemoteWorldState(url, token=token)
    return EmbeddedWorldState.for_workspace(workspace)
