"""A small stand-in for the Hugging Face Hub on 127.0.0.1, standard library only.

It speaks the part of the HTTP API that huggingface_hub uses for create_repo, create_branch and
upload_folder (preupload answers "lfs" for *.safetensors and *.gguf, uploaded through the LFS batch API, and
"regular" for the rest, which arrives base64 in the commit's NDJSON body), and for
downloads (resolve/, model info, tree listings), enough for from_pretrained. Also a server that accepts
connections and never answers, for timeout tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

REPO = r"(?P<repo>[^/]+/[^/]+)"


class HubState:
    """Repos -> branches -> {path: bytes}; plus what was asked, for assertions."""

    def __init__(self, token: str | None):
        self.token = token
        self.repos: dict[str, dict] = {}
        self.commits: list[dict] = []
        self.lfs: dict[str, bytes] = {}  # sha256 -> content, uploaded before the commit names it
        self.seen_auth: set[str] = set()
        self.unknown: list[str] = []
        self.lock = threading.Lock()

    def files(self, repo: str, revision: str = "main") -> dict[str, bytes]:
        return self.repos[repo]["branches"][revision]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    # --- plumbing -------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # streamed uploads
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                chunk = self.rfile.read(size + 2)[:size]  # each chunk ends with CRLF
                if size == 0:
                    return data
                data += chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload=None, headers: dict | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        self.state.seen_auth.add(auth)
        if self.state.token and auth != f"Bearer {self.state.token}":
            self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            return False
        return True

    def _route(self, routes) -> None:
        path = unquote(urlparse(self.path).path)
        for pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match:
                with self.state.lock:
                    return handler(**match.groupdict())
        self.state.unknown.append(f"{self.command} {self.path}")
        self._error(404, "EntryNotFound", f"no route for {self.command} {path}")

    # --- verbs ----------------------------------------------------------------------------------
    def do_POST(self) -> None:
        self._route(
            [
                (r"/api/repos/create", self.create_repo),
                (r"/api/validate-yaml", lambda: self._body() and self._send(200, {"errors": [], "warnings": []})),
                (rf"/api/models/{REPO}/branch/(?P<branch>.+)", self.create_branch),
                (rf"/api/models/{REPO}/preupload/(?P<rev>.+)", self.preupload),
                (rf"/api/models/{REPO}/commit/(?P<rev>.+)", self.commit),
                (rf"/{REPO}\.git/info/lfs/objects/batch", self.lfs_batch),
                (r"/lfs-verify", self.lfs_verify),
            ]
        )

    def do_PUT(self) -> None:
        self._route([(r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self.lfs_upload)])

    def do_GET(self) -> None:
        self._route(
            [
                (r"/api/agent-harnesses", lambda: self._send(200, {"standardEnvVars": [], "harnesses": {}})),
                (rf"/api/models/{REPO}/revision/(?P<rev>[^/]+)", self.model_info),
                (rf"/api/models/{REPO}", lambda repo: self.model_info(repo, "main")),
                (rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", self.tree),
                (rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<name>.+)", self.resolve),
            ]
        )

    do_HEAD = do_GET

    # --- write API ------------------------------------------------------------------------------
    def create_repo(self) -> None:
        body = json.loads(self._body() or b"{}")
        if not self._authorized():
            return
        repo = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        url = f"http://{self.headers['Host']}/{repo}"
        if repo in self.state.repos:
            return self._send(409, {"error": "You already created this model repo", "url": url})
        self.state.repos[repo] = {
            "private": body.get("visibility") == "private" or body.get("private"),
            "branches": {"main": {}},
            "sha": {"main": "0" * 40},
            "snapshots": {},
        }
        self._send(200, {"url": url, "name": repo})

    def create_branch(self, repo: str, branch: str) -> None:
        self._body()
        if not self._authorized():
            return
        if repo not in self.state.repos:
            return self._error(404, "RepoNotFound", "Repository not found")
        branches = self.state.repos[repo]["branches"]
        if branch in branches:
            return self._error(409, "BranchExists", "Reference already exists")
        branches[branch] = dict(branches["main"])
        self.state.repos[repo]["sha"][branch] = self.state.repos[repo]["sha"]["main"]
        self._send(200, {})

    def preupload(self, repo: str, rev: str) -> None:
        body = json.loads(self._body())
        if not self._authorized():
            return
        # Weights go through the LFS protocol, as on the Hub; everything else inline in the commit.
        files = [
            {
                "path": f["path"],
                "uploadMode": "lfs" if f["path"].endswith((".safetensors", ".gguf")) else "regular",
                "shouldIgnore": False,
            }
            for f in body["files"]
        ]
        self._send(200, {"files": files, "commitOid": self.state.repos[repo]["sha"].get(rev, "0" * 40)})

    def commit(self, repo: str, rev: str) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not self._authorized():
            return
        if repo not in self.state.repos or rev not in self.state.repos[repo]["branches"]:
            return self._error(404, "RevisionNotFound", f"{repo}@{rev} not found")
        added = {}
        for line in lines:
            if line["key"] == "file":
                added[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] == "lfsFile":
                if line["value"]["oid"] not in self.state.lfs:
                    return self._error(400, "BadRequest", f"LFS object of {line['value']['path']} was never uploaded")
                added[line["value"]["path"]] = self.state.lfs[line["value"]["oid"]]
            elif line["key"] != "header":
                return self._error(400, "BadRequest", f"unsupported commit entry {line['key']}")
        self.state.repos[repo]["branches"][rev].update(added)
        oid = hashlib.sha1(json.dumps(sorted(added)).encode() + str(len(self.state.commits)).encode()).hexdigest()
        self.state.repos[repo]["sha"][rev] = oid
        self.state.repos[repo]["snapshots"][oid] = dict(self.state.repos[repo]["branches"][rev])
        self.state.commits.append({"repo": repo, "revision": rev, "files": sorted(added)})
        host = self.headers["Host"]
        self._send(200, {"commitUrl": f"http://{host}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None})

    def lfs_batch(self, repo: str) -> None:
        body = json.loads(self._body())
        if not self._authorized():
            return
        host = f"http://{self.headers['Host']}"
        objects = [
            {
                "oid": o["oid"],
                "size": o["size"],
                "authenticated": True,
                "actions": {
                    "upload": {"href": f"{host}/lfs-upload/{o['oid']}"},
                    "verify": {"href": f"{host}/lfs-verify"},
                },
            }
            for o in body["objects"]
        ]
        self._send(200, {"transfer": "basic", "objects": objects})

    def lfs_upload(self, oid: str) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "BadRequest", "content does not match its sha256")
        self.state.lfs[oid] = data
        self._send(200, {})

    def lfs_verify(self) -> None:
        body = json.loads(self._body())
        if not self._authorized():
            return
        known = body["oid"] in self.state.lfs and len(self.state.lfs[body["oid"]]) == body["size"]
        self._send(200, {}) if known else self._error(404, "EntryNotFound", "LFS object not found")

    # --- read API -------------------------------------------------------------------------------
    def _branch(self, repo: str, rev: str) -> dict | None:
        """A branch's files, or a commit's (clients resolve by the sha they were told)."""
        known = self.state.repos.get(repo, {})
        found = known.get("branches", {}).get(rev, known.get("snapshots", {}).get(rev))
        if found is None:
            self._error(404, "RepoNotFound" if repo not in self.state.repos else "RevisionNotFound", "not found")
        return found

    def model_info(self, repo: str, rev: str) -> None:
        files = self._branch(repo, rev)
        if files is not None:
            sha = self.state.repos[repo]["sha"].get(rev, rev)
            siblings = [{"rfilename": name} for name in sorted(files)]
            self._send(
                200,
                {
                    "id": repo,
                    "modelId": repo,
                    "sha": sha,
                    "private": False,
                    "siblings": siblings,
                    "tags": [],
                    "downloads": 0,
                    "likes": 0,
                },
            )

    def tree(self, repo: str, rev: str, sub: str | None = None) -> None:
        files = self._branch(repo, rev)
        if files is None:
            return
        prefix = f"{sub.rstrip('/')}/" if sub else ""
        entries = [
            {"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
            for n, b in sorted(files.items())
            if n.startswith(prefix)
        ]
        if sub and not entries:
            return self._error(404, "EntryNotFound", f"{sub} not found")
        self._send(200, entries)

    def resolve(self, repo: str, rev: str, name: str) -> None:
        files = self._branch(repo, rev)
        if files is None:
            return
        if name not in files:
            return self._error(404, "EntryNotFound", f"{name} not found")
        data = files[name]
        headers = {
            "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
            "X-Repo-Commit": self.state.repos[repo]["sha"].get(rev, rev),
        }
        self._send(200, headers=headers, raw=data)


def start_hub(token: str | None = None) -> tuple[ThreadingHTTPServer, HubState]:
    state = HubState(token)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state


class SilentServer:
    """Accepts TCP connections and never sends a byte: a Hub that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.held.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        for conn in self.held:
            conn.close()
        self.sock.close()
