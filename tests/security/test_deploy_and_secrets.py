"""Production settings pass `manage.py check --deploy`; secrets come only from the environment and never
reach a log, a page, an error message or a settings repr.

The secret-leak test points the three engines (writer, brand embedder, teacher) at a fake
OpenAI-compatible provider that echoes the Authorization header back in its errors, the worst a
provider can do, and then looks for the keys everywhere a run leaves text: log records (tracebacks
included), printed output, stored error fields, the pages that show them, and Django's error pages.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.core.handlers.exception import response_for_exception
from django.test import Client, RequestFactory
from django.urls import reverse

from brands import embedder as brand_embedder
from brands import services as brand_services
from brands.embedder import EmbedderSettings
from mesu_web.errors import ApplicationError, EngineError
from tests.factories import approved_brand, run_generation, story_with_chapters
from training.teacher import TeacherSettings, get_teacher
from writer import engines
from writer import services as writer_services
from writer.engines.vllm import VLLMSettings
from writer.models import GenerationRequest

BASE_DIR = Path(__file__).resolve().parents[2]
SECRET_SETTINGS = ("WRITER_API_KEY", "TEACHER_API_KEY", "BRAND_EMBEDDING_API_KEY")
# Marker values: long, unique, and easy to find in any text.
MARKERS = {
    "WRITER_API_KEY": "sk-writer-MARKER-7c1e0f9a2b",
    "TEACHER_API_KEY": "sk-teacher-MARKER-4d8b3e6a1c",
    "BRAND_EMBEDDING_API_KEY": "sk-embed-MARKER-9a2f5c7e3d",
    "DJANGO_SECRET_KEY": "django-secret-MARKER-" + "q7Zp2Lx9Vc4Nm8Rt6Wy1Ks5Hd3Fg0Jb-",
}


def _subprocess_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_") and not k.startswith("PYTEST")}
    env.update(overrides)
    return env


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=180
    )


PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),  # 86 random characters
    "DJANGO_ALLOWED_HOSTS": "mesu.example.com",
}


# --- check --deploy -------------------------------------------------------------------------------------


def test_check_deploy_is_clean_with_production_settings():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=_subprocess_env(**PRODUCTION))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output


SHOW_SETTINGS = (
    "import django, json; django.setup(); from django.conf import settings as s; print(json.dumps({k: getattr(s, k, None) "
    "for k in ('DEBUG', 'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', "
    "'SECURE_PROXY_SSL_HEADER', 'SECURE_REDIRECT_EXEMPT')}))"
)


def _settings_in(env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS], cwd=BASE_DIR, capture_output=True, text=True, timeout=120,
        env={**env, "DJANGO_SETTINGS_MODULE": "mesu_web.settings"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_https_settings_are_production_only():
    production = _settings_in(_subprocess_env(**PRODUCTION))
    assert production["SECURE_SSL_REDIRECT"] is True and production["SECURE_HSTS_SECONDS"] == 31_536_000
    assert production["SESSION_COOKIE_SECURE"] and production["CSRF_COOKIE_SECURE"]
    assert production["SECURE_REDIRECT_EXEMPT"] == ["^healthz$"]  # a load balancer's plain-HTTP probe
    behind_proxy = _settings_in(_subprocess_env(**PRODUCTION, DJANGO_SECURE_PROXY_SSL_HEADER="true"))
    assert behind_proxy["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    # docker-compose's plain-HTTP run (DJANGO_SECURE_COOKIES=false): no redirect, no HSTS.
    plain = _settings_in(_subprocess_env(**PRODUCTION, DJANGO_SECURE_COOKIES="false"))
    assert plain["SECURE_SSL_REDIRECT"] is False and plain["SECURE_HSTS_SECONDS"] == 0
    # ./dev up (DJANGO_DEBUG=1): none of it.
    dev = _settings_in(_subprocess_env(DJANGO_DEBUG="1"))
    assert dev["DEBUG"] is True and not dev["SECURE_SSL_REDIRECT"] and not dev["SECURE_HSTS_SECONDS"]


def test_production_refuses_to_start_without_a_secret_key():
    env = _subprocess_env(DJANGO_DEBUG="0", DJANGO_ALLOWED_HOSTS="mesu.example.com")
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "The environment variable DJANGO_SECRET_KEY must be set." in result.stderr


# --- Secrets come from the environment only ----------------------------------------------------------------


def test_secrets_are_read_from_the_environment_and_have_no_default():
    env = _subprocess_env(DJANGO_DEBUG="0", DJANGO_ALLOWED_HOSTS="mesu.example.com", **MARKERS)
    code = (
        "import django, json, os; django.setup(); from django.conf import settings as s; print(json.dumps({"
        "'SECRET_KEY': s.SECRET_KEY == os.environ['DJANGO_SECRET_KEY'], "
        + ", ".join(f"'{name}': s.{name} == os.environ['{name}']" for name in SECRET_SETTINGS)
        + "}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True, timeout=120,
        env={**env, "DJANGO_SETTINGS_MODULE": "mesu_web.settings"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == dict.fromkeys(("SECRET_KEY", *SECRET_SETTINGS), True)
    for marker in MARKERS.values():  # starting up with them set prints nothing of them
        assert marker not in result.stdout + result.stderr

    source = (BASE_DIR / "mesu_web" / "settings.py").read_text()
    for name in SECRET_SETTINGS:  # read once, through the typed helper, with an empty default
        assert re.findall(rf"^{name} = (.*)$", source, re.M) == [f'env_str("{name}", "")' + _comment(source, name)]
    assert re.search(r'^SECRET_KEY = env_str\("DJANGO_SECRET_KEY", "[^"]*" if DEBUG else None\)$', source, re.M)
    assert not re.search(r"sk-[A-Za-z0-9]{16,}", source)  # no key pasted into the settings


def _comment(source: str, name: str) -> str:
    line = re.search(rf"^{name} = env_str\(\"{name}\", \"\"\)(.*)$", source, re.M)
    return line[1] if line else ""


# --- Secrets never leak -----------------------------------------------------------------------------------


class _EchoingProvider(BaseHTTPRequestHandler):
    """/<mode>/v1/...: "401" answers 401 quoting the Authorization header (as some providers do), "500"
    a 500 that dumps every request header, "garbage" a 200 that is not JSON and quotes the header."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        auth = self.headers.get("Authorization", "")
        mode = self.path.strip("/").split("/")[0]
        if mode == "401":
            body = json.dumps({"error": {"message": f"Incorrect API key provided: {auth}.", "type": "auth"}})
            status, content_type = 401, "application/json"
        elif mode == "500":
            body = json.dumps({"detail": f"upstream failed; request headers: {dict(self.headers)}"})
            status, content_type = 500, "application/json"
        else:
            body = f"<html>proxy error for {auth}</html>"
            status, content_type = 200, "text/html"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@pytest.fixture
