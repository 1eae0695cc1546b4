"""The fleet: serve agents from a pool of worker processes, on Redis Streams or an embedded SQLite queue.

```python
from openclaw_mini.fleet import Fleet, Worker

fleet = await Fleet.connect("redis://127.0.0.1:6379/0")  # or sqlite:///fleet.db; or the env var
msg = await fleet.enqueue(agent="support", conversation="user-42", text="Where is my order?")
result = await fleet.result(msg.id, timeout=60)
await Worker(fleet, agents_dir="agents/", concurrency=8).run()
```
"""

from __future__ import annotations

from .handle import Fleet
from .heartbeats import HeartbeatScheduler, ScaledClock
from .metrics import FleetMetrics
from .models import (
    Backlog,
    Claim,
    FileChange,
    FileMeta,
    FleetStatus,
    HeartbeatDelivery,
    HeartbeatEntry,
    Message,
    MessageResult,
    RetryPolicy,
    StreamBacklog,
    TurnEvent,
    WorkerInfo,
)
from .queue import DEFAULT_FLEET_URL, FLEET_URL_ENV, Queue, open_queue
from .scaler import ScalePolicy, Scaler
from .store import AgentWorkspace
from .worker import Worker

__all__ = [
    "DEFAULT_FLEET_URL",
    "FLEET_URL_ENV",
    "AgentWorkspace",
    "Backlog",
    "Claim",
    "FileChange",
    "FileMeta",
    "Fleet",
    "FleetMetrics",
    "FleetStatus",
    "HeartbeatDelivery",
    "HeartbeatEntry",
    "HeartbeatScheduler",
    "Message",
    "MessageResult",
    "Queue",
    "RetryPolicy",
    "ScalePolicy",
    "ScaledClock",
    "Scaler",
    "StreamBacklog",
    "TurnEvent",
    "Worker",
    "WorkerInfo",
    "open_queue",
]
