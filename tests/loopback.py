"""A file server on 127.0.0.1 for the download tests: Range requests, counted requests and bytes, faults on demand.

http.server's SimpleHTTPRequestHandler ignores Range, so resuming could not be tested against it.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A POST route: (request) -> (status, headers, body)
Route = Callable[["Request"], tuple[int, dict[str, str], bytes]]
LAST_MODIFIED = email.utils.formatdate(1_700_000_000, usegmt=True)


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class LoopbackServer:
    """Serves ``files`` (path -> bytes) with Range support; ``drop_after[path] = n`` cuts the next GET after n bytes;
    ``pace[path] = (n, seconds)`` sends the body n bytes at a time, that long apart (a slow mirror);
    ``logins[path] = (user, password)`` answers 401 to a request without that HTTP Basic login."""

    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True
    drop_after: dict[str, int] = field(default_factory=dict)
    pace: dict[str, tuple[int, float]] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    post_routes: dict[str, Route] = field(default_factory=dict)
    logins: dict[str, tuple[str, str]] = field(default_factory=dict)
    requests: Counter = field(default_factory=Counter)
    bytes_served: Counter = field(default_factory=Counter)
    log: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def total_requests(self) -> int:
        return sum(self.requests.values())

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def free_port() -> int:
    """A loopback port nothing listens on (a race with other processes is possible but harmless in tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port_url(path: str = "/file") -> str:
    """An address on loopback where nothing listens: connecting is refused at once."""
    return f"http://127.0.0.1:{free_port()}{path}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_owner: LoopbackServer
    head_only = False  # answering a HEAD: the GET's status and headers, no body

    def log_message(self, format, *args) -> None:  # keep test output quiet
        pass

    def _record(self, body: bytes = b"") -> Request:
        parts = urllib.parse.urlsplit(self.path)
        request = Request(self.command, parts.path, parts.query, dict(self.headers.items()), body)
        self.server_owner.log.append(request)
        self.server_owner.requests[parts.path] += 1
        return request

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = self._record(body)
        route = self.server_owner.post_routes.get(request.path)
        if route is None:
            return self._reply(404, {}, b"no such route")
        status, headers, payload = route(request)
        self._reply(status, headers, payload)

    def do_HEAD(self) -> None:
        self.head_only = True
        self.do_GET()

    def do_GET(self) -> None:
        owner = self.server_owner
        request = self._record()
        if request.path in owner.status:
            return self._reply(owner.status[request.path], {}, b"")
        if request.path in owner.logins:
            wanted = "Basic " + base64.b64encode(":".join(owner.logins[request.path]).encode()).decode()
            if request.headers.get("Authorization") != wanted:
                return self._reply(401, {"WWW-Authenticate": 'Basic realm="mirror"'}, b"login required")
        if request.path not in owner.files:
            return self._reply(404, {}, b"not found")
        data = owner.files[request.path]
        start, status, headers = 0, 200, {"ETag": '"' + hashlib.sha256(data).hexdigest()[:16] + '"',
                                          "Last-Modified": LAST_MODIFIED}
        if owner.ranges:
            headers["Accept-Ranges"] = "bytes"
            wanted = self.headers.get("Range", "")
            if wanted.startswith("bytes=") and wanted.endswith("-"):
                start = int(wanted[len("bytes="):-1])
                if start >= len(data):
                    return self._reply(416, {"Content-Range": f"bytes */{len(data)}"}, b"")
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        cut = None if self.head_only else owner.drop_after.pop(request.path, None)
        self._reply(status, headers, body, cut=cut)

    def _reply(self, status: int, headers: dict[str, str], body: bytes, cut: int | None = None) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.head_only:
            return
        sent = body if cut is None else body[:cut]
        # Counted before writing: once the last byte is out the client may return and a test read the
        # counter before this thread gets to run again (a race CI once lost).
        path = urllib.parse.urlsplit(self.path).path
        chunk, delay = self.server_owner.pace.get(path, (len(sent) or 1, 0.0))
        for start in range(0, len(sent), chunk):
            if start:
                time.sleep(delay)
            self.server_owner.bytes_served[path] += len(sent[start:start + chunk])
            try:
                self.wfile.write(sent[start:start + chunk])
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client went away (killed, in some tests)
                self.close_connection = True
                return
        if cut is not None:
            # Promise the whole body, send part of it, hang up: what a dropped connection looks like.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
