"""Browser journeys: Playwright drives Debian's Chromium (headless, `executable_path`, never a browser
that Playwright downloads) against pytest-django's live server, with a real Celery worker process and
the real vLLM CPU server on the same test database (transactional: the worker is another process).

Each journey saves screenshots of its key pages under $MESU_SCREENSHOTS/<journey>/ (default
var/screenshots/, git-ignored) and fails on any console error, uncaught page error, failed request or
HTTP 5xx answer, and on any static file that does not load.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connections

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("MESU_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(os.environ.get("MESU_SCREENSHOTS") or ROOT / "var" / "screenshots")
VIEWPORT = {"width": 1280, "height": 900}
ACTION_TIMEOUT_MS = 30_000  # a click or a page load on the busy 2-core box; slow jobs wait longer


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """Keep each phase's report on the item, so that a fixture can tell that its test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def journey_settings(request, settings, vllm_settings, tmp_path):
    """The app as `./dev up` runs it (DEBUG on), with quick generations. Set before the worker starts:
    it reads them from its environment (tests/fixtures_worker.py). A journey changes more with
    `@pytest.mark.parametrize("journey_settings", [{"NAME": value}], indirect=True)`."""
    settings.DEBUG = True  # as ./dev runs it: django-htmx's debug script is loaded too, and must load
    settings.WRITER_MAX_NEW_TOKENS = 16  # tokens per option: each generation takes seconds
    settings.WRITER_ADAPTER_DIR = tmp_path / "adapters"
    settings.TRAINING_BOOKS_DIR = tmp_path / "books"
    settings.TRAINING_DATASETS_DIR = tmp_path / "datasets"
    settings.TRAINING_RUNS_DIR = tmp_path / "runs"
    settings.TRAINING_EXPORTS_DIR = tmp_path / "exports"
    for name, value in getattr(request, "param", {}).items():
        setattr(settings, name, value)
    return settings


@pytest.fixture
def app_url(journey_settings, celery_worker_process, live_server) -> str:
    """The live app's root URL, with the worker (queues generation, embeddings, gpu) running."""
    return live_server.url


@dataclass
class Journey:
    """One browser tab through a journey: its screenshots and every error the browser saw."""

    page: object  # playwright.sync_api.Page
    base_url: str
    shots: Path
    errors: list[str] = field(default_factory=list)
    count: int = 0

    def goto(self, path: str) -> None:
        self.page.goto(self.base_url + path)

    def shot(self, name: str) -> Path:
        """Save a full-page screenshot as NN-name.png, and fail now if the browser saw an error."""
        self.count += 1
        path = self.shots / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.assert_clean()
        self.assert_assets_loaded()
        return path

    def assert_assets_loaded(self) -> None:
        """The page has its stylesheet and htmx from /static/ (a missing file is also an error above)."""
        loaded = self.page.evaluate(
            """() => ({
                htmx: typeof window.htmx === "object",
                css: [...document.styleSheets].some((s) => (s.href || "").includes("/static/") && s.cssRules.length > 0),
            })"""
        )
        assert loaded == {"htmx": True, "css": True}, f"{self.page.url} lacks its static files: {loaded}"

    def assert_clean(self) -> None:
        if self.errors:
            pytest.fail("The browser saw errors:\n" + "\n".join(self.errors), pytrace=False)

    def log_in(self, username: str, password: str) -> None:
        from playwright.sync_api import expect

        self.goto("/accounts/login/")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.locator(".topbar .who")).to_contain_text(username)

    def watch(self, page) -> None:  # noqa: ANN001 (a Page)
        def console(msg) -> None:  # noqa: ANN001
            if msg.type == "error":
                self.errors.append(f"console error on {page.url}: {msg.text} at {msg.location.get('url', '')}")

        def response(resp) -> None:  # noqa: ANN001
            if resp.status >= 500:
                self.errors.append(f"HTTP {resp.status} for {resp.request.method} {resp.url}")
            elif resp.status >= 400 and "/static/" in resp.url:
                self.errors.append(f"static file {resp.url} answered HTTP {resp.status}")

        def request_failed(req) -> None:  # noqa: ANN001
            failure = req.failure or ""
            # A poll or a load cut short by the next navigation is aborted on purpose; anything else
            # (refused, reset, timed out) is the server failing the browser.
            if "ERR_ABORTED" not in failure:
                self.errors.append(f"request failed: {req.method} {req.url}: {failure}")

        page.on("console", console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught error on {page.url}: {exc}"))
        page.on("response", response)
        page.on("requestfailed", request_failed)


@pytest.fixture
def open_journey(request, app_url, celery_worker_process, monkeypatch) -> Iterator[Callable[[str], Journey]]:
    """open_journey("author") -> a Journey on a fresh headless Chromium page, screenshots in
    $MESU_SCREENSHOTS/author/ (emptied first)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/setup_chromium.sh` (Debian's chromium package).")
    # Playwright's sync API keeps an asyncio event loop running in this thread (inside a greenlet)
    # while the test runs. Django's async-unsafe guard sees that loop and would refuse every ORM call
    # the test makes here (seeding rows, checking them) with SynchronousOnlyOperation, although no
    # coroutine ever touches the database. monkeypatch sets it for the journey only; it is undone
    # (after Playwright has stopped, since monkeypatch came first) before the next test.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    journeys: list[Journey] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            # (Playwright already starts it without the sandbox, which needs user namespaces.) A small
            # /dev/shm in a container makes Chromium's renderers crash on long pages: use /tmp.
            args=["--disable-dev-shm-usage"],
        )

        def make(name: str) -> Journey:
            shots = SCREENSHOTS / name
            shutil.rmtree(shots, ignore_errors=True)
            shots.mkdir(parents=True)
            context = browser.new_context(viewport=VIEWPORT, base_url=app_url)
            context.set_default_timeout(ACTION_TIMEOUT_MS)
            page = context.new_page()
            journey = Journey(page=page, base_url=app_url, shots=shots)
            journey.watch(page)
            journeys.append(journey)
            return journey

        try:
            yield make
        finally:
            failed = getattr(request.node, "report_call", None) is None or request.node.report_call.failed
            for journey in journeys:
                if failed:
                    try:
                        journey.page.screenshot(path=str(journey.shots / "failure.png"), full_page=True)
                    except Exception as exc:  # noqa: BLE001 (a closed page: the failure is already reported)
                        print(f"no failure screenshot: {exc}")
                journey.page.context.close()
            browser.close()
            # While Playwright's loop runs, asgiref counts this thread as async and keeps the ORM's
            # connection in a context variable: a second connection, besides the thread's own, that
            # pytest-django would never close (dropping the test database then fails). Close it here,
            # in the context that opened it.
            connections.close_all()
            if failed:
                log = celery_worker_process.log_path.read_text(errors="replace")
                print(f"--- the worker's log (last 4000 characters) ---\n{log[-4000:]}")
    if not failed:
        for journey in journeys:  # errors after the last screenshot
            journey.assert_clean()


@pytest.fixture
def samples_dir() -> Path:
    return Path(django_settings.BASE_DIR) / "samples"
