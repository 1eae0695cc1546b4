"""Every error openclaw-mini raises on purpose, under one root.

```
OpenClawMiniError
├── ConfigError (ValueError)           a setting is invalid: the message names which and why
│   └── MissingAPIKeyError             no API key for the Anthropic backend
├── SessionKeyError (ValueError)       a session id or key that cannot name a transcript safely
├── SessionBusyError (TimeoutError)    another process holds a session's turn lock for too long
├── MemoryPathError (ValueError)       not a memory file of this workspace
├── PathEscapeError (PermissionError)  a path leaves its root directory (tools.safe_fs)
├── EmbeddingsError (RuntimeError)     a memory embedder is missing its extra/model or did not answer
├── ModelError                         the model call failed after retries (`status`, `retryable`)
│   ├── ContextOverflowError           the prompt is too long: compact and retry
│   └── ScriptError                    a `ScriptedModel` / fake server script ran out or was left over
├── ToolError                          a tool reports a failure the model should read
│   ├── ToolRefused                    the policy, sandbox or approval does not allow a call
│   └── ToolTimeout (TimeoutError)     a tool ran past its deadline
├── HeartbeatBusy                      the heartbeat target is busy: the wake layer retries later
├── FleetError                         a fleet operation failed (queue, store or worker)
│   ├── FleetUnavailable (ConnectionError)  Redis or the SQLite queue cannot be reached
│   ├── InvalidMessage (ValueError)    refused before anything was enqueued
│   │   └── UnknownAgent               no worker serves that agent
│   ├── MessageNotFound (LookupError)  no message or dead letter with that id
│   ├── StaleLease                     the lease was lost: the late result is discarded
│   ├── StoreConflict                  another conversation changed the same agent file
│   └── ResultTimeout (TimeoutError)   `Fleet.result` waited its timeout; the message goes on
└── StateError                         the world state (see `openclaw_mini.state.errors`)
    ├── InvalidEventError (ValueError)      400
    ├── EventTooLargeError (ValueError)     413
    ├── BatchTooLargeError (ValueError)     413 / 400
    ├── StateAuthError                      401 / 403
    ├── RateLimitedError                    429
    ├── StateUnavailableError               503
    └── NamespaceExistsError                409
```

`except OpenClawMiniError` catches anything raised on purpose; the built-in bases stay so code that
catches `ValueError` or `TimeoutError` today keeps working. The classes are also importable from the
module that raises them (`openclaw_mini.llm.ModelError`, ...).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ContextOverflowError",
    "EmbeddingsError",
    "FleetError",
    "FleetUnavailable",
    "HeartbeatBusy",
    "InvalidMessage",
    "MemoryPathError",
    "MessageNotFound",
    "MissingAPIKeyError",
    "ModelError",
    "OpenClawMiniError",
    "PathEscapeError",
    "ResultTimeout",
    "ScriptError",
    "SessionBusyError",
    "SessionKeyError",
    "StaleLease",
    "StoreConflict",
    "ToolError",
    "ToolRefused",
    "ToolTimeout",
    "UnknownAgent",
]


class OpenClawMiniError(Exception):
    """Root of every error openclaw-mini raises on purpose."""


class ConfigError(OpenClawMiniError, ValueError):
    """A configuration value is invalid; the message says which one and why."""


class MissingAPIKeyError(ConfigError):
    """No API key for the Anthropic backend."""


class SessionKeyError(OpenClawMiniError, ValueError):
    """A session id or key that cannot name a transcript safely."""


class SessionBusyError(OpenClawMiniError, TimeoutError):
    """Another process held a session's turn lock longer than the wait allowed."""


class MemoryPathError(OpenClawMiniError, ValueError):
    """A path that is not a memory file of this workspace (outside it, or not MEMORY.md / memory/*.md)."""


class ModelError(OpenClawMiniError):
    """The model call failed after the SDK's retries. `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class ContextOverflowError(ModelError):
    """The provider said the prompt is too long: compact and retry."""


class ScriptError(ModelError):
    """A scripted test model ran out of replies, or finished with replies left unconsumed."""


class ToolError(OpenClawMiniError):
    """Raised by a tool to report a failure the model should read (becomes `is_error: true`)."""


class ToolRefused(ToolError):
    """A call the policy, sandbox or approval does not allow; the message says why and reaches the model."""


class ToolTimeout(ToolError, TimeoutError):
    """A tool ran past its deadline; the run goes on with an error result."""


class HeartbeatBusy(OpenClawMiniError):
    """Raise from `run_turn` or the callback when the target is busy: the wake layer retries later."""


class PathEscapeError(OpenClawMiniError, PermissionError):
    """A path leaves the directory it must stay under (by `..`, a symlink, or a swap while it was
    being opened), or enters a name that is off limits there. `via_symlink` says whether a symlink
    was followed on the way."""

    def __init__(self, message: str, *, via_symlink: bool = False) -> None:
        super().__init__(message)
        self.via_symlink = via_symlink


class EmbeddingsError(OpenClawMiniError, RuntimeError):
    """A memory embedder could not be set up (extra or model missing) or its API did not answer."""


class FleetError(OpenClawMiniError):
    """A fleet operation failed (queue, store or worker)."""


class FleetUnavailable(FleetError, ConnectionError):
    """The fleet's backend (Redis or the SQLite file) cannot be reached; nothing was changed."""


class InvalidMessage(FleetError, ValueError):
    """A message was refused before anything was enqueued (empty, oversize, bad agent or conversation)."""


class UnknownAgent(InvalidMessage):
    """No worker of the fleet serves an agent of that name."""


class MessageNotFound(FleetError, LookupError):
    """No message (or dead letter) with that id."""


class StaleLease(FleetError):
    """The lease was lost (expired and taken over, or already finished): the late result is discarded."""


class StoreConflict(FleetError):
    """Another conversation changed the same agent file since this turn read it; nothing was overwritten."""

    def __init__(self, message: str, *, paths: list[str] | None = None) -> None:
        super().__init__(message)
        self.paths = paths or []


class ResultTimeout(FleetError, TimeoutError):
    """`Fleet.result` waited its timeout and the message is not finished yet (it goes on)."""
