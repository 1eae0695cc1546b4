"""`schemathesis` against the gateway's own OpenAPI document: generated requests (valid and invalid,
with admin, agent and no tokens) to a real server on 127.0.0.1: no 500s, every response matches the
schema (status codes, content types, bodies), schema-valid requests are accepted. Not checked: that
every schema-violating request is refused (unknown query parameters are ignored on purpose, and the
test sets the caller's token itself). The example count is bounded to keep it well under 60 s."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection

from openclaw_mini.fleet import Fleet
from openclaw_mini.fleet.gateway import GatewayTokens, serve_gateway_in_background

TOKENS: dict[str, str] = {}


class _Background:
    """The gateway on its own event loop in a thread, so synchronous clients can call it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        fleet = await Fleet.connect(f"sqlite:///{self.root}/fleet.db")
        tokens = GatewayTokens(self.root / "tokens.json")
        TOKENS["admin"] = tokens.create(scope="admin")
        TOKENS["agent"] = tokens.create(scope="agent", agent="support")
        try:
            async with serve_gateway_in_background(fleet, tokens, stream_timeout=1.0) as url:
                self.url = url
                self._ready.set()
                await self._stop.wait()
        finally:
            await fleet.close()

    def __enter__(self) -> str:
        self._thread.start()
        assert self._ready.wait(60), "the gateway did not start within 60 s"
        if self._error is not None:
            raise self._error
        return self.url

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _Background(tmp_path_factory.mktemp("gateway")) as url:
        yield url


def test_the_gateway_keeps_its_openapi_contract(gateway_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9

    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            for who in ("admin", "agent", None):  # each generated request with each kind of caller
                headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
                case.call_and_validate(
                    base_url=gateway_url,
                    headers=headers,
                    timeout=30,
                    excluded_checks=[negative_data_rejection],
                )

        try:
            check()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid request generated"
            # e.g. GET /healthz: a route without parameters has no invalid request to make
