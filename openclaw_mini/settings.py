"""Settings from config files and the environment, merged by `pydantic-settings`.

Precedence, highest first: explicit values (CLI flags) > `OPENCLAW_MINI_*` environment variables
(nested with `__`, e.g. `OPENCLAW_MINI_SANDBOX__ALLOW_EXEC=true`) > the workspace's
`openclaw-mini.toml` > the user's `$XDG_CONFIG_HOME/openclaw-mini/config.toml` > defaults.
Keys are the field names of `AgentConfig` and its parts; nested models are tables
(`[sandbox] allow_exec = true`), plus `[heartbeat]` (`HeartbeatConfig`). MCP servers of the
workspace's `.mcp.json` are added below every file (a file's `[mcp_servers.NAME]` wins).

Every error names its file, key and line (or the environment variable), and all problems are
listed at once, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import AgentConfig
from .errors import ConfigError
from .heartbeat.config import HeartbeatConfig
from .mcp.config import MCP_CONFIG_FILE, load_mcp_json

__all__ = [
    "CONFIG_FILE",
    "ENV_PREFIX",
    "FileConfig",
    "Settings",
    "SettingsSource",
    "load_settings",
    "user_config_file",
]

CONFIG_FILE = "openclaw-mini.toml"
"""The workspace's config file name."""
ENV_PREFIX = "OPENCLAW_MINI_"
NOT_IN_FILES = {
    "api_key": "the API key is a secret: set ANTHROPIC_API_KEY in the environment instead",
    "workspace_dir": "the workspace is where the file lives (or --workspace on the command line)",
}
SECRET_PARTS = ("headers", "env")
"""Values under `mcp_servers.NAME.headers` / `.env` are never shown (tokens live there)."""


