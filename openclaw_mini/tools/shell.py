"""The `exec` tool: run a shell command in the workspace, in the foreground or the background.

Each command starts from an allow-listed environment (plus what `SandboxConfig.exec_env_passthrough`
names) and, where the machine allows it, runs in its own user + PID namespace (`exec_isolation`):
it cannot see the agent process, and everything it started ends with it, `setsid` or not. Without
namespaces a timeout, a cancelled run or `ExecManager.aclose` still stops its process group and any
process carrying its environment marker. Secret values are also redacted from the output.

Output is collected through an `asyncio.SubprocessProtocol` rather than `create_subprocess_exec`
streams: that bounds memory to head + tail per stream, and tells "the shell exited" apart from
"every pipe closed", which differ when a command leaves a background child holding stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from . import exec_isolation
from .base import Tool, ToolContext, ToolError, tool

__all__ = [
    "EXEC_ENV_ALLOW",
    "EXEC_MAX_TIMEOUT_SECONDS",
    "EXEC_OUTPUT_CAP",
    "SHELL_TOOLS",
    "ExecCompleteCallback",
    "ExecIsolation",
    "ExecJob",
    "ExecManager",
    "ExecOutcome",
    "child_environment",
    "exec_",
    "is_secret_name",
    "run_command",
]

logger = logging.getLogger(__name__)

EXEC_OUTPUT_CAP = 30_000
"""Bytes of stdout + stderr shown to the model; beyond it the middle is cut (head and tail kept)."""
EXEC_MAX_TIMEOUT_SECONDS = 24 * 60 * 60
KILL_GRACE_SECONDS = 2.0
"""Time between SIGTERM and SIGKILL when stopping a process group."""
DRAIN_SECONDS = 0.25
"""After the shell exits, how long to wait for its pipes to close before stopping leftovers."""
TAIL_CHARS = 2_000
"""Output tail handed to `on_exec_complete` for a finished background command."""
FINISHED_JOBS_KEPT = 50

_SECRET_NAMES = frozenset({"ANTHROPIC_API_KEY", "FLUX_TOKEN"})
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")

EXEC_ENV_ALLOW = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TZ",
        "USER",
        "LOGNAME",
        "SHELL",
        "TMPDIR",
        "COLUMNS",
        "LINES",
    }
)
"""Variables a command always sees (plus every `LC_*`); anything else only when passed through by name."""

ExecIsolation = Literal["auto", "require", "off"]

ExecCompleteCallback = Callable[[str, int, str], "Awaitable[None] | None"]
"""`(exec_id, exit_code, output_tail)`: told when a background command finishes."""


def is_secret_name(name: str) -> bool:
    """Whether an environment variable looks like it holds a credential."""
    upper = name.upper()
    return upper in _SECRET_NAMES or any(marker in upper for marker in _SECRET_MARKERS)


def child_environment(
    base: Mapping[str, str] | None = None, passthrough: Iterable[str] = ()
) -> dict[str, str]:
    """The environment for a command: the allow-listed variables of `base` (default `os.environ`)
    and those named in `passthrough` (exact names; the user's explicit choice, secrets included)."""
    source = os.environ if base is None else base
    extra = set(passthrough)
    return {
        name: value
        for name, value in source.items()
        if name in EXEC_ENV_ALLOW or name.startswith("LC_") or name in extra
    }


def _command_env(base: Mapping[str, str], cwd: Path, passthrough: Iterable[str]) -> dict[str, str]:
    env = child_environment(base, passthrough)
    env["PWD"] = str(cwd)
    return env


def _secret_values(base: Mapping[str, str] | None = None) -> list[str]:
    source = os.environ if base is None else base
    values = {value for name, value in source.items() if is_secret_name(name) and len(value) >= 8}
    return sorted(values, key=len, reverse=True)


def _find_shell() -> str:
    if os.access("/bin/bash", os.X_OK):
        return "/bin/bash"
    return shutil.which("sh") or "/bin/sh"


_shell_path: str | None = None


async def _shell() -> str:
    """The shell every command runs through; looked up once, in a thread (it touches the disk)."""
    global _shell_path
    if _shell_path is None:
        _shell_path = await asyncio.to_thread(_find_shell)
    return _shell_path


class _Capture:
    """Keeps the first and last `half` bytes of a stream and counts the rest."""

    def __init__(self, half: int = EXEC_OUTPUT_CAP // 2) -> None:
        self.half = half
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.half:
                del self.tail[: len(self.tail) - self.half]

    def render(self, budget: int) -> str:
        """The stream as text, at most `budget` bytes of it, cutting the middle with a marker."""
        keep_head = budget // 2
        keep_tail = budget - keep_head
        if self.total == len(self.head) + len(self.tail):  # nothing was dropped yet
            whole = bytes(self.head + self.tail)
            if self.total <= budget:
                return whole.decode("utf-8", errors="replace")
            head, tail = whole[:keep_head], whole[len(whole) - keep_tail :]
        else:
            head, tail = bytes(self.head[:keep_head]), bytes(self.tail[len(self.tail) - keep_tail :])
        cut = self.total - len(head) - len(tail)
        return (
            head.decode("utf-8", errors="replace")
            + f"\n[... {cut:,} bytes cut from the middle ({self.total:,} bytes in all) ...]\n"
            + tail.decode("utf-8", errors="replace")
        )


class _ExecProtocol(asyncio.SubprocessProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.stdout = _Capture()
        self.stderr = _Capture()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        chunk = data.encode() if isinstance(data, str) else data
        (self.stdout if fd == 1 else self.stderr).feed(chunk)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class ExecOutcome:
    """What a finished command produced (output already capped)."""

    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    timeout: float = 0.0
    leftovers_killed: bool = False

    def render(self) -> str:
        """The text the model reads: a status line, then labelled stdout and stderr."""
        code = self.exit_code
        if self.timed_out:
            status = (
                f"Command timed out after {self.timeout:g} s and was stopped (it and every process it "
                f"started were killed; exit code {code}). Partial output below."
            )
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            status = f"Command FAILED: killed by {name} (exit code {code})."
        elif code != 0:
            status = f"Command FAILED with exit code {code}."
        else:
            status = "Exit code 0."
        parts = [f"{status} ({self.duration:.2f} s)"]
        if self.leftovers_killed:
            parts.append(
                "Note: processes the command left running in the background were stopped when it "
                "finished; use background=true for long-running commands."
            )
        parts.append("[stdout]\n" + (self.stdout.rstrip("\n") or "(empty)"))
        parts.append("[stderr]\n" + (self.stderr.rstrip("\n") or "(empty)"))
        return "\n".join(parts)

    def tail(self, chars: int = TAIL_CHARS) -> str:
        """The last `chars` characters of the output, for a completion note."""
        text = self.stdout.rstrip("\n")
        if self.stderr.strip():
            text = (text + "\n" if text else "") + "[stderr] " + self.stderr.rstrip("\n")
        if self.timed_out:
            text = f"[timed out after {self.timeout:g} s] " + text
        return text if len(text) <= chars else "…" + text[-chars:]


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        logger.warning("exec: not allowed to signal process group %s", pgid)
        return False
    return True


async def _wait(future: asyncio.Future[None], seconds: float) -> bool:
    """Wait for `future` up to `seconds` without cancelling it; True when it is done."""
    if not future.done():
        await asyncio.wait({future}, timeout=seconds)
    return future.done()


async def _stop_group(pgid: int, exited: asyncio.Future[None], grace: float) -> None:
    """SIGTERM the group, give it `grace` seconds, then SIGKILL whatever is left."""
    if _signal_group(pgid, signal.SIGTERM):
        await _wait(exited, grace)
        _signal_group(pgid, signal.SIGKILL)
    await _wait(exited, 5.0)


def _split_budget(out_total: int, err_total: int, cap: int = EXEC_OUTPUT_CAP) -> tuple[int, int]:
    if out_total + err_total <= cap:
        return out_total, err_total
    half = cap // 2
    if out_total < half:
        return out_total, cap - out_total
    if err_total < half:
        return cap - err_total, err_total
    return half, cap - half


@dataclass
class _Launch:
    """A spawned command and how it is isolated."""

    transport: asyncio.SubprocessTransport
    protocol: _ExecProtocol
    report_fd: int | None = None
    """Read end of the namespace init's report pipe (namespace mode)."""
    marker: str | None = None
    """The command's environment marker (fallback mode)."""

    def read_report(self) -> tuple[int, bool] | None:
        """(exit code, something was left running) from the namespace init, if it reported."""
        if self.report_fd is None:
            return None
        fd, self.report_fd = self.report_fd, None
        try:
            os.set_blocking(fd, False)
            raw = os.read(fd, 64)
        except OSError:
            return None
        finally:
            os.close(fd)
        try:
            status, left = raw.split()
            return os.waitstatus_to_exitcode(int(status)), left == b"1"
        except ValueError:
            return None


_fallback_hardened = False


def _harden_fallback() -> None:
    global _fallback_hardened
    if not _fallback_hardened:
        _fallback_hardened = True
        if not exec_isolation.make_process_undumpable():
            logger.warning("exec: could not make the agent process non-dumpable (prctl unavailable)")


async def _spawn(command: str, cwd: Path, env: Mapping[str, str], isolation: ExecIsolation) -> _Launch:
    loop = asyncio.get_running_loop()
    child_env = dict(env)
    argv: list[str] = [await _shell(), "-c", command]
    marker: str | None = None
    report_r: int | None = None
    report_w: int | None = None
    probe = await asyncio.to_thread(exec_isolation.isolation) if isolation != "off" else None
    if probe is not None and probe.namespaces:
        report_r, report_w = os.pipe()
        argv = [*probe.prefix, str(report_w), *argv]
    else:
        if probe is not None and isolation == "require":
            raise ToolError(
                f"Commands must run in their own namespace (SandboxConfig(exec_isolation='require')), "
                f"but {probe.reason}."
            )
        if probe is not None:
            exec_isolation.warn_fallback(probe.reason)
        _harden_fallback()
        marker = secrets.token_hex(12)
        child_env[exec_isolation.EXEC_MARKER_VARIABLE] = marker
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ExecProtocol(loop),
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=child_env,
            start_new_session=True,
            pass_fds=() if report_w is None else (report_w,),
        )
    except OSError as exc:
        if report_r is not None:
            os.close(report_r)
        raise ToolError(f"Could not start the shell in {cwd}: {exc.strerror or exc}") from None
    finally:
        if report_w is not None:
            os.close(report_w)
    return _Launch(transport, protocol, report_r, marker)


async def _supervise(
    launch: _Launch, command: str, time_limit: float, started: float, redact: list[str]
) -> ExecOutcome:
    """Wait for a spawned command, enforcing the timeout; cancellation kills everything it started."""
    transport, protocol = launch.transport, launch.protocol
    pgid = transport.get_pid()
    timed_out = False
    leftovers = False
    report: tuple[int, bool] | None = None
    try:
        if not await _wait(protocol.exited, time_limit):
            timed_out = True
            await _stop_group(pgid, protocol.exited, KILL_GRACE_SECONDS)
        drained = await _wait(protocol.closed, DRAIN_SECONDS)
        if launch.marker is not None:
            # No namespace: the shell is gone, but what it started may still run, in its process
            # group (`server >log 2>&1 &`, or holding stdout open) or outside it (`setsid`).
            if not drained or _group_has_live_members(pgid):
                leftovers = True
                _signal_group(pgid, signal.SIGKILL)
            if await asyncio.to_thread(exec_isolation.kill_marked, launch.marker):
                leftovers = True
        elif not drained:  # the namespace is gone, so nothing should hold the pipes; be sure
            _signal_group(pgid, signal.SIGKILL)
        if not drained:
            await _wait(protocol.closed, 1.0)
    except BaseException:
        _signal_group(pgid, signal.SIGKILL)
        if launch.marker is not None:
            exec_isolation.kill_marked(launch.marker)
        # Reap it before the cancellation goes on: a loop closed before the child watcher reports
        # the exit leaves a process that Python warns is "still running".
        with contextlib.suppress(asyncio.CancelledError):
            await _wait(protocol.exited, 5.0)
        raise
    finally:
        transport.close()
        report = launch.read_report()
    code = transport.get_returncode()
    if report is not None:
        code, left = report
        leftovers = leftovers or left
    out_budget, err_budget = _split_budget(protocol.stdout.total, protocol.stderr.total)
    stdout = _redact(protocol.stdout.render(out_budget), redact)
    stderr = _redact(protocol.stderr.render(err_budget), redact)
    return ExecOutcome(
        command=command,
        exit_code=code if code is not None else -int(signal.SIGKILL),
        stdout=stdout,
        stderr=stderr,
        duration=time.monotonic() - started,
        timed_out=timed_out,
        timeout=time_limit,
        leftovers_killed=leftovers and not timed_out,
    )


def _group_has_live_members(pgid: int) -> bool:
    """Whether any non-zombie process is still in the group (zombies may wait for a lazy init)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = raw[raw.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _redact(text: str, values: list[str]) -> str:
    """Replace secret values, including a part of one cut in two by the output cap's marker."""
    for value in values:
        if value in text:
            text = text.replace(value, "[redacted]")
        if "\n[... " not in text:
            continue
        for size in range(len(value) - 1, _MIN_SECRET_PART - 1, -1):
            head_part, tail_part = value[:size], value[-size:]
            text = text.replace(head_part + "\n[... ", "[redacted]\n[... ")
            text = text.replace(" ...]\n" + tail_part, " ...]\n[redacted]")
    return text


_MIN_SECRET_PART = 6
"""A secret's piece at least this long at a cut is redacted too (shorter ones identify nothing)."""


async def run_command(
    command: str,
    cwd: Path,
    *,
    time_limit: float = 60,
    env: Mapping[str, str] | None = None,
    passthrough: Iterable[str] = (),
    isolation: ExecIsolation = "auto",
) -> ExecOutcome:
    """Run `command` with the shell in `cwd` and wait for it (the engine behind `exec`).

    The command sees the allow-listed variables of `env` (default `os.environ`) plus those named in
    `passthrough`; secret values of `env` are also redacted from the output. `isolation` is
    `SandboxConfig.exec_isolation`.
    """
    base = os.environ if env is None else env
    started = time.monotonic()
    launch = await _spawn(command, cwd, _command_env(base, cwd, passthrough), isolation)
    return await _supervise(launch, command, time_limit, started, _secret_values(base))


@dataclass
class ExecJob:
    """A background command tracked by `ExecManager`."""

    exec_id: str
    command: str
    pid: int
    started_at: float
    task: asyncio.Task[ExecOutcome] | None = field(default=None, repr=False)
    outcome: ExecOutcome | None = None

    @property
    def running(self) -> bool:
        return self.outcome is None and self.task is not None and not self.task.done()


class ExecManager:
    """Registry of background commands; `aclose()` kills every group still running.

    The Agent creates one, hands it to tools as `ctx.exec_manager` and awaits `aclose()` when it closes.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, ExecJob] = {}
        self._closed = False

    def get(self, exec_id: str) -> ExecJob | None:
        return self._jobs.get(exec_id)

    def jobs(self) -> list[ExecJob]:
        return list(self._jobs.values())

    def running(self) -> list[ExecJob]:
        return [job for job in self._jobs.values() if job.running]

    async def start(
        self,
        command: str,
        cwd: Path,
        *,
        time_limit: float,
        env: Mapping[str, str] | None = None,
        on_complete: ExecCompleteCallback | None = None,
        passthrough: Iterable[str] = (),
        isolation: ExecIsolation = "auto",
    ) -> ExecJob:
        """Spawn `command` and return at once; `on_complete` (sync or async) is told when it finishes."""
        if self._closed:
            raise ToolError("The agent is shutting down; background commands can no longer start.")
        base = os.environ if env is None else env
        started = time.monotonic()
        launch = await _spawn(command, cwd, _command_env(base, cwd, passthrough), isolation)
        exec_id = self._new_id()
        job = ExecJob(
            exec_id=exec_id, command=command, pid=launch.transport.get_pid(), started_at=time.time()
        )
        self._jobs[exec_id] = job
        job.task = asyncio.create_task(
            self._watch(job, launch, time_limit, started, _secret_values(base), on_complete),
            name=f"openclaw-mini {exec_id}",
        )
        job.task.add_done_callback(_log_failure)
        return job

    def _new_id(self) -> str:
        while True:
            exec_id = f"exec-{secrets.token_hex(4)}"
            if exec_id not in self._jobs:
                return exec_id

    async def _watch(
        self,
        job: ExecJob,
        launch: _Launch,
        time_limit: float,
        started: float,
        redact: list[str],
        on_complete: ExecCompleteCallback | None,
    ) -> ExecOutcome:
        outcome = await _supervise(launch, job.command, time_limit, started, redact)
        job.outcome = outcome
        self._forget_old()
        if on_complete is not None:
            try:
                result = on_complete(job.exec_id, outcome.exit_code, outcome.tail())
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("on_exec_complete failed for %s", job.exec_id)
        return outcome

    def _forget_old(self) -> None:
        finished = [key for key, job in self._jobs.items() if job.outcome is not None]
        for key in finished[:-FINISHED_JOBS_KEPT]:
            del self._jobs[key]

    async def kill(self, exec_id: str) -> bool:
        """Stop one background command and everything it started; False if it is not running."""
        job = self._jobs.get(exec_id)
        if job is None or not job.running or job.task is None:
            return False
        job.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job.task
        return True

    async def aclose(self) -> None:
        """Kill every running background command and wait for them; no callbacks fire."""
        self._closed = True
        tasks = [job.task for job in self._jobs.values() if job.task is not None and not job.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _log_failure(task: asyncio.Task[ExecOutcome]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background exec task failed", exc_info=task.exception())


# exec keeps its own deadline (the call's `timeout`); the generic one only backs it up.
@tool(name="exec", group="runtime", timeout_seconds=EXEC_MAX_TIMEOUT_SECONDS + 60)
async def exec_(
    command: str,
    ctx: ToolContext,
    timeout: int = 60,  # noqa: ASYNC109  # the name the model sees, not an asyncio deadline
    background: bool = False,
) -> str:
    """Run a shell command (bash) in the workspace and return its exit code, stdout and stderr.

    Output over 30,000 bytes keeps its head and tail. With background=true the command starts and
    this returns an id at once; you are told its exit code and output tail when it finishes.

    Args:
        command: The shell command line, run with `bash -c` in the workspace folder.
        timeout: Seconds before the command and everything it started are killed (also in background).
        background: Start the command and return immediately instead of waiting for it.
    """
    if not command.strip():
        raise ToolError("command is empty.")
    if not 1 <= timeout <= EXEC_MAX_TIMEOUT_SECONDS:
        raise ToolError(f"timeout must be between 1 and {EXEC_MAX_TIMEOUT_SECONDS} seconds, got {timeout}.")
    cwd = ctx.sandbox.workspace
    passthrough = ctx.sandbox.config.exec_env_passthrough
    isolation = ctx.sandbox.config.exec_isolation
    if not background:
        outcome = await run_command(
            command, cwd, time_limit=timeout, passthrough=passthrough, isolation=isolation
        )
        return outcome.render()
    manager = ctx.service("exec_manager")
    if manager is None:  # a tool used on its own: the context's owner closes it
        manager = ctx.exec_manager = ExecManager()
    if not isinstance(manager, ExecManager):
        raise ToolError(
            "Background commands are unavailable: the context's exec_manager is not an ExecManager."
        )
    heartbeat, extras = ctx.heartbeat, ctx.extras

    async def notify(exec_id: str, exit_code: int, tail: str) -> None:
        if heartbeat is not None:
            heartbeat.notify_exec(exec_id, exit_code, tail)
        # A callback in extras is looked up at completion time, so one registered later still hears it.
        callback = extras.get("on_exec_complete")
        if callback is not None:
            result = callback(exec_id, exit_code, tail)
            if inspect.isawaitable(result):
                await result

    job = await manager.start(
        command, cwd, time_limit=timeout, on_complete=notify, passthrough=passthrough, isolation=isolation
    )
    return (
        f"Started background command {job.exec_id} (pid {job.pid}, timeout {timeout} s). "
        "Its exit code and the tail of its output will be reported when it finishes."
    )


SHELL_TOOLS: list[Tool] = [exec_]
