"""Tool definitions: the `@tool` decorator, `Tool`, `ToolContext` and `ToolRegistry`.

A tool is a plain Python function (sync or async). Its JSON schema comes from its type hints
through pydantic, its description from the docstring, so the function stays the single source of
truth. Policy and sandbox checks do not live here: see `openclaw_mini.tools.policy`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .._validation import describe_problems
from ..errors import ToolError

if TYPE_CHECKING:
    from ..memory import MemoryStore
    from ..state import WorldState
    from .policy import Sandbox
    from .sessions import SubagentHost
    from .shell import ExecManager

__all__ = ["HeartbeatHandle", "Tool", "ToolContext", "ToolError", "ToolRegistry", "tool"]


class HeartbeatHandle(Protocol):
    """What tools may do with the agent's heartbeat: wake it, and report a finished command."""

    def request(self, reason: str = "requested") -> None: ...

    def notify_exec(self, exec_id: str, exit_code: int | None, output_tail: str) -> None: ...


@dataclass
class ToolContext:
    """What a tool may know about the run that called it.

    Declare a parameter annotated `ToolContext` and the loop passes it in; it is never part of
    the schema the model sees.
    """

    workspace: Path
    session_key: str
    agent_id: str
    sandbox: Sandbox
    tool_use_id: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    """Your own handles for your own tools (`Agent.extras`); the built-in services are the typed
    fields below (for compatibility, the built-in tools still accept one here under its name)."""
    emit: Callable[[Any], None] | None = None
    """Sends a `RunEvent` to the run's stream (progress of long tools, sub-agents)."""
    memory: MemoryStore | None = None
    """The agent's memory store (None when memory is off)."""
    subagents: SubagentHost | None = None
    """Spawns sub-agents and reads this agent's sessions (None outside an agent or at max depth)."""
    heartbeat: HeartbeatHandle | None = None
    """Wakes the agent's heartbeat (a no-op handle while the heartbeat is not running)."""
    exec_manager: ExecManager | None = None
    """Background commands of this agent (closed with it)."""
    state: WorldState | None = None
    """The world state (None unless `enable_state`)."""

    def service(self, name: str) -> Any:
        """A built-in service by field name, falling back to the legacy `extras[name]`."""
        value = getattr(self, name)
        return value if value is not None else self.extras.get(name)


ToolFunction = Callable[..., Any] | Callable[..., Awaitable[Any]]


@dataclass
class Tool:
    """A callable the model can use: name, description, input JSON schema and the function."""

    name: str
    description: str
    input_schema: dict[str, Any]
    function: ToolFunction
    group: str = "custom"
    """Policy group (`fs`, `runtime`, `memory`, `sessions`, `state`, `custom`): `group:<name>` in a policy."""
    context_param: str | None = None
    args_model: type[BaseModel] | None = None
    timeout_seconds: float | None = None
    """This tool's deadline; None: the agent's `tool_timeout_seconds`."""

    @property
    def summary(self) -> str:
        """First line of the description, for the system prompt's tool list."""
        return self.description.strip().splitlines()[0] if self.description.strip() else self.name

    def definition(self) -> dict[str, Any]:
        """The Messages API `tools` entry."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Validate the model's arguments and call the function (sync functions run in a thread)."""
        kwargs: dict[str, Any] = dict(arguments)
        if self.args_model is not None:
            try:
                parsed = self.args_model.model_validate(arguments)
            except ValidationError as exc:
                raise ToolError(_describe_validation_error(self.name, exc)) from None
            kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        if self.context_param:
            kwargs[self.context_param] = context
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**kwargs)
        result = await asyncio.to_thread(self.function, **kwargs)
        if inspect.isawaitable(result):
            return await result
        return result


def _describe_validation_error(tool_name: str, exc: ValidationError) -> str:
    return f"Invalid arguments for {tool_name}: " + describe_problems(exc, "arguments")


def _docstring_parts(function: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """Split a docstring into its description and `Args:` entries (Google style)."""
    doc = inspect.getdoc(function) or ""
    description_lines: list[str] = []
    arg_docs: dict[str, str] = {}
    in_args = False
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.lower() in {"args:", "arguments:", "parameters:"}:
            in_args = True
            continue
        if in_args:
            if stripped.lower() in {"returns:", "raises:", "yields:", "examples:"}:
                in_args = False
                current = None
                continue
            name, sep, rest = stripped.partition(":")
            bare = name.split(" ")[0].strip()
            if (
                sep
                and bare.isidentifier()
                and line.startswith((" ", "\t"))
                and not line.startswith("        ")
            ):
                current = bare
                arg_docs[current] = rest.strip()
            elif current and stripped:
                arg_docs[current] += " " + stripped
            continue
        description_lines.append(line)
    return "\n".join(description_lines).strip(), arg_docs


def _build_tool(
    function: ToolFunction,
    *,
    name: str | None,
    description: str | None,
    group: str,
    timeout_seconds: float | None = None,
) -> Tool:
    hints = get_type_hints(function, include_extras=True)
    signature = inspect.signature(function)
    doc_description, arg_docs = _docstring_parts(function)
    fields: dict[str, Any] = {}
    context_param: str | None = None
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"@tool {function.__name__}: *args/**kwargs cannot be described to a model")
        annotation = hints.get(param.name, Any)
        if annotation is ToolContext:
            context_param = param.name
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        from pydantic import Field

        fields[param.name] = (annotation, Field(default, description=arg_docs.get(param.name)))
    model_name = "".join(part.title() for part in (name or function.__name__).split("_")) + "Args"
    args_model = create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
    schema = args_model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("properties", {})
    return Tool(
        name=name or function.__name__,
        description=description or doc_description or (name or function.__name__),
        input_schema=schema,
        function=function,
        group=group,
        context_param=context_param,
        args_model=args_model,
        timeout_seconds=timeout_seconds,
    )


@overload
def tool(function: ToolFunction, /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    group: str = "custom",
    timeout_seconds: float | None = None,
) -> Callable[[ToolFunction], Tool]: ...


def tool(
    function: ToolFunction | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    group: str = "custom",
    timeout_seconds: float | None = None,
) -> Tool | Callable[[ToolFunction], Tool]:
    """Turn a typed function into a `Tool` (`timeout_seconds`: its deadline, default the agent's).

    ```python
    @tool
    def add(a: int, b: int) -> int:
        \"\"\"Add two numbers.\"\"\"
        return a + b
    ```
    """
    options: dict[str, Any] = {
        "name": name,
        "description": description,
        "group": group,
        "timeout_seconds": timeout_seconds,
    }
    if function is not None:
        return _build_tool(function, **options)

    def decorate(inner: ToolFunction) -> Tool:
        return _build_tool(inner, **options)

    return decorate


class ToolRegistry:
    """An ordered set of tools by name; a later registration with the same name replaces the earlier."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.add(item)

    def add(self, item: Tool) -> None:
        if not isinstance(item, Tool):
            raise TypeError(f"expected a Tool (use @tool), got {type(item).__name__}")
        self._tools[item.name] = item

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools


def render_tool_output(value: Any) -> str | list[dict[str, Any]]:
    """Turn whatever a tool returned into `tool_result` content (text, or content blocks as given)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, dict) and "type" in item for item in value):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json(indent=2)
    try:
        return json.dumps(value, ensure_ascii=False, indent=2, default=str)
    except (TypeError, ValueError):
        return str(value)