def user_config_file(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/openclaw-mini/config.toml` (default `~/.config/...`)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME", "").strip() or "~/.config"
    return Path(base).expanduser() / "openclaw-mini" / "config.toml"


class FileConfig(AgentConfig):
    """What a config file may hold: every `AgentConfig` field plus the `[heartbeat]` table."""

    heartbeat: HeartbeatConfig | None = None


@dataclass
class SettingsSource:
    """One place values came from, with its raw values (for `config show` and error locations)."""

    kind: str
    """`cli`, `env`, `workspace`, `user` or `mcp.json`."""
    label: str
    data: dict[str, Any] = field(default_factory=dict)
    lines: dict[tuple[str, ...], int] = field(default_factory=dict)

    def holds(self, path: tuple[str, ...]) -> bool:
        value: Any = self.data
        for part in path:
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        return True

    def is_table(self, path: tuple[str, ...]) -> bool:
        value: Any = self.data
        for part in path:
            value = value[part]
        return isinstance(value, dict)

    def where(self, path: tuple[str, ...]) -> str:
        """`file, line N`, `environment variable X` or `command line`, for this key."""
        if self.kind == "env":
            return f"environment variable {ENV_PREFIX}{'__'.join(path).upper()}"
        if self.kind == "cli":
            return "command line"
        for size in range(len(path), 0, -1):
            line = self.lines.get(path[:size])
            if line is not None:
                return f"{self.label}, line {line}"
        return self.label


@dataclass
class Settings:
    """The effective configuration and where each value came from."""

    config: AgentConfig
    heartbeat: HeartbeatConfig | None
    sources: list[SettingsSource]
    """Highest precedence first."""

    @property
    def files(self) -> list[Path]:
        return [Path(s.label) for s in self.sources if s.kind in ("workspace", "user", "mcp.json")]

    def origin(self, path: tuple[str, ...]) -> str:
        """Where the value at `path` came from: the highest source that sets it, else `default`."""
        if path == ("workspace_dir",):
            return "command line (--workspace) or the current folder"
        for source in self.sources:
            for size in range(len(path), 0, -1):
                # A prefix counts only when it was set whole (an env var holding JSON, an array).
                if source.holds(path[:size]) and (size == len(path) or not source.is_table(path[:size])):
                    return source.where(path[:size])
        return "default"

    def agent_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `Agent(...)`: `Agent(**settings.agent_kwargs(), approve=...)`."""
        return {
            "workspace_dir": self.config.workspace_dir,
            "model": self.config.model,  # `Agent(model=...)` has a default that would win over `config=`
            "config": self.config,
            "heartbeat": self.heartbeat,
        }

    def rows(self) -> list[tuple[str, str, str]]:
        """(dotted key, shown value, origin) for every leaf value; secrets masked, the key left out."""
        data = self.config.model_dump(mode="json")
        data.pop("api_key", None)
        data["workspace_dir"] = str(self.config.workspace_dir)
        heartbeat = self.heartbeat or HeartbeatConfig()
        data["heartbeat"] = heartbeat.model_dump(mode="json")
        rows = []
        for path, value in _leaves(data, ()):
            secret = len(path) >= 4 and path[0] == "mcp_servers" and path[2] in SECRET_PARTS
            shown = "***" if secret else json.dumps(value, ensure_ascii=False)
            rows.append((_dotted(path), shown, self.origin(path)))
        return rows


def _leaves(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    else:
        yield path, value


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part) for part in path)


# ------------------------------------------------------------------------------------- TOML lines

_HEADER = re.compile(r"^\s*\[\[?\s*(?P<key>[^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_BARE_OR_QUOTED = r"(?:\"(?:[^\"\\]|\\.)*\"|'[^']*'|[A-Za-z0-9_-]+)"
_KEY_LINE = re.compile(rf"^\s*(?P<key>{_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_KEY_PART = re.compile(_BARE_OR_QUOTED)


def _key_parts(text: str) -> tuple[str, ...]:
    parts = []
    for match in _KEY_PART.finditer(text):
        token = match.group(0)
        if token.startswith('"'):
            token = json.loads(token)
        elif token.startswith("'"):
            token = token[1:-1]
        parts.append(token)
    return tuple(parts)


def toml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line of each table and key in a TOML text (tomllib keeps no positions).

    Best effort on purpose: a line inside a multi-line string that looks like `key =` may be
    mistaken for a key; errors then point a few lines off, never at the wrong file.
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _key_parts(header.group("key"))
            lines.setdefault(table, number)
            continue
        key = _KEY_LINE.match(line)
        if key:
            lines.setdefault((*table, *_key_parts(key.group("key"))), number)
    return lines


# ----------------------------------------------------------------------------------------- loading


@functools.cache
def _settings_class(workspace_file: Path, user_file: Path) -> type[Any]:
    """A `BaseSettings` over `FileConfig` whose sources are the CLI values, the environment and
    the two TOML files, in that order (pydantic-settings deep-merges them)."""
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
    from pydantic_settings import TomlConfigSettingsSource as Toml

    class OpenClawSettings(FileConfig, BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
        )

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                Toml(settings_cls, toml_file=workspace_file),
                Toml(settings_cls, toml_file=user_file),
            )

    return OpenClawSettings


def _read_toml(path: Path, kind: str) -> SettingsSource | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, expected a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    source = SettingsSource(kind, str(path), data, toml_key_lines(text))
    for key, why in NOT_IN_FILES.items():
        if key in data:
            raise ConfigError(f"{source.where((key,))}: '{key}' cannot be set in a config file ({why})")
    return source


def _env_source(settings_cls: type[Any]) -> SettingsSource:
    """The `OPENCLAW_MINI_*` values, read by the same pydantic-settings source the merge uses."""
    from pydantic_settings import EnvSettingsSource

    source = EnvSettingsSource(
        settings_cls, env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=False
    )
    return SettingsSource("env", "environment", source())


def load_settings(
    workspace: str | Path = ".",
    overrides: Mapping[str, Any] | None = None,
    *,
    user_file: Path | None = None,
    read_mcp_json: bool = True,
) -> Settings:
    """The effective settings for a workspace: CLI `overrides` > env > workspace file > user file.

    Raises `ConfigError` listing every problem with its file, key and line.
    """
    root = Path(os.path.expanduser(str(workspace))).absolute()
    workspace_file = root / CONFIG_FILE
    user_path = user_file if user_file is not None else user_config_file()
    settings_cls = _settings_class(workspace_file, user_path)

    explicit = {key: value for key, value in (overrides or {}).items() if value is not None}
    sources = [SettingsSource("cli", "command line", explicit), _env_source(settings_cls)]
    for path, kind in ((workspace_file, "workspace"), (user_path, "user")):
        found = _read_toml(path, kind)
        if found is not None:
            sources.append(found)

    try:
        settings = settings_cls(**{**explicit, "workspace_dir": root})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None

    values = {name: getattr(settings, name) for name in AgentConfig.model_fields}
    values["api_key"] = settings.api_key  # from `overrides` or OPENCLAW_MINI_API_KEY, never a file
    sandbox = settings.sandbox
    if sandbox.extra_read_roots:  # relative to the workspace, not to wherever the command runs
        roots = tuple(root / Path(os.path.expanduser(str(path))) for path in sandbox.extra_read_roots)
        values["sandbox"] = sandbox.model_copy(update={"extra_read_roots": roots})
    if read_mcp_json:
        dot_mcp = load_mcp_json(root)
        if dot_mcp:
            sources.append(
                SettingsSource(
                    "mcp.json",
                    str(root / MCP_CONFIG_FILE),
                    {"mcp_servers": {name: cfg.model_dump(mode="json") for name, cfg in dot_mcp.items()}},
                )
            )
            values["mcp_servers"] = {**dot_mcp, **settings.mcp_servers}
    try:
        config = AgentConfig(**values)
    except ValidationError as exc:  # pragma: no cover - the same fields passed just above
        raise ConfigError(_describe(exc, sources)) from None
    return Settings(config=config, heartbeat=settings.heartbeat, sources=sources)


def _describe(exc: ValidationError, sources: list[SettingsSource]) -> str:
    problems = []
    for error in exc.errors():
        path = tuple(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key" + _known_keys(path[:-1])
        where = "config"
        for source in sources:
            if source.holds(path):
                where = source.where(path)
                break
        else:
            for source in sources:
                if path and source.holds(path[:1]):
                    where = source.where(path[:1])
                    break
        key = _dotted(path) if path else "(whole config)"
        problems.append(f"{where}: {key}: {message}")
    return "Invalid configuration:\n  " + "\n  ".join(problems)


def _known_keys(parent: tuple[str, ...]) -> str:
    model: Any = FileConfig
    for part in parent:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return ""
        annotation = fields[part].annotation
        model = next(
            (arg for arg in getattr(annotation, "__args__", (annotation,)) if hasattr(arg, "model_fields")),
            None,
        )
        if model is None:
            return ""
    names = sorted(name for name in model.model_fields if name not in NOT_IN_FILES)
    return f" (valid keys here: {', '.join(names)})"
