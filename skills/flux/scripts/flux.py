#!/usr/bin/env python3
"""Talk to a Flux-compatible world-state server over HTTP (standard library only).

Server: FLUX_URL (default http://127.0.0.1:3000). Writes send FLUX_TOKEN as a bearer token.
Every command prints JSON; on failure the server's error goes to stderr and the exit code is 1.

    flux.py publish ENTITY_ID '{"temp": 21.5}' [--stream S] [--source S] [--key K]
    flux.py batch FILE|-                 (a JSON array of events, or {"events": [...]})
    flux.py get ENTITY_ID
    flux.py list [--prefix P] [--namespace N]
    flux.py history ENTITY_ID [--limit N] [--since ISO-8601]
    flux.py delete ENTITY_ID | --prefix P | --namespace N | --ids a,b,c
    flux.py register NAME                (create a namespace; prints its token once)
    flux.py config ['{"rate_limit_enabled": false}']   (read, or change with FLUX_ADMIN_TOKEN)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["main"]

DEFAULT_URL = "http://127.0.0.1:3000"


class FluxError(Exception):
    """A failed request, with the server's own message."""


def _base_url() -> str:
    url = os.environ.get("FLUX_URL", DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise FluxError(f"FLUX_URL must start with http:// or https://, got {url!r}")
    return url


def _entity_path(entity_id: str) -> str:
    return "/api/state/entities/" + urllib.parse.quote(entity_id, safe="")


def request(
    method: str, path: str, body: Any = None, query: dict[str, str] | None = None, *, token: str | None = None
) -> Any:
    url = _base_url() + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    headers = {"Accept": "application/json", "User-Agent": "openclaw-mini-flux-skill"}
    token = token or os.environ.get("FLUX_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            text = response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except (ValueError, AttributeError):
            pass
        hint = ""
        if exc.code == 429:
            hint = f" (retry after {exc.headers.get('Retry-After', '60')} s)"
        elif exc.code == 401:
            hint = " (set FLUX_TOKEN)"
        raise FluxError(f"{method} {path} failed with {exc.code}: {detail}{hint}") from None
    except urllib.error.URLError as exc:
        raise FluxError(
            f"cannot reach {_base_url()}: {exc.reason} (is the server running? check FLUX_URL)"
        ) from None
    return json.loads(text) if text.strip() else None


def _event(entity_id: str, properties: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    event: dict[str, Any] = {
        "stream": args.stream,
        "source": args.source,
        "timestamp": int(time.time() * 1000),
        "payload": {"entity_id": entity_id, "properties": properties},
    }
    if args.key:
        event["key"] = args.key
    return event


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise FluxError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FluxError(f"{what} must be a JSON object, like '{{\"temp\": 21.5}}'")
    return value


def run(args: argparse.Namespace) -> Any:
    command = args.command
    if command == "publish":
        properties = _json_object(args.properties, "PROPERTIES")
        return request("POST", "/api/events", _event(args.entity_id, properties, args))
    if command == "batch":
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise FluxError(f"{args.file} is not valid JSON: {exc}") from None
        events = data.get("events") if isinstance(data, dict) else data
        if not isinstance(events, list):
            raise FluxError(f'{args.file} must hold a JSON array of events or {{"events": [...]}}')
        now = int(time.time() * 1000)
        for event in events:
            if isinstance(event, dict):
                event.setdefault("timestamp", now)
        return request("POST", "/api/events/batch", {"events": events})
    if command == "get":
        return request("GET", _entity_path(args.entity_id))
    if command == "list":
        query = {
            key: value for key, value in (("prefix", args.prefix), ("namespace", args.namespace)) if value
        }
        return request("GET", "/api/state/entities", query=query)
    if command == "history":
        query = {"entity": args.entity_id, "limit": str(args.limit)}
        query["since"] = args.since or "1970-01-01T00:00:00Z"
        return request("GET", "/api/events", query=query)
    if command == "delete":
        chosen = [value for value in (args.entity_id, args.prefix, args.namespace, args.ids) if value]
        if len(chosen) != 1:
            raise FluxError("delete takes exactly one of ENTITY_ID, --prefix, --namespace or --ids")
        if args.entity_id:
            return request("DELETE", _entity_path(args.entity_id))
        if args.ids:
            body: dict[str, Any] = {
                "entity_ids": [item.strip() for item in args.ids.split(",") if item.strip()]
            }
        elif args.prefix:
            body = {"prefix": args.prefix}
        else:
            body = {"namespace": args.namespace}
        return request("POST", "/api/state/entities/delete", body)
    if command == "register":
        return request("POST", "/api/namespaces", {"name": args.name})
    if command == "config":
        if args.update is None:
            return request("GET", "/api/admin/config")
        update = _json_object(args.update, "UPDATE")
        return request("PUT", "/api/admin/config", update, token=os.environ.get("FLUX_ADMIN_TOKEN"))
    raise FluxError(f"unknown command {command!r}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flux.py", description="Flux world-state client (FLUX_URL, FLUX_TOKEN)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    publish = commands.add_parser("publish", help="set properties on an entity")
    publish.add_argument("entity_id")
    publish.add_argument("properties", help="JSON object, e.g. '{\"temp\": 21.5}'")
    publish.add_argument("--stream", default="agents", help="lowercase, dot-separated (default: agents)")
    publish.add_argument("--source", default=os.environ.get("OPENCLAW_MINI_AGENT_ID", "agent"))
    publish.add_argument("--key", default=None)
    batch = commands.add_parser("batch", help="publish many events from a JSON file ('-' = stdin)")
    batch.add_argument("file")
    get = commands.add_parser("get", help="one entity")
    get.add_argument("entity_id")
    listing = commands.add_parser("list", help="entities, optionally filtered")
    listing.add_argument("--prefix")
    listing.add_argument("--namespace")
    history = commands.add_parser("history", help="an entity's events, newest first")
    history.add_argument("entity_id")
    history.add_argument("--limit", type=int, default=20)
    history.add_argument("--since", help="ISO 8601 time (default: everything)")
    delete = commands.add_parser("delete", help="delete one entity or many")
    delete.add_argument("entity_id", nargs="?")
    delete.add_argument("--prefix")
    delete.add_argument("--namespace")
    delete.add_argument("--ids", help="comma-separated entity ids")
    register = commands.add_parser("register", help="create a namespace (auth servers)")
    register.add_argument("name")
    config = commands.add_parser("config", help="the server's runtime limits (change: FLUX_ADMIN_TOKEN)")
    config.add_argument(
        "update", nargs="?", help="JSON object of fields to change, e.g. '{\"rate_limit_enabled\": false}'"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = run(args)
    except (FluxError, OSError) as exc:
        print(f"flux: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
