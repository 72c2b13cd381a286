"""A stand-in for the Hugging Face Hub API on 127.0.0.1 for tests: only the endpoints huggingface_hub 2.4 calls.

Which requests, read from huggingface_hub 2.4 (hf_api.py, _commit_api.py, _upload_pipeline.py, _snapshot_download.py,
file_download.py):

    HfApi.create_repo
        POST /api/repos/create                         {"name", "organization", "visibility"?} -> {"url"}
    HfApi.upload_folder (with hf_xet installed through _upload_pipeline, without it through create_commit; both
    send the same three requests when every file is "regular")
        POST /api/validate-yaml                        the README.md metadata, checked before anything is hashed
        POST /api/models/{repo}/preupload/{revision}   -> {"files": [{"path", "uploadMode", "shouldIgnore"}]}
        POST /api/models/{repo}/commit/{revision}      ndjson: a header line, then one "file" line per file with
                                                       its content in base64 -> {"commitOid", "commitUrl"}
    snapshot_download (then hf_hub_download per file)
        GET  /api/models/{repo}/revision/{revision}    repo_info -> {"id", "sha", "siblings", ...}
        GET  /api/models/{repo}/tree/{commit}          ?recursive=True -> [{"type": "file", "path", "size", "oid"}]
        HEAD /{repo}/resolve/{commit}/{path}           X-Repo-Commit, ETag, Content-Length (no X-Xet-Hash: plain HTTP)
        GET  /{repo}/resolve/{commit}/{path}           the bytes

The stub answers "regular" to every preupload question, so files travel base64-encoded inside the commit and
neither the LFS batch API nor Xet storage is involved (the Hub itself does this for small text files; it is the
one upload path that needs no second server). A commit line of any other kind ("lfsFile") is refused with 400.

Every request is recorded in `requests` (method, path, whether it was authorised), unknown ones included (they get
404), so a test can assert exactly what reached the "Hub", or that nothing did. The server runs in a daemon thread,
is closed by `close()` / the `with` block, and closes itself after `max_seconds` in any case.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def blob_oid(content: bytes) -> str:
    """The git blob id the Hub reports as a file's oid/ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    authorized: bool


@dataclass
class StubRepo:
    repo_id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)  # {"oid", "message", "paths"}, oldest first

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"]

    def commit(self, message: str, files: dict[str, bytes], deleted: list[str] = ()) -> str:
        for path in deleted:
            self.files.pop(path, None)
        self.files.update(files)
        digest = hashlib.sha1(f"{len(self.commits)}:{message}".encode())
        for path in sorted(self.files):
            digest.update(path.encode() + blob_oid(self.files[path]).encode())
        oid = digest.hexdigest()
        self.commits.append({"oid": oid, "message": message, "paths": sorted(files)})
        return oid


class HubStub:
    """`with HubStub() as hub:` serves on `hub.url` until the block ends (or `max_seconds` pass)."""

    def __init__(self, token: str = "hf_stub_write_token", user: str = "stub-user", max_seconds: float = 300.0):
        self.token, self.user, self.max_seconds = token, user, max_seconds
        self.requests: list[Recorded] = []
        self.repos: dict[str, StubRepo] = {}
        self._lock = threading.Lock()
        self.url = ""  # http://127.0.0.1:<port> once started
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    def start(self) -> HubStub:
        stub = self

        class Handler(_Handler):
            hub = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self._server.server_address[1]
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="hub-stub", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.max_seconds, self.close)
        self._timer.daemon = True
        self._timer.start()
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()

    def __enter__(self) -> HubStub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def record(self, entry: Recorded) -> None:
        with self._lock:
            self.requests.append(entry)


_REPO_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit|revision|tree)/(?P<rest>.+)$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")


