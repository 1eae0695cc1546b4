"""What the service-backed tool groups (memory, state) share: their service from the context, made
once when a tool runs on its own, and their JSON replies."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from .base import ToolContext, ToolError

__all__ = ["context_service", "json_reply"]

T = TypeVar("T")

_create_lock = threading.Lock()


def context_service(
    ctx: ToolContext, name: str, kind: type[object], create: Callable[[], T], label: str
) -> T:
    """`ctx.<name>`; without one (a tool used on its own, no agent) `create()` makes it once and it
    is kept on that context, whose owner closes it. `label` names it in the errors the model reads."""
    service = ctx.service(name)
    if service is None:
        with _create_lock:  # two tools of one run racing to create it would leak one
            service = ctx.service(name)
            if service is None:
                try:
                    service = create()
                except (OSError, ValueError) as exc:  # no workspace, a malformed URL
                    raise ToolError(f"{label} is not available for this workspace: {exc}") from None
                setattr(ctx, name, service)
    if not isinstance(service, kind):
        raise ToolError(f"{label} is not available: the context's {name} service is not a {kind.__name__}.")
    return cast(T, service)  # checked against `kind`, the type `create` makes


def json_reply(value: Any) -> str:
    """The tools' reply text: readable JSON, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, indent=2)
