"""Keeping `exec` commands away from the agent process, and ending all they start.

Preferred: every command runs under `unshare` in a new user + PID + mount namespace with a fresh
/proc. There the agent process does not exist (no `/proc/$PPID/environ`, no `/proc/<pid>/mem`), the
command holds no capability outside the namespace (so it cannot unmount that /proc to look behind
it), and when the namespace's first process ends the kernel kills every other one in it, including
those that called `setsid`. That first process is a small Python "init" (`_INIT`): it forwards
SIGTERM to the command, reaps orphans, and reports the command's real wait status and whether
anything was still running when the shell exited (fd 3), since a namespace init cannot die of a
signal it sends itself.

Fallback (no `unshare`, or user namespaces disabled, e.g. by an AppArmor or sysctl policy): the
agent process is made non-dumpable (`PR_SET_DUMPABLE=0`), which hides its environ and memory from
other processes of the same uid that lack CAP_SYS_PTRACE (not from root), and every command carries
a random marker in its environment that `kill_marked` uses to find and kill descendants that left
its process group. A warning says which of these holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EXEC_MARKER_VARIABLE", "Isolation", "isolation", "kill_marked", "make_process_undumpable"]

logger = logging.getLogger(__name__)

EXEC_MARKER_VARIABLE = "OPENCLAW_MINI_EXEC_ID"
"""Set in a command's environment in fallback mode, to find its descendants in /proc."""
NOBODY = 65534

_INIT = r"""
import os, signal, sys
report = int(sys.argv[1])
def forward(sig, frame):
    try:
        os.kill(-1, sig)
    except OSError:
        pass
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, forward)
child = os.fork()
if child == 0:
    os.close(report)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
status = 127 << 8
while True:
    try:
        pid, got = os.wait()
    except ChildProcessError:
        break
    if pid == child:
        status = got
        break
left = 0
for name in os.listdir("/proc"):
    if name.isdigit() and name != "1":
        try:
            with open(f"/proc/{name}/stat") as handle:
                raw = handle.read()
        except OSError:
            continue
        if raw[raw.rfind(")") + 2 :][:1] != "Z":
            left = 1
            break
os.write(report, f"{status} {left}\n".encode())
code = os.waitstatus_to_exitcode(status)
sys.exit(128 - code if code < 0 else code)
"""


@dataclass(frozen=True)
class Isolation:
    """How `exec` commands are isolated on this machine (probed once per process)."""

    namespaces: bool
    prefix: tuple[str, ...]
    """argv placed before the shell: `unshare ... python -c INIT <fd>`; empty without namespaces."""
    reason: str
    """Why namespaces are unavailable (empty when they work)."""


_lock = threading.Lock()
_probed: Isolation | None = None
_warned = False


def _unshare_argv() -> list[str] | None:
    unshare = shutil.which("unshare") or (
        "/usr/bin/unshare" if os.access("/usr/bin/unshare", os.X_OK) else None
    )
    if unshare is None:
        return None
    uid, gid = os.geteuid(), os.getegid()
    # Root inside the namespace would hold capabilities there (enough to unmount the fresh /proc);
    # a root agent's commands run as `nobody` in the namespace instead. File access is unchanged:
    # the kernel still checks the real uid, so the workspace stays writable.
    inner_uid, inner_gid = (NOBODY, NOBODY) if uid == 0 else (uid, gid)
    return [
        unshare,
        "--user",
        f"--map-user={inner_uid}",
        f"--map-group={inner_gid}",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
    ]


def isolation() -> Isolation:
    """Probe (once) whether commands can run in their own user + PID namespace."""
    global _probed
    with _lock:
        if _probed is not None:
            return _probed
        argv = _unshare_argv()
        if argv is None:
            _probed = Isolation(False, (), "the `unshare` program (util-linux) is not installed")
            return _probed
        prefix = (*argv, sys.executable, "-I", "-S", "-c", _INIT)
        # The probe runs the real thing (namespace, init, shell): /proc/3 must not exist there.
        read_end, write_end = os.pipe()
        try:
            probe = subprocess.run(
                [*prefix, str(write_end), "/bin/sh", "-c", "test ! -e /proc/3"],
                capture_output=True,
                timeout=30,
                check=False,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                pass_fds=(write_end,),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _probed = Isolation(False, (), f"`unshare` failed to start: {exc}")
            return _probed
        finally:
            os.close(read_end)
            os.close(write_end)
        if probe.returncode != 0:
            detail = probe.stderr.decode(errors="replace").strip().splitlines()
            _probed = Isolation(
                False, (), f"user namespaces are unavailable ({detail[-1] if detail else probe.returncode})"
            )
            return _probed
        _probed = Isolation(True, prefix, "")
        return _probed


def warn_fallback(reason: str) -> None:
    """Log once per process what a command can still see without namespaces."""
    global _warned
    if _warned:
        return
    _warned = True
    root = os.geteuid() == 0
    logger.warning(
        "exec: commands run WITHOUT namespace isolation: %s. They get only allow-listed environment "
        "variables, and the agent process is made non-dumpable so same-uid processes cannot read its "
        "environment or memory%s.",
        reason,
        "; but this agent runs as root, so a command CAN read the agent's /proc/<pid>/environ"
        if root
        else "",
    )


def make_process_undumpable() -> bool:
    """`prctl(PR_SET_DUMPABLE, 0)` on this process; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The C library this process already runs on: no `find_library` (it may spawn `ldconfig`,
        # while this runs on the event loop, right before the first command).
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(4, 0, 0, 0, 0)) == 0  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        return False


def kill_marked(marker: str, rounds: int = 10) -> int:
    """SIGKILL every process whose environment holds `EXEC_MARKER_VARIABLE=marker`; how many.

    Repeated a few rounds, as a process may fork between one scan and the kill.
    """
    needle = f"{EXEC_MARKER_VARIABLE}={marker}".encode()
    killed = 0
    own = os.getpid()
    for _ in range(rounds):
        found = []
        with contextlib.suppress(OSError):
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or int(entry.name) == own:
                    continue
                try:
                    environ = Path(entry.path, "environ").read_bytes()
                except OSError:
                    continue
                if needle in environ.split(b"\0"):
                    found.append(int(entry.name))
        if not found:
            break
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed
