"""PostgreSQL restarting: the real web server (gunicorn, DEBUG off) answers 503 "back in a moment" while
the database is down, and 200 again as soon as it is back, without a restart of its own.

Restarting the machine's shared PostgreSQL would break everyone else's tests, so this one starts a
throwaway PostgreSQL (initdb in a temporary folder, its own port) with the test database's schema copied
in, points the web server at it, and stops and starts that one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.faults.conftest import ROOT
from tests.fixtures_redis import free_port, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]


class ThrowawayPostgres:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        # Not under pytest's tmp_path: that is private to root, and the server runs as `postgres`.
        self.folder = Path(tempfile.mkdtemp(prefix="mesu-faults-pg-"))
        self.data = self.folder / "data"
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.folder, user="postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_postgres, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                  "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: what a restart or a failover does to the clients' connections."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        subprocess.run([*self.as_postgres, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def throwaway_postgres(db) -> Iterator[ThrowawayPostgres]:
    try:
        bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("PostgreSQL's server binaries (pg_config --bindir) are not installed")
    if not (bindir / "initdb").is_file():
        pytest.skip(f"no initdb in {bindir}")
    server = ThrowawayPostgres(bindir)
    try:
        server.init()
        server.start()
        # The test database's schema (pgvector included), copied: migrating from scratch takes far longer.
        source = settings.DATABASES["default"]
        target = ["-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres"]
        subprocess.run(["createdb", *target, "web"], check=True, capture_output=True)
        dump = subprocess.run(
            ["pg_dump", "-h", source["HOST"], "-p", str(source["PORT"]), "-U", source["USER"], "-s", "-d", source["NAME"]],
            check=True, capture_output=True,
        )
        subprocess.run(["psql", "-q", *target, "-d", "web", "-v", "ON_ERROR_STOP=1"], input=dump.stdout,
                       check=True, capture_output=True)
        yield server
    finally:
        server.remove()


@pytest.fixture
def web_on(throwaway_postgres: ThrowawayPostgres, tmp_path) -> Iterator[str]:
    """gunicorn serving the app on the throwaway database, as in production (DEBUG off)."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        POSTGRES_HOST="127.0.0.1", POSTGRES_PORT=str(throwaway_postgres.port), POSTGRES_DB="web", POSTGRES_USER="postgres",
        DJANGO_DEBUG="0", DJANGO_SECRET_KEY="faults-test-" + "x" * 50, DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_SECURE_COOKIES="0",
    )
    log = tmp_path / "web.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "mesu_web.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1", "--timeout", "30"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=60, what="the web server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_web_answers_503_while_postgres_is_down_and_recovers_by_itself(throwaway_postgres, web_on):
    web = httpx.Client(base_url=web_on, timeout=10)
    assert web.get("/").status_code == 200

    throwaway_postgres.stop()
    page = web.get("/")
    assert page.status_code == 503
    assert "Back in a moment" in page.text and "Nothing you saved is lost" in page.text
    assert "Traceback" not in page.text and "OperationalError" not in page.text
    assert page.headers["Retry-After"] == "10"
    health = web.get("/healthz")
    assert health.status_code == 503 and health.json()["database"] == "down"

    throwaway_postgres.start()
    # The first request after the restart is served: its broken connection is replaced at once.
    assert web.get("/").status_code == 200
    assert web.get("/healthz").json() == {"ok": True, "database": "up"}

    # A restart while nobody asks (the connection kept by CONN_MAX_AGE goes stale unnoticed): the next
    # request still gets a 200, thanks to CONN_HEALTH_CHECKS, not a 503.
    throwaway_postgres.stop()
    throwaway_postgres.start()
    assert web.get("/").status_code == 200
