"""A stand-in Hugging Face Hub on 127.0.0.1 for tests (no network is reachable here).

It answers ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` from an in-memory dict with
what ``huggingface_hub`` 2.4 reads (``file_download.get_hf_file_metadata`` / ``http_get``):

- ``X-Repo-Commit``: required; without it the client refuses the response.
- ``ETag``: required; it names the cached blob. We send the sha256 like the Hub does for LFS files.
- ``Content-Length``: the expected size; the client compares it with the bytes received.
- ``X-Linked-Etag`` / ``X-Linked-Size``: sent on the LFS-style redirect (``redirect=True``), where the
  Hub answers 302 to a CDN host. The client does not follow a redirect to another host during the
  HEAD; it takes these headers from the 302 and then GETs the ``Location``. We use "localhost" as
  the "CDN" host so that it differs from the 127.0.0.1 endpoint.
- ``X-Error-Code``: ``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound`` on 404, which the
  client maps to its typed errors (a bare 404 would read as "Hub unreachable").
- ``Range: bytes=N-``: sent only when resuming after a dropped connection; answered with 206.

Files are served without ``X-Xet-Hash`` so the client uses plain HTTP, never Xet.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest

_RESOLVE = re.compile(r"^/(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")


class StandInHub:
    """``hub.add(repo_id, filename, data) -> revision``; ``hub.endpoint`` for HF_ENDPOINT."""

    def __init__(self, *, redirect: bool = False, hub_headers: bool = True):
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.pages: dict[str, tuple[str, bytes, int | None]] = {}  # path -> (type, body, length): web pages
        self.redirect = redirect
        self.hub_headers = hub_headers  # False: a plain file server (a wrong HF_ENDPOINT)
        self.requests: list[tuple[str, str]] = []  # (method, path), in arrival order
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # --- content ---
    def add(self, repo_id: str, filename: str, data: bytes, revision: str | None = None) -> str:
        revision = revision or secrets.token_hex(20)  # a 40-hex "commit"
        self.files[(repo_id, revision, filename)] = data
        return revision

    def page(self, path: str, body: bytes, content_type: str = "text/html; charset=utf-8",
             claimed_length: int | None = None) -> str:
        """Serve ``body`` at ``path`` as a plain web page; returns its URL. ``claimed_length``: send
        that Content-Length instead (more than the body: a connection dropped mid-file)."""
        self.pages[path] = (content_type, body, claimed_length)
        return self.url(path)

    @property
    def endpoint(self) -> str:
        assert self.port is not None, "start() the hub first"
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.endpoint + path

    def count(self, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, _ in self.requests if method is None or m == method)

    def methods(self) -> Counter:
        with self._lock:
            return Counter(m for m, _ in self.requests)

    # --- lifecycle ---
    def start(self, port: int = 0) -> "StandInHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port: later connections are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> "StandInHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    hub: StandInHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = urlsplit(self.path).path
        with self.hub._lock:
            self.hub.requests.append((self.command, path))

        if path in self.hub.pages:
            content_type, data, claimed = self.hub.pages[path]
            if claimed is not None:
                self.close_connection = True  # the client sees the end of the stream, not a hang
                return self._send_file(data, body, extra={"Content-Type": content_type,
                                                          "Content-Length": str(claimed)})
            return self._send_file(data, body, extra={"Content-Type": content_type})

        cdn = _CDN.match(path)
        if cdn:  # the "CDN" side of an LFS redirect: content by hash, no Hub headers
            data = next((d for d in self.hub.files.values() if hashlib.sha256(d).hexdigest() == cdn["sha"]), None)
            if data is None:
                return self._error(404, None, "blob not found", body)
            return self._send_file(data, body, extra={})

        m = _RESOLVE.match(path)
        if not m:
            return self._error(404, "RepoNotFound", "not a resolve URL", body)
        repo, rev, filename = unquote(m["repo"]), unquote(m["rev"]), unquote(m["file"])
        if not any(r == repo for r, _, _ in self.hub.files):
            return self._error(404, "RepoNotFound", f"repository {repo} not found", body)
        if not any(r == repo and v == rev for r, v, _ in self.hub.files):
            return self._error(404, "RevisionNotFound", f"revision {rev} not found", body)
        data = self.hub.files.get((repo, rev, filename))
        if data is None:
            return self._error(404, "EntryNotFound", f"{filename} not found", body, commit=rev)

        sha = hashlib.sha256(data).hexdigest()
        if self.hub.redirect:
            # LFS files: 302 to a CDN on another host; metadata rides on the 302 itself.
            host = f"http://localhost:{self.hub.port}"
            self.send_response(302)
            self.send_header("Location", f"{host}/cdn/{sha}")
            self.send_header("X-Repo-Commit", rev)
            self.send_header("ETag", '"pointer-etag"')
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_file(data, body, extra={"X-Repo-Commit": rev, "ETag": f'"{sha}"'} if self.hub.hub_headers else {})

    def _send_file(self, data: bytes, body: bool, extra: dict[str, str]) -> None:
        start, status = 0, 200
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if rng and body:
            start = int(rng[1])
            end = int(rng[2]) if rng[2] else len(data) - 1
            status = 206
            extra = {**extra, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
            data = data[start:end + 1]
        self.send_response(status)
        extra = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                 "Content-Length": str(len(data)), **extra}
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, code: str | None, message: str, body: bool, commit: str | None = None) -> None:
        payload = ('{"error": "%s"}' % message).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)


@pytest.fixture
def hub():
    """A running stand-in Hub; stopped at the end of the test (``hub.stop()`` earlier is fine)."""
    server = StandInHub().start()
    try:
        yield server
    finally:
        server.stop()


# --- helpers shared by the weights tests ---------------------------------------------------

@pytest.fixture
def weights_env(tmp_path, monkeypatch):
    """Isolate every cache and setting the weights code reads from the environment."""
    from vpcli.weights import hashing

    for var in ("HF_HUB_OFFLINE", "VPCLI_MANIFEST", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME",
                "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path / "vpcli_cache"))
    # huggingface_hub fetches a telemetry registry from its import-time endpoint (the real Hub)
    # while building the user agent; nothing here may leave the machine.
    import huggingface_hub.constants as hf_constants
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    # The tests describe their own entries: start from an empty bundled manifest.
    from vpcli.weights import manifest
    empty = tmp_path / "bundled_manifest.yaml"
    empty.write_text("version: 1\nweights: []\n")
    monkeypatch.setattr(manifest, "BUNDLED_MANIFEST", empty)
    hashing.clear_memory()
    yield tmp_path
    hashing.clear_memory()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(name: str, source: dict, data: bytes | None = None, *, sha: str | None = None, **fields) -> dict:
    """A valid manifest entry (as YAML data) for ``source``; ``sha`` defaults to sha256(data)."""
    return {"name": name, "task": "predictor", "arch": "slamp", "config": {"hidden": 8}, "source": source,
            "sha256": sha or sha256(data), "license": "MIT", "trained_on": "unit-test bytes",
            "metrics": {}, **fields}


def hub_entry(hub: StandInHub, name: str, data: bytes, *, repo_id: str = "vpcli/test-weights",
              filename: str | None = None, **fields) -> dict:
    """Put ``data`` on the stand-in Hub and return a manifest entry pinned to it."""
    filename = filename or f"{name}.safetensors"
    revision = hub.add(repo_id, filename, data)
    return entry(name, {"hub": {"repo_id": repo_id, "revision": revision, "filename": filename}}, data, **fields)


def write_manifest(path, entries: list[dict], version: int = 1):
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"version": version, "weights": entries}, sort_keys=False))
    return path
