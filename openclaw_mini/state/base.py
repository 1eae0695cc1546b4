"""The one `WorldState` interface that the embedded store and the remote client both implement.

Code written against it (tools, the server, the CLI, an example) does not know whether the state
lives in a SQLite file in the workspace or behind a Flux HTTP API on another machine.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self

from .errors import BatchTooLargeError, InvalidEventError
from .models import (
    MAX_DELETE_IDS,
    BatchDeleteResult,
    DeleteResult,
    Entity,
    FluxEvent,
    PreparedEvent,
    PublishResult,
    StateUpdate,
)

__all__ = ["EventInput", "Subscription", "WorldState", "normalise_patterns"]

EventInput = FluxEvent | PreparedEvent | Mapping[str, Any]
"""An event as a model, as Flux JSON (a dict), or already validated by `prepare_event`."""


def normalise_patterns(entity_ids: str | Sequence[str]) -> builtins.list[str]:
    """`"*"`, one id, or several ids/patterns -> a non-empty list of patterns."""
    patterns = [entity_ids] if isinstance(entity_ids, str) else list(entity_ids)
    patterns = [item for item in patterns if item]
    if not patterns:
        raise ValueError("subscribe needs at least one entity id or pattern (use '*' for everything)")
    return patterns


DeleteFilter = Literal["namespace", "prefix", "entity_ids"]


def _one_delete_filter(
    namespace: str | None, prefix: str | None, entity_ids: Sequence[str] | None
) -> tuple[DeleteFilter, str | builtins.list[str]]:
    """The one filter `delete_many` was given, checked the same for every store."""
    given: tuple[tuple[DeleteFilter, str | Sequence[str] | None], ...] = (
        ("namespace", namespace),
        ("prefix", prefix),
        ("entity_ids", entity_ids),
    )
    chosen = [(key, value) for key, value in given if value is not None]
    if len(chosen) != 1:
        raise InvalidEventError("delete_many takes exactly one of namespace=, prefix= or entity_ids=")
    key, value = chosen[0]
    if isinstance(value, str):
        if key == "entity_ids":
            raise InvalidEventError("entity_ids must be a list of ids, not one string")
        if not value:
            raise InvalidEventError("an empty namespace or prefix would delete everything; name one")
        return key, value
    if len(value) > MAX_DELETE_IDS:
        raise BatchTooLargeError(
            f"{len(value):,} entity ids given; one batch delete may remove at most {MAX_DELETE_IDS:,}",
            status=400,
        )
    return key, list(value)


class _ClosedOnExit(ABC):
    """`async with` closes the object (`aclose`) on the way out, whatever happened inside."""

    @abstractmethod
    async def aclose(self) -> None: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class Subscription(_ClosedOnExit):
    """A stream of `StateUpdate`s: iterate it, and close it (or use `async with`).

    `async with store.subscribe(...) as updates:` returns once the subscription is live, so an
    update published after that line is never missed.
    """

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    def __aiter__(self) -> Self:
        return self

    @abstractmethod
    async def __anext__(self) -> StateUpdate:
        """The next update; `StopAsyncIteration` once closed."""

    @abstractmethod
    async def start(self) -> None:
        """Make the subscription live (idempotent; iterating starts it too)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop receiving updates and free what the subscription holds."""


class WorldState(_ClosedOnExit):
    """Shared, event-sourced world state in the Flux model.

    Events are the truth; an entity's properties are the shallow merge of its events since its
    last tombstone. Every write is an event, deletes included.
    """

    @abstractmethod
    async def publish(self, event: EventInput) -> PublishResult:
        """Append one event and apply it; raises `InvalidEventError`/`EventTooLargeError` if bad."""

    @abstractmethod
    async def publish_batch(self, events: Sequence[EventInput]) -> builtins.list[PublishResult]:
        """Append many events; one result per event, a malformed event fails alone.

        Raises `BatchTooLargeError` when the valid events together exceed 10 MB.
        """

    @abstractmethod
    async def get(self, entity_id: str) -> Entity | None:
        """The entity's current state, or None if it does not exist (or was deleted)."""

    @abstractmethod
    async def list(self, *, prefix: str | None = None, namespace: str | None = None) -> builtins.list[Entity]:
        """All entities, or those whose id starts with `prefix` / lives in `namespace`, sorted by id."""

    @abstractmethod
    async def delete(self, entity_id: str) -> DeleteResult:
        """Publish a tombstone for the entity (a later write recreates it)."""

    async def delete_many(
        self,
        *,
        namespace: str | None = None,
        prefix: str | None = None,
        entity_ids: Sequence[str] | None = None,
    ) -> BatchDeleteResult:
        """Delete by exactly one filter; at most 10,000 entities (`BatchTooLargeError` beyond)."""
        return await self._delete_matching(*_one_delete_filter(namespace, prefix, entity_ids))

    @abstractmethod
    async def _delete_matching(self, key: DeleteFilter, value: str | builtins.list[str]) -> BatchDeleteResult:
        """`delete_many` with its one filter checked: a non-empty namespace or prefix, or ids."""

    @abstractmethod
    async def history(
        self, entity_id: str, *, since: datetime | int | None = None, limit: int = 100
    ) -> builtins.list[FluxEvent]:
        """The entity's stored events, newest first (Flux's order), received at or after `since`."""

    @abstractmethod
    def subscribe(self, entity_ids: str | Sequence[str] = "*", *, snapshot: bool = False) -> Subscription:
        """Updates and deletions for ids or patterns (`*`, `ns/*`, exact ids).

        With `snapshot=True` the current state of matching entities comes first, marked
        `snapshot=True`, so a subscriber can build its view without a separate `list()`.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""

    async def matching(self, patterns: Sequence[str]) -> builtins.list[Entity]:
        """Current entities matching subscription patterns (for snapshots and gap filling)."""
        if "*" in patterns:
            return await self.list()
        found: dict[str, Entity] = {}
        for pattern in patterns:
            if pattern.endswith("*"):
                for entity in await self.list(prefix=pattern[:-1]):
                    found[entity.id] = entity
            else:
                exact = await self.get(pattern)
                if exact is not None:
                    found[exact.id] = exact
        return [found[key] for key in sorted(found)]

    async def __aenter__(self) -> Self:
        return self
