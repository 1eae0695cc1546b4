"""Two agents in two processes coordinate through one served world state.

    export ANTHROPIC_API_KEY=sk-ant-...
    python examples/multi_agent.py [--workspace DIR] [--readings 8]

The parent serves the world state over Flux's HTTP/WebSocket API on a free loopback port (what
`openclaw-mini state serve` does) and starts two agent processes with `FLUX_URL` pointing at it,
so their state tools (`enable_state=True`) use the served store:

- the sensor agent is asked, once per reading, to publish a temperature to `lab/sensor-1`;
- the watcher agent runs on its heartbeat: each tick it reads `lab/sensor-1` and, once the
  temperature passes 25 °C, publishes `lab/alert` and tells you; otherwise it answers
  HEARTBEAT_OK, which is never delivered.

Neither agent knows the other exists: all they share is the world state.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
from pathlib import Path

from openclaw_mini import Agent, HeartbeatConfig, HeartbeatRequest
from openclaw_mini.state import EmbeddedWorldState

SENSOR = "lab/sensor-1"
ALERT = "lab/alert"
SCRIPT = str(Path(__file__).resolve())

WATCHER_HEARTBEAT = """\
# Heartbeat
- [ ] Read the entity lab/sensor-1 with state_get. If its temp is above 25 and the entity lab/alert
  does not exist yet (check with state_get), publish lab/alert with properties
  {"active": true, "temp": <the temperature>} using state_publish, then reply with one line saying
  the alert was raised and the temperature. In every other case reply exactly HEARTBEAT_OK.
"""


async def sensor_agent(workspace: Path, readings: int) -> None:
    async with Agent(
        workspace_dir=workspace, enable_state=True, enable_memory=False, enable_skills=False
    ) as agent:
        for index in range(readings):
            temperature = 21.0 + index
            result = await agent.run(
                "sensor",
                (
                    f"Publish this reading with state_publish: entity_id {SENSOR}, properties "
                    f'{{"temp": {temperature}, "unit": "C"}}, stream sensors.temp. Then reply "published".'
                ),
            )
            print(f"[sensor]  temp={temperature}: {result.text}", flush=True)
            await asyncio.sleep(0.3)


async def watcher_agent(workspace: Path, beat: str, patience: float) -> None:
    (workspace / "HEARTBEAT.md").write_text(WATCHER_HEARTBEAT)
    alerted = asyncio.Event()

    def deliver(text: str, request: HeartbeatRequest) -> None:
        print(f"[watcher] heartbeat ({request.reason}): {text}", flush=True)
        alerted.set()

    config = HeartbeatConfig(every=beat, active_hours=None)
    async with Agent(
        workspace_dir=workspace, heartbeat=config, enable_state=True, enable_memory=False, enable_skills=False
    ) as agent:
        agent.start_heartbeat(deliver=deliver)
        try:
            await asyncio.wait_for(alerted.wait(), timeout=patience)
        except TimeoutError:
            print("[watcher] no alert was needed", flush=True)
        await agent.stop_heartbeat()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main(workspace: Path, readings: int, beat: str) -> int:
    from openclaw_mini.state.server import serve_in_background

    port = _free_port()
    async with EmbeddedWorldState.for_workspace(workspace) as store:
        async with serve_in_background(store, port=port) as url:
            print(f"[server]  world state served at {url}", flush=True)
            env = {**os.environ, "FLUX_URL": url}
            env.pop("FLUX_TOKEN", None)
            patience = str(readings * 5 + 30)
            children = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    SCRIPT,
                    "--role",
                    "watcher",
                    "--workspace",
                    str(workspace / "watcher"),
                    "--beat",
                    beat,
                    "--patience",
                    patience,
                    env=env,
                ),
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    SCRIPT,
                    "--role",
                    "sensor",
                    "--workspace",
                    str(workspace / "sensor"),
                    "--readings",
                    str(readings),
                    env=env,
                ),
            ]
            codes = [await child.wait() for child in children]
        alert = await store.get(ALERT)
        print(f"[server]  {ALERT}: {alert.properties if alert else None}", flush=True)
    return max(codes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--role", choices=["sensor", "watcher"])
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--readings", type=int, default=8)
    parser.add_argument("--beat", default="2s", help="the watcher's heartbeat interval")
    parser.add_argument("--patience", type=float, default=60.0)
    options = parser.parse_args()
    if options.role is not None:
        options.workspace.mkdir(parents=True, exist_ok=True)
        if options.role == "sensor":
            asyncio.run(sensor_agent(options.workspace, options.readings))
        else:
            asyncio.run(watcher_agent(options.workspace, options.beat, options.patience))
    elif options.workspace is not None:
        options.workspace.mkdir(parents=True, exist_ok=True)
        sys.exit(asyncio.run(main(options.workspace, options.readings, options.beat)))
    else:
        with tempfile.TemporaryDirectory(prefix="multi-agent-") as folder:
            sys.exit(asyncio.run(main(Path(folder), options.readings, options.beat)))
