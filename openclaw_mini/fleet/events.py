"""Publishing a running turn's events to the fleet, for the gateway's Server-Sent Events clients.

The worker hands each `RunEvent` to a `TurnPublisher`; a background task writes what has gathered in
one call, so the turn never waits on the backend and a slow backend gets batches, not a call per
token. Publishing is best effort: a lost event never fails a turn (the reply is in the result).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..errors import FleetError
from .models import TurnEvent
from .queue import Queue

__all__ = ["TurnPublisher", "turn_event"]

log = logging.getLogger(__name__)


def turn_event(event: Any) -> TurnEvent | None:
    """The wire form of an `Agent.stream` event, or None for kinds clients are not sent."""
    if event.type == "text_delta":
        return TurnEvent(type="text_delta", text=event.text, at=time.time())
    if event.type in ("tool_start", "tool_end") and event.tool is not None:
        return TurnEvent(
            type=event.type,
            tool=event.tool.name,
            tool_use_id=event.tool.id,
            is_error=event.tool.is_error if event.type == "tool_end" else None,
            at=time.time(),
        )
    return None


class TurnPublisher:
    """Batches one message's events to `Queue.publish_events` from a background task."""

    def __init__(self, queue: Queue, message_id: str) -> None:
        self.queue = queue
        self.message_id = message_id
        self._pending: list[TurnEvent] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._flush_loop())

    def add(self, event: TurnEvent) -> None:
        self._pending.append(event)
        self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                try:
                    await self.queue.publish_events(self.message_id, batch)
                except FleetError as exc:
                    log.warning("turn events of %s not published: %s", self.message_id, exc)
            if self._closing and not self._pending:
                return

    async def close(self, final: TurnEvent | None = None) -> None:
        """Publish what is left (and `final`), then stop; waits at most 10 s."""
        if final is not None:
            self._pending.append(final)
        self._closing = True
        self._wake.set()
        done, _ = await asyncio.wait({self._task}, timeout=10)
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
