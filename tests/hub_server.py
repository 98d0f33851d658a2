"""A test-only stand-in for huggingface.co (tests of the weights download; never the product).

http.server on 127.0.0.1 in the test process, answering the two requests huggingface_hub and the
backend's downloader make — HEAD and a (ranged) GET of ``/<repo>/resolve/<revision>/<file>`` —
with the hub's headers (X-Repo-Commit, X-Linked-Etag, X-Linked-Size), optionally refusing as a
gated repo does (403, X-Error-Code: GatedRepo). Point HF_ENDPOINT at ``LocalHub.url``. Standard
library only: the backend's tests and the Blender tests both use it.
"""

import hashlib
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO, FILE, COMMIT = "stabilityai/sp4d", "sp4d.safetensors", "0123456789abcdef0123456789abcdef01234567"


class LocalHub:
    """A file served like the hub serves one: metadata headers, Range requests, optionally gated,
    throttled (``rate`` bytes/s) so that a download can be cancelled half way."""

    def __init__(self, payload: bytes, rate: float | None = None, gated: bool = False, etag: str | None = None,
                 repo: str = REPO, file: str = FILE):
        self.payload, self.rate, self.gated = payload, rate, gated
        self.repo, self.file = repo, file  # the one file served (SP4D's by default)
        self.etag = etag or hashlib.sha256(payload).hexdigest()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_GET(self):
                hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _answer(self, h, body: bool):
        self.requests.append((h.command, h.path, h.headers.get("Range")))
        if h.path != f"/{self.repo}/resolve/main/{self.file}":
            h.send_response(404)
            h.send_header("X-Error-Code", "EntryNotFound")
            h.end_headers()
            return
        if self.gated:
            h.send_response(403)
            h.send_header("X-Error-Code", "GatedRepo")
            h.send_header("X-Error-Message", f"Access to model {self.repo} is restricted")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        start = 0
        m = re.match(r"bytes=(\d+)-$", h.headers.get("Range") or "")
        if m and body:
            start = int(m.group(1))
        data = self.payload[start:]
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("ETag", f'"{self.etag}"')
        h.send_header("X-Linked-Etag", f'"{self.etag}"')
        h.send_header("X-Linked-Size", str(len(self.payload)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(data)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        h.end_headers()
        if not body:
            return
        step = 64 * 1024
        try:
            for i in range(0, len(data), step):
                h.wfile.write(data[i:i + step])
                if self.rate:
                    time.sleep(step / self.rate)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: a cancel

    def close(self):
        self.server.shutdown()
        self.server.server_close()
