"""`Fleet`: the client side. Enqueue messages, wait for results, see status, handle dead letters."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

from ..errors import InvalidMessage, ResultTimeout
from .models import FleetStatus, HeartbeatDelivery, HeartbeatEntry, Message, MessageResult, RetryPolicy
from .queue import Queue, open_queue

__all__ = ["Fleet"]


class Fleet:
    """A handle on one fleet (a Redis URL or an embedded SQLite file).

    ```python
    fleet = await Fleet.connect("redis://127.0.0.1:6379/0")
    msg = await fleet.enqueue(agent="support", conversation="user-42", text="Where is my order?")
    result = await fleet.result(msg.id, timeout=60)
    ```
    Delivery is at least once: a turn whose worker dies runs again elsewhere, and only the turn that
    completes under a live lease records its reply, so the reply a user sees is recorded once.
    """

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    @classmethod
    async def connect(cls, url: str | None = None, *, retry: RetryPolicy | None = None) -> Fleet:
        """`url` default: $OPENCLAW_MINI_FLEET_URL, else `sqlite:///.openclaw-mini/fleet.db`.
        `FleetUnavailable` when the backend cannot be reached."""
        return cls(await open_queue(url, retry=retry))

    @property
    def url(self) -> str:
        return self.queue.url

    async def enqueue(
        self,
        *,
        agent: str,
        conversation: str,
        text: str,
        idempotency_key: str | None = None,
        priority: int = 50,
    ) -> Message:
        """Queue a message (priority 0-100, >= 70 urgent, <= 30 low). The same `idempotency_key`
        returns the first message again and causes no second turn. Keys starting `heartbeat:` are
        reserved for the heartbeat scheduler."""
        if isinstance(idempotency_key, str) and idempotency_key.startswith("heartbeat:"):
            raise InvalidMessage(
                f"idempotency_key {idempotency_key!r}: keys starting 'heartbeat:' are reserved for the "
                "fleet's heartbeat scheduler"
            )
        message, _ = await self.queue.enqueue(
            agent, conversation, text, priority=priority, idempotency_key=idempotency_key
        )
        return message

    async def message(self, message_id: str) -> MessageResult:
        return await self.queue.message(message_id)

    async def result(self, message_id: str, *, timeout: float | None = 60.0) -> MessageResult:  # noqa: ASYNC109
        """Wait until the message is `done` or `dead_letter`; `ResultTimeout` after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            current = await self.queue.message(message_id)
            if current.finished:
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(
                    f"message {message_id} is still {current.status} after {timeout} s "
                    f"(attempts {current.attempts}); it stays queued, ask again later"
                )
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(pause)
            delay = min(delay * 1.5, 0.05)

    async def status(self) -> FleetStatus:
        """Queued, in flight, delayed and dead-letter counts, and each worker's state, load and heartbeat."""
        return await self.queue.status()

    async def heartbeats(self) -> list[HeartbeatEntry]:
        """Every agent's next heartbeat slot and what its last slot did."""
        return await self.queue.heartbeat_schedule()

    async def heartbeat_deliveries(self, limit: int = 100) -> list[HeartbeatDelivery]:
        """The newest heartbeat replies delivered to the `log` sink, oldest first."""
        return await self.queue.heartbeat_deliveries(limit)

    async def dead_letters(self, limit: int = 100) -> list[MessageResult]:
        return await self.queue.dead_letters(limit)

    async def retry_dead(self, message_id: str) -> MessageResult:
        return await self.queue.retry_dead(message_id)

    async def drop_dead(self, message_id: str) -> None:
        await self.queue.drop_dead(message_id)

    async def close(self) -> None:
        await self.queue.close()

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
