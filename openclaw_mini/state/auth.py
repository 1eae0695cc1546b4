"""Namespaces, bearer tokens and per-namespace rate limits for the served world state.

A namespace owns the entities whose id starts with `<namespace>/`. Registering one returns its
token exactly once; only a SHA-256 hash is kept, in `state-namespaces.json` beside the state
database, so a leaked file does not leak write access. Reads stay open, as in Flux.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from .errors import InvalidEventError, StateError

__all__ = [
    "NAMESPACE_NAME",
    "AuthConfig",
    "NamespaceExistsError",
    "NamespaceFile",
    "NamespaceRecord",
    "NamespaceRegistry",
    "RateLimiter",
    "hash_token",
]

NAMESPACE_NAME = re.compile(r"^[a-z0-9_-]{3,32}$")
"""Flux's namespace rule: 3-32 characters of a-z, 0-9, '-' and '_'."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class NamespaceExistsError(StateError):
    """The name is taken: HTTP 409."""

    status = 409


class NamespaceRecord(BaseModel):
    """One registered namespace; the token itself is never stored."""

    namespace_id: str
    name: str
    token_sha256: str
    created_at: int = Field(description="epoch milliseconds")


class NamespaceFile(BaseModel):
    """`state-namespaces.json`: versioned so a later format can still read this one."""

    v: Literal[1] = 1
    namespaces: list[NamespaceRecord] = Field(default_factory=list)


class NamespaceRegistry:
    """Registered namespaces, in memory and (when `path` is given) in a JSON file.

    The file is re-read when it changes on disk, so a second server process on the same
    workspace sees registrations made by the first.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._records: dict[str, NamespaceRecord] = {}
        self._mtime: float | None = None
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        stat = self.path.stat()
        if self._mtime == stat.st_mtime:
            return
        try:
            data = NamespaceFile.model_validate_json(self.path.read_text(encoding="utf-8"))
        except (ValidationError, ValueError) as exc:
            raise StateError(f"{self.path} is not a valid namespace file: {exc}") from None
        self._records = {record.name: record for record in data.namespaces}
        self._mtime = stat.st_mtime

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = NamespaceFile(namespaces=sorted(self._records.values(), key=lambda record: record.name))
        temporary = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data.model_dump(), indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)
        self._mtime = self.path.stat().st_mtime

    def register(self, name: str) -> tuple[NamespaceRecord, str]:
        """Create a namespace; returns it and its token (the only time the token is seen)."""
        if not isinstance(name, str) or not NAMESPACE_NAME.match(name):
            raise InvalidEventError(
                f"namespace name {name!r} must be 3-32 characters of lowercase letters, digits, '-' or '_'"
            )
        with self._lock:
            self._load()
            if name in self._records:
                raise NamespaceExistsError(f"namespace {name!r} already exists")
            token = secrets.token_urlsafe(32)
            record = NamespaceRecord(
                namespace_id="ns_" + secrets.token_hex(4),
                name=name,
                token_sha256=hash_token(token),
                created_at=time.time_ns() // 1_000_000,
            )
            self._records[name] = record
            self._save()
        return record, token

    def get(self, name: str) -> NamespaceRecord | None:
        with self._lock:
            self._load()
            return self._records.get(name)

    def delete(self, name: str) -> bool:
        """Remove a namespace (its token stops working; its entities stay, as in Flux)."""
        with self._lock:
            self._load()
            if name not in self._records:
                return False
            del self._records[name]
            self._save()
        return True

    def owner_of(self, token: str) -> str | None:
        """The namespace a token belongs to, or None (compared in constant time)."""
        digest = hash_token(token)
        with self._lock:
            self._load()
            for record in self._records.values():
                if hmac.compare_digest(record.token_sha256, digest):
                    return record.name
        return None


@dataclass
class AuthConfig:
    """Turn namespaces and tokens on for `create_app`.

    With auth on, every write needs `Authorization: Bearer <token>` (401 without one) and may
    only touch entities `<namespace>/...` of the namespace that token owns (403 otherwise).
    `admin_token`, when set, is required to register namespaces and may write anywhere.
    """

    admin_token: str | None = None
    registry: NamespaceRegistry = field(default_factory=NamespaceRegistry)
    private_reads: bool = False
    """Off (Flux's rule): reads are open over HTTP and the WebSocket alike. On: both need a
    namespace or admin token (`Authorization: Bearer`, or `?token=` on the WebSocket URL)."""

    @classmethod
    def for_workspace(
        cls, workspace: str | Path, *, admin_token: str | None = None, private_reads: bool = False
    ) -> AuthConfig:
        path = Path(workspace) / ".openclaw-mini" / "state-namespaces.json"
        return cls(admin_token=admin_token, registry=NamespaceRegistry(path), private_reads=private_reads)


class RateLimiter:
    """A token bucket per namespace: `per_minute` events, refilled continuously.

    `take` answers None when the events may go ahead, else how many seconds to wait.
    """

    def __init__(self, per_minute: int = 10_000, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError(f"rate limit must be at least 1 event per minute, got {per_minute}")
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def configure(self, per_minute: int) -> None:
        """Change the limit while running (Flux's admin config); buckets keep their tokens."""
        if per_minute < 1:
            raise ValueError(f"rate limit must be at least 1 event per minute, got {per_minute}")
        with self._lock:
            self.per_minute = per_minute
            self._rate = per_minute / 60.0

    def take(self, namespace: str, count: int = 1) -> float | None:
        with self._lock:
            now = self._clock()
            tokens, stamp = self._buckets.get(namespace, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - stamp) * self._rate)
            if count <= tokens:
                self._buckets[namespace] = (tokens - count, now)
                return None
            self._buckets[namespace] = (tokens, now)
            if count > self.per_minute:
                return 60.0
            return max(1.0, math.ceil((count - tokens) / self._rate))
