"""Small HTTP servers of the tests' own on a free loopback port (a scripted writer server, a provider
that refuses vLLM's extensions): started in a daemon thread, stopped with `stop_loopback`."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve_on_loopback(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """The running server and its OpenAI-style base URL (http://127.0.0.1:<port>/v1)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def stop_loopback(httpd: ThreadingHTTPServer) -> None:
    httpd.shutdown()
    httpd.server_close()