def provider():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingProvider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def secret_settings(settings):
    settings.WRITER_API_KEY = MARKERS["WRITER_API_KEY"]
    settings.TEACHER_API_KEY = MARKERS["TEACHER_API_KEY"]
    settings.BRAND_EMBEDDING_API_KEY = MARKERS["BRAND_EMBEDDING_API_KEY"]
    settings.SECRET_KEY = MARKERS["DJANGO_SECRET_KEY"]
    settings.WRITER_ENGINE = "vllm"
    settings.WRITER_MAX_RETRIES = 1
    settings.WRITER_STREAM = False
    settings.WRITER_TOKENIZER_PATH = ""  # no local tokenizer: the engine asks the server, and estimates
    settings.BRAND_EMBEDDER = "openai"
    settings.BRAND_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
    engines.reset_caches()
    brand_embedder.reset_caches()
    yield settings
    engines.reset_caches()
    brand_embedder.reset_caches()


def _leaks(texts: list[str]) -> list[str]:
    """The markers (or a long piece of one) found in any of the texts."""
    found = []
    for name, marker in MARKERS.items():
        piece = marker.split("MARKER-")[1][:10]
        for text in texts:
            if marker in text or piece in text:
                found.append(f"{name} in …{text[max(0, text.find(piece) - 120):text.find(piece) + 40]}…")
                break
    return found


