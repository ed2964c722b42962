"""Fixtures of the data-layer tests: file snapshots and a tiny local HTTP server."""

from __future__ import annotations

import http.server
import pathlib
import threading

import pytest


def snapshot(path: pathlib.Path) -> tuple[bytes, int]:
    """Bytes and mtime of a file, to prove a test left a user's file untouched."""
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.fixture
def http_server():
    """Factory: ``http_server(routes) -> base URL`` serving ``{path: (body, announced_length)}``
    on 127.0.0.1. An announced length above ``len(body)`` simulates a cut connection."""
    servers = []

    def _serve(routes: dict[str, tuple[bytes, int]]) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path not in routes:
                    self.send_error(404)
                    return
                body, length = routes[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):  # keep test output clean
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield _serve
    for server in servers:
        server.shutdown()
        server.server_close()