class _Handler(BaseHTTPRequestHandler):
    hub: HubStub
    protocol_version = "HTTP/1.1"  # keep-alive; every response below carries Content-Length

    def log_message(self, *args) -> None:  # quiet test output
        pass

    # ---- plumbing ----

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload=None, *, body: bytes | None = None, headers: dict | None = None,
              head: bool = False) -> None:
        if body is None:
            body = json.dumps(payload if payload is not None else {}).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None, head: bool = False) -> None:
        self._send(status, {"error": message}, headers={"X-Error-Code": code} if code else None, head=head)

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        path, query = unquote(split.path), parse_qs(split.query)
        authorized = self.headers.get("Authorization") == f"Bearer {self.hub.token}"
        body = self._body() if method in ("POST", "PUT") else b""
        self.hub.record(Recorded(method, path, query, authorized))
        try:
            self._route(method, path, query, body, authorized)
        except Exception as err:  # a bug in the stub must show up in the test, not hang the client
            self._error(500, f"hub stub error: {type(err).__name__}: {err}")

    do_GET = lambda self: self._handle("GET")  # noqa: E731
    do_HEAD = lambda self: self._handle("HEAD")  # noqa: E731
    do_POST = lambda self: self._handle("POST")  # noqa: E731
    do_PUT = lambda self: self._handle("PUT")  # noqa: E731
    do_DELETE = lambda self: self._handle("DELETE")  # noqa: E731

    # ---- endpoints ----

    def _route(self, method: str, path: str, query: dict, body: bytes, authorized: bool) -> None:
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body), authorized)
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        match = _REPO_API.match(path)
        if match:
            repo = self._readable_repo(match["repo"], authorized, head=False)
            if repo is None:
                return
            op = match["op"]
            if method == "POST" and op == "preupload":
                return self._preupload(repo, json.loads(body), authorized)
            if method == "POST" and op == "commit":
                return self._commit(repo, body, authorized)
            if method == "GET" and op == "revision":
                return self._repo_info(repo, match["rest"])
            if method == "GET" and op == "tree":
                return self._tree(repo, match["rest"], query)
        match = _RESOLVE.match(path)
        if match and method in ("GET", "HEAD"):
            return self._resolve(match["repo"], match["revision"], match["path"], authorized, head=method == "HEAD")
        self._error(404, f"hub stub: no such endpoint {method} {path}")

    def _create_repo(self, payload: dict, authorized: bool) -> None:
        if not authorized:
            return self._error(401, "Invalid username or password.")
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload['name']}"
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.repos:  # create_repo(exist_ok=True) reads the url of the existing repo from this
            return self._send(409, {"error": "You already created this model repo", "url": url})
        repo = StubRepo(repo_id, private=payload.get("visibility") == "private")
        repo.commit("initial commit", {".gitattributes": GITATTRIBUTES})
        self.hub.repos[repo_id] = repo
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict) -> None:
        content = payload.get("content", "")
        if content.startswith("---"):
            try:
                yaml.safe_load(content[3:].split("\n---", 1)[0])
            except yaml.YAMLError as err:
                return self._send(400, {"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []})
        self._send(200, {"errors": [], "warnings": []})

    def _readable_repo(self, repo_id: str, authorized: bool, head: bool) -> StubRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            self._error(404, "Repository not found", code="RepoNotFound", head=head)
            return None
        return repo

    def _preupload(self, repo: StubRepo, payload: dict, authorized: bool) -> None:
        if not authorized:
            return self._error(401, "Invalid credentials in Authorization header")
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": blob_oid(repo.files[f["path"]]) if f["path"] in repo.files else None}
            for f in payload["files"]
        ]
        self._send(200, {"files": files, "commitOid": repo.sha})

    def _commit(self, repo: StubRepo, body: bytes, authorized: bool) -> None:
        if not authorized:
            return self._error(401, "Invalid credentials in Authorization header")
        message, files, deleted = "", {}, []
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value["summary"]
            elif key == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deleted.append(value["path"])
            else:
                return self._error(400, f"hub stub accepts regular (base64) files only, got a {key!r} line")
        oid = repo.commit(message, files, deleted)
        self._send(200, {"success": True, "commitOid": oid, "commitUrl": f"{self.hub.url}/{repo.repo_id}/commit/{oid}",
                         "hookOutput": ""})

    def _resolve_revision(self, repo: StubRepo, revision: str) -> str | None:
        if revision == "main":
            return repo.sha
        return revision if any(c["oid"] == revision for c in repo.commits) else None

    def _repo_info(self, repo: StubRepo, revision: str) -> None:
        sha = self._resolve_revision(repo, revision)
        if sha is None:
            return self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        if sha != repo.sha:
            return self._error(400, "hub stub serves the latest commit only")
        self._send(200, {
            "id": repo.repo_id, "modelId": repo.repo_id, "sha": sha, "private": repo.private,
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(repo.files)],
        })

    def _tree(self, repo: StubRepo, rest: str, query: dict) -> None:
        revision, _, prefix = rest.partition("/")
        if self._resolve_revision(repo, revision) != repo.sha:
            return self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        base = f"{prefix.rstrip('/')}/" if prefix else ""
        entries, folders = [], set()
        for path in sorted(repo.files):
            if not path.startswith(base):
                continue
            inner = path[len(base):]
            if "/" in inner and not recursive:
                folders.add(base + inner.split("/", 1)[0])
                continue
            content = repo.files[path]
            entries.append({"type": "file", "path": path, "size": len(content), "oid": blob_oid(content)})
        entries += [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in folders]
        self._send(200, entries)

    def _resolve(self, repo_id: str, revision: str, path: str, authorized: bool, head: bool) -> None:
        repo = self._readable_repo(repo_id, authorized, head=head)
        if repo is None:
            return
        sha = self._resolve_revision(repo, revision)
        if sha != repo.sha:
            return self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound", head=head)
        if path not in repo.files:
            return self._send(404, {"error": "Entry not found"}, head=head,
                              headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
        content = repo.files[path]
        self._send(200, body=content, head=head, headers={
            "Content-Type": "application/octet-stream", "X-Repo-Commit": sha, "ETag": f'"{blob_oid(content)}"',
        })