@pytest.mark.parametrize("mode", ["401", "500", "garbage"])
def test_no_key_reaches_a_log_a_page_or_an_error(mode, provider, secret_settings, users, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    secret_settings.WRITER_BASE_URL = f"{provider}/{mode}/v1"
    secret_settings.TEACHER_BASE_URL = f"{provider}/{mode}/v1"
    secret_settings.BRAND_EMBEDDING_URL = f"{provider}/{mode}/v1"

    # The writer, as the worker runs it: the service raises, Celery logs the traceback (every chained
    # exception included), the task's failure hook stores the reason, and the request page shows it.
    story = story_with_chapters(owner=users["alice"], chapters=2)
    with pytest.raises(EngineError) as failure:
        run_generation(story, users["alice"], n=1)
    logging.getLogger("celery.app.trace").error("Task raised unexpected: %r", failure.value, exc_info=failure.value)
    writer_services.generation_request_fail(request_id=GenerationRequest.objects.get().pk, error=failure.value.message)
    gen = GenerationRequest.objects.get()
    assert gen.status == GenerationRequest.Status.FAILED, gen.status
    texts += [gen.error, "".join(traceback.format_exception(failure.value))]
    client = Client()
    client.force_login(users["alice"])
    texts.append(client.get(reverse("writer:request_detail", args=[gen.pk])).content.decode())
    texts.append(repr(VLLMSettings.from_django()))

    # The brand embedder, as the embedding task runs it: the error is stored on the brand.
    brand = approved_brand(name="Tidewave", managers=[users["mia"]], description="Surfboards.")
    with pytest.raises(EngineError) as embed_failure:
        brand_services.brand_embed(brand_id=brand.pk, force=True)
    texts += [embed_failure.value.message, "".join(traceback.format_exception(embed_failure.value))]
    brand_services.brand_embedding_fail(brand_id=brand.pk, error=embed_failure.value.message)
    brand.refresh_from_db()
    texts.append(brand.embedding_error)
    manager = Client()
    manager.force_login(users["mia"])
    texts.append(manager.get(reverse("brands:brand_detail", args=[brand.slug])).content.decode())
    texts.append(repr(EmbedderSettings.from_django()))

    # The teacher, as `distill` asks it.
    teacher_settings = TeacherSettings.from_django(model="r1", max_retries=1, backoff=0.01)
    texts.append(repr(teacher_settings))
    texts.append(json.dumps(teacher_settings.public()))
    with pytest.raises(ApplicationError) as raised:
        get_teacher(teacher_settings).ask([{"role": "user", "content": "Why?"}])
    texts += [raised.value.message, "".join(traceback.format_exception(raised.value))]

    # Django's error pages: production's plain one (logged with its traceback), and the debug one, which
    # lists the settings and the request's environment (runserver passes os.environ in it).
    request = RequestFactory().get("/boom", **{name: value for name, value in MARKERS.items()})
    response = response_for_exception(request, RuntimeError("boom"))
    texts.append(response.content.decode())
    secret_settings.DEBUG = True
    debug_response = response_for_exception(request, RuntimeError("boom"))
    assert debug_response.status_code == 500 and "SECRET_KEY" in debug_response.content.decode()
    texts.append(debug_response.content.decode())
    secret_settings.DEBUG = False

    captured = capfd.readouterr()
    texts += [caplog.text, captured.out, captured.err]
    texts += [record.getMessage() for record in caplog.records]
    assert not _leaks(texts), "\n".join(_leaks(texts))
    # The reason is still there for the user, without the key.
    assert ("refused the request (HTTP 401)" if mode == "401" else "HTTP 500" if mode == "500" else "malformed") in gen.error
