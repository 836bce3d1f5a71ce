"""A local stand-in for the Hugging Face hub: the endpoints huggingface_hub calls (model info, paths-info, tree,
resolve with HEAD and Range), over files on disk. Counts the body bytes it serves per file and logs every request
("HEAD /path"), so a test can prove that a command made none."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict[str, Path]] = {}
        self.gated: set[str] = set()
        self.served: dict[str, int] = {}
        self.sha_override: dict[str, str] = {}
        self.fail_after: dict[str, int] = {}  # file -> cut the connection after this many body bytes (once)
        self.unknown: list[str] = []
        self.requests: list[str] = []  # "METHOD /path" of every request, in order
        self._sha: dict[Path, str] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_HEAD(self):
                hub._handle(self, head=True)

            def do_GET(self):
                hub._handle(self, head=False)

            def do_POST(self):
                hub._handle(self, head=False, post=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo: str, name: str, path: Path, sha256: str = "") -> None:
        """Serve ``path`` as ``repo``/``name``; ``sha256`` spares hashing a large file inside a request."""
        self.repos.setdefault(repo, {})[name] = Path(path)
        if sha256:
            self._sha[Path(path)] = sha256

    def sha256(self, path: Path) -> str:
        path = Path(path)
        if path not in self._sha:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            self._sha[path] = h.hexdigest()
        return self._sha[path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ routing
    def _json(self, h, obj, status=200):
        body = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("X-Repo-Commit", COMMIT)
        h.end_headers()
        h.wfile.write(body)

    def _error(self, h, status, msg, head=False):
        body = json.dumps({"error": msg}).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("X-Error-Code", {401: "GatedRepo", 403: "GatedRepo", 404: "RepoNotFound"}.get(status, ""))
        h.send_header("X-Error-Message", msg)
        h.send_header("Content-Length", "0" if head else str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _entries(self, repo):
        return [{"type": "file", "path": n, "size": p.stat().st_size, "oid": COMMIT,
                 "lfs": {"oid": self.sha256(p), "size": p.stat().st_size, "pointerSize": 134}}
                for n, p in self.repos[repo].items()]

    def _handle(self, h, head=False, post=False):
        path = unquote(urlparse(h.path).path)
        self.requests.append(f"{h.command} {path}")
        if post:
            n = int(h.headers.get("Content-Length") or 0)
            h.rfile.read(n)
        m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?/?$", path)
        if m:
            repo = m.group(1)
            if repo in self.gated:
                return self._error(h, 401, "Access to this model is restricted", head)
            if repo not in self.repos:
                return self._error(h, 404, "Repository not found", head)
            return self._json(h, {"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                                  "siblings": [{"rfilename": n} for n in self.repos[repo]]})
        m = re.match(r"^/api/models/([^/]+/[^/]+)/(paths-info|tree)/[^/]+", path)
        if m and m.group(1) in self.repos:
            return self._json(h, self._entries(m.group(1)))
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            repo, _rev, name = m.groups()
            if repo in self.gated:
                return self._error(h, 401, "Access to this model is restricted", head)
            f = self.repos.get(repo, {}).get(name)
            if f is None:
                h.send_response(404)
                h.send_header("X-Error-Code", "EntryNotFound" if repo in self.repos else "RepoNotFound")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            return self._file(h, repo, name, f, head)
        self.unknown.append(f"{h.command} {h.path}")
        return self._error(h, 404, "unknown endpoint", head)

    def _file(self, h, repo, name, f: Path, head: bool):
        size = f.stat().st_size
        sha = self.sha_override.get(name) or self.sha256(f)
        start, end, status = 0, size - 1, 200
        rng = h.headers.get("Range")
        if rng:
            mm = re.match(r"bytes=(\d+)-(\d*)", rng)
            start = int(mm.group(1))
            end = min(int(mm.group(2)) if mm.group(2) else size - 1, size - 1)
            status = 206
        n = max(0, end - start + 1)
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(n))
        h.send_header("Accept-Ranges", "bytes")
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("ETag", f'"{sha}"')
        h.send_header("X-Linked-Etag", f'"{sha}"')
        h.send_header("X-Linked-Size", str(size))
        h.end_headers()
        if head:
            return
        cut = self.fail_after.pop(name, None)
        sent = 0
        with open(f, "rb") as fh:
            fh.seek(start)
            while sent < n:
                block = fh.read(min(1 << 16, n - sent))
                if cut is not None and sent + len(block) > cut:
                    block = block[: max(0, cut - sent)]
                    h.wfile.write(block)
                    sent += len(block)
                    self.served[name] = self.served.get(name, 0) + len(block)
                    h.close_connection = True
                    h.wfile.flush()
                    h.connection.shutdown(2)
                    return
                h.wfile.write(block)
                sent += len(block)
        self.served[name] = self.served.get(name, 0) + sent
