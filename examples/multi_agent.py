"""Two processes coordinate through one served world state.

    python examples/multi_agent.py [--workspace DIR] [--readings 12]

The parent serves the workspace's world state over Flux's HTTP/WebSocket API on a free loopback
port (what `openclaw-mini state serve` does) and starts two child processes with `FLUX_URL`
pointing at it, so `open_world_state()` gives each of them the remote store:

- the sensor publishes a temperature reading to `lab/sensor-1` every 0.2 s, getting warmer;
- the watcher wakes on a fixed beat (like a heartbeat), reads `lab/sensor-1`, and when the
  temperature passes the threshold publishes `lab/alert`; it also follows `lab/*` live over
  the WebSocket to show that updates arrive without polling.

Neither child knows the other exists: all they share is the world state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openclaw_mini.state import EmbeddedWorldState, make_event, open_world_state

THRESHOLD = 25.0
SENSOR = "lab/sensor-1"
ALERT = "lab/alert"
SCRIPT = str(Path(__file__).resolve())


async def sensor(readings: int) -> None:
    """Publish rising temperatures, then say it is done."""
    async with open_world_state(".") as state:
        for index in range(readings):
            temperature = round(21.0 + index * 0.5, 1)
            await state.publish(
                make_event(
                    SENSOR,
                    {"temp": temperature, "unit": "C", "reading": index},
                    stream="sensors.temp",
                    source="sensor-process",
                )
            )
            print(f"[sensor]  published temp={temperature}", flush=True)
            await asyncio.sleep(0.2)
        await state.publish(
            make_event(SENSOR, {"done": True}, stream="sensors.temp", source="sensor-process")
        )


async def watcher(beat: float) -> None:
    """On every beat read the sensor; raise the alert once it is too warm."""
    async with open_world_state(".") as state:
        live_updates = 0

        async def follow() -> None:
            nonlocal live_updates
            async with state.subscribe("lab/*") as updates:
                async for update in updates:
                    live_updates += 1
                    if update.entity_id == ALERT:
                        print(f"[watcher] saw the alert arrive live: {update.properties}", flush=True)

        follower = asyncio.create_task(follow())
        try:
            while True:
                await asyncio.sleep(beat)
                reading = await state.get(SENSOR)
                if reading is None:
                    continue
                temperature = reading.properties.get("temp")
                alert = await state.get(ALERT)
                if isinstance(temperature, int | float) and temperature > THRESHOLD and alert is None:
                    await state.publish(
                        make_event(
                            ALERT,
                            {
                                "active": True,
                                "temp": temperature,
                                "threshold": THRESHOLD,
                                "source_entity": SENSOR,
                            },
                            stream="alerts",
                            source="watcher-process",
                        )
                    )
                    print(f"[watcher] beat: temp={temperature} > {THRESHOLD}, alert raised", flush=True)
                if reading.properties.get("done"):
                    break
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        print(f"[watcher] sensor finished; {live_updates} live updates seen", flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main(workspace: Path, readings: int) -> int:
    from openclaw_mini.state.server import serve_in_background

    port = _free_port()
    async with EmbeddedWorldState.for_workspace(workspace) as store:
        async with serve_in_background(store, port=port) as url:
            print(f"[server]  world state of {workspace} served at {url}", flush=True)
            env = {**os.environ, "FLUX_URL": url}
            env.pop("FLUX_TOKEN", None)
            script = SCRIPT
            children = [
                await asyncio.create_subprocess_exec(sys.executable, script, "--role", "watcher", env=env),
                await asyncio.create_subprocess_exec(
                    sys.executable, script, "--role", "sensor", "--readings", str(readings), env=env
                ),
            ]
            codes = [await child.wait() for child in children]
        final = await store.get(ALERT)
        print(f"[server]  final alert entity: {final.to_wire() if final else None}", flush=True)
        print(f"[server]  {await store.event_count()} events in the log", flush=True)
    return max(codes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["sensor", "watcher"])
    parser.add_argument("--readings", type=int, default=12)
    parser.add_argument("--beat", type=float, default=0.3, help="watcher wake-up interval in seconds")
    parser.add_argument("--workspace", type=Path)
    options = parser.parse_args()
    if options.role == "sensor":
        asyncio.run(sensor(options.readings))
    elif options.role == "watcher":
        asyncio.run(watcher(options.beat))
    elif options.workspace is not None:
        options.workspace.mkdir(parents=True, exist_ok=True)
        sys.exit(asyncio.run(main(options.workspace, options.readings)))
    else:
        with tempfile.TemporaryDirectory(prefix="multi-agent-") as folder:
            sys.exit(asyncio.run(main(Path(folder), options.readings)))
