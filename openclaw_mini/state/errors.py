"""Errors of the world state, one per answer a Flux server can give (400, 401/403, 404, 413, 429).

The embedded store, the remote client and the server share them, so code that handles a
`RateLimitedError` works the same whichever store it talks to.
"""

from __future__ import annotations

from ..errors import OpenClawMiniError

__all__ = [
    "BatchTooLargeError",
    "EventTooLargeError",
    "InvalidEventError",
    "RateLimitedError",
    "StateAuthError",
    "StateError",
    "StateUnavailableError",
]


class StateError(OpenClawMiniError):
    """Base of every world-state error; the message says what went wrong and where."""

    status = 500


class InvalidEventError(StateError, ValueError):
    """An event (or a request) is malformed: HTTP 400."""

    status = 400


class EventTooLargeError(StateError, ValueError):
    """One event is over 1 MB: HTTP 413."""

    status = 413


class BatchTooLargeError(StateError, ValueError):
    """A batch is over 10 MB (413), or a batch delete names more than 10,000 entities (400)."""

    def __init__(self, message: str, *, status: int = 413) -> None:
        super().__init__(message)
        self.status = status


class StateAuthError(StateError):
    """A write without a token (401) or with one that does not own the namespace (403)."""

    def __init__(self, message: str, *, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class RateLimitedError(StateError):
    """The namespace's rate limit is used up: HTTP 429; retry after `retry_after` seconds."""

    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StateUnavailableError(StateError):
    """The store cannot be reached (server down, connection refused, store closed)."""

    status = 503
